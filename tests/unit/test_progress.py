"""The terminal progress: a spinner fills silent stretches on a terminal, never in a pipe."""

import io
import time

from memento.cli.render import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_silent_stretch_shows_what_is_going_on_and_is_cleared_before_the_next_line():
    out = Terminal()
    progress = Progress(out)
    progress.custom({"event": "node_started", "node": "retrieve_cases"})
    progress.custom({"event": "phase", "text": "loading the encoder all-MiniLM-L6-v2"})
    time.sleep(0.9)
    progress.custom({"event": "cases_retrieved", "count": 0, "successes": 0})
    progress.close()
    text = out.getvalue()
    assert "loading the encoder all-MiniLM-L6-v2 (" in text
    assert text.index("\r\033[K  cases: 0 retrieved") > text.index("loading the encoder")  # erased, then the line


def test_no_spinner_in_a_pipe():
    out = io.StringIO()
    progress = Progress(out)
    progress.custom({"event": "node_started", "node": "retrieve_cases"})
    progress.custom({"event": "phase", "text": "loading the encoder all-MiniLM-L6-v2"})
    time.sleep(0.7)
    progress.close()
    assert "\r" not in out.getvalue() and out.getvalue() == "  loading the encoder all-MiniLM-L6-v2 ...\n"
