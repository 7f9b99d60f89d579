"""A run killed after its first subtask resumes from SQLite in a new process and finishes once."""

import json
import os
import signal
import subprocess
import sys

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver

from memento.graph import Context, build_graph
from memento.nodes.resources import case_bank_for

pytestmark = pytest.mark.slow


def _memento(*args: str) -> list[str]:
    return [sys.executable, "-m", "memento.cli.main", *args]


def test_killed_run_resumes_and_writes_exactly_one_case(tmp_path, numbers_file):
    data = str(tmp_path / "data")
    task = "What is the total of the numbers in the attached file?"
    proc = subprocess.Popen(
        _memento("run", task, "--file", numbers_file, "--ground-truth", "49", "--thread-id", "killme",
                 "--data-dir", data),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            # The second subtask has started: the first one and the replan are checkpointed.
            if line.strip().startswith("subtask 1/1 (cycle 2)"):
                os.killpg(proc.pid, signal.SIGKILL)  # the process and its MCP servers
                break
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    assert not any(line.startswith("answer:") for line in seen)

    ctx = Context(data_dir=data)
    assert case_bank_for(ctx).count() == 0
    with SqliteSaver.from_conn_string(str(ctx.checkpoint_path())) as saver:
        saved = build_graph(saver).get_state({"configurable": {"thread_id": "killme"}})
    assert saved.next == ("execute_subtask",)
    assert [r["subtask"] for r in saved.values["results"]] == [
        f"Read the attached file {numbers_file} and report its contents."]

    done = subprocess.run(_memento("resume", "killme", "--data-dir", data, "--json"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming thread killme at execute_subtask" in done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["final_answer"] == "49" and outcome["reward"] == 1.0
    assert len(outcome["results"]) == 2  # the first subtask was not run again
    assert outcome["results"][0]["subtask"].startswith("Read the attached file")

    again = subprocess.run(_memento("resume", "killme", "--data-dir", data, "--json"),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already finished" in again.stderr
    cases = case_bank_for(ctx).list()
    assert len(cases) == 1 and cases[0].thread_id == "killme"
