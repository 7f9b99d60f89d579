"""A run stopped by a signal at several points resumes from SQLite in a new process and finishes
once: one answer, exactly one case."""

import json
import os
import signal
import subprocess
import sys

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver

from memento.graph import Context, build_graph
from memento.memory.resources import case_bank_for, release_case_banks

pytestmark = pytest.mark.slow
TASK = "What is the total of the numbers in the attached file?"
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -signal.SIGKILL}


def _memento(*args: str) -> list[str]:
    return [sys.executable, "-m", "memento.cli.main", *args]


def _run_until(data: str, numbers_file: str, thread: str, marker: str, sig: signal.Signals) -> list[str]:
    """Start a run and send `sig` to it (and its tool servers, as Ctrl-C in a terminal does) when
    a progress line starts with `marker`."""
    proc = subprocess.Popen(
        _memento("run", TASK, "--file", numbers_file, "--ground-truth", "49", "--thread-id", thread, "--data-dir", data),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.strip().startswith(marker):
                os.killpg(proc.pid, sig)
                break
        proc.stdout.read()
    finally:
        proc.wait(timeout=120)
        stderr = proc.stderr.read()
    assert proc.returncode == EXIT[sig], "".join(seen) + stderr
    if sig != signal.SIGKILL:
        assert f"continue with `memento resume {thread}`" in stderr
    assert not any(line.startswith("answer:") for line in seen)
    return seen


def _resume(data: str, thread: str) -> subprocess.CompletedProcess:
    return subprocess.run(_memento("resume", thread, "--data-dir", data, "--json"), capture_output=True, text=True,
                          timeout=300)


def test_killed_run_resumes_and_writes_exactly_one_case(tmp_path, numbers_file):
    data = str(tmp_path / "data")
    # The second subtask has started: the first one and the replan are checkpointed.
    _run_until(data, numbers_file, "killme", "subtask 1/1 (cycle 2)", signal.SIGKILL)

    ctx = Context(data_dir=data)
    assert case_bank_for(ctx).count() == 0
    with SqliteSaver.from_conn_string(str(ctx.checkpoint_path())) as saver:
        saved = build_graph(saver).get_state({"configurable": {"thread_id": "killme"}})
    assert saved.next == ("execute_subtask",)
    assert [r["subtask"] for r in saved.values["results"]] == [
        f"Read the attached file {numbers_file} and report its contents."]
    release_case_banks()  # the embedded bank serves one process: the resuming one opens it next

    done = _resume(data, "killme")
    assert done.returncode == 0, done.stderr
    assert "resuming thread killme at execute_subtask" in done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["final_answer"] == "49" and outcome["reward"] == 1.0
    assert len(outcome["results"]) == 2  # the first subtask was not run again
    assert outcome["results"][0]["subtask"].startswith("Read the attached file")

    release_case_banks()
    again = _resume(data, "killme")
    assert again.returncode == 0 and "already finished" in again.stderr
    cases = case_bank_for(ctx).list()
    assert len(cases) == 1 and cases[0].thread_id == "killme"


@pytest.mark.parametrize(("sig", "marker"), [
    (signal.SIGINT, "[execute_subtask]"),  # Ctrl-C after the first subtask
    (signal.SIGINT, "[replan] final answer"),  # before the case is written
    (signal.SIGTERM, "subtask 1/1 (cycle 1)"),  # in the first subtask
    (signal.SIGTERM, "[replan] final answer"),
    (signal.SIGKILL, "[retrieve_cases]"),
    (signal.SIGKILL, "[replan] final answer"),
], ids=["int-after-subtask", "int-before-case", "term-in-subtask", "term-before-case", "kill-after-retrieve",
        "kill-before-case"])
def test_a_run_stopped_by_a_signal_resumes_to_its_end_with_one_case(tmp_path, numbers_file, sig, marker):
    data = str(tmp_path / "data")
    _run_until(data, numbers_file, "stopped", marker, sig)
    done = _resume(data, "stopped")
    assert done.returncode == 0, done.stderr
    assert "already finished" not in done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["status"] == "done" and outcome["final_answer"] == "49" and outcome["reward"] == 1.0
    cases = case_bank_for(Context(data_dir=data)).list()
    assert [(c.thread_id, c.final_answer) for c in cases] == [("stopped", "49")]
