"""Approval from the command line: a run stops with exit status 3 and says how to answer; `memento
threads` shows what it asks; `memento resume` answers it in a new process."""

import json

from memento.graph import Context
from memento.memory.resources import case_bank_for
from tests.integration.test_cli import memento, one_line_error

EXIT_WAITING = 3


def test_run_waits_threads_lists_it_and_resume_answers_each_point(tmp_path):
    data = str(tmp_path / "data")
    started = memento("run", "What is 2 + 3 * 4?", "--data-dir", data, "--thread-id", "ask", "--approve-plan",
                      "--approve-tool", "calc*", "--approve-case", "--json")
    assert started.returncode == EXIT_WAITING, started.stderr
    waiting = json.loads(started.stdout)
    assert waiting["status"] == "waiting" and waiting["thread_id"] == "ask" and waiting["point"] == "plan"
    assert waiting["interrupt"]["action_requests"][0]["args"]["subtasks"] == ["Evaluate 2 + 3 * 4 with the calculator."]
    assert f"memento resume ask --data-dir {data} --approve" in waiting["commands"]

    listed = memento("threads", "--data-dir", data, "--waiting", "--json")
    assert listed.returncode == 0, listed.stderr
    body = json.loads(listed.stdout)
    assert body["count"] == 1 and body["waiting_only"] is True
    (row,) = body["threads"]
    assert row["thread_id"] == "ask" and row["status"] == "waiting" and row["task"] == "What is 2 + 3 * 4?"
    assert row["interrupt"]["point"] == "plan"

    # A wrong answer is refused before anything resumes; the run still waits at its plan.
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"subtasks": []}), encoding="utf-8")
    refused = memento("resume", "ask", "--data-dir", data, "--edit", str(bad))
    one_line_error(refused, "answer refused", "subtasks")
    assert json.loads(memento("threads", "--data-dir", data, "--json").stdout)["threads"][0]["interrupt"]["point"] == "plan"

    plan = memento("resume", "ask", "--data-dir", data, "--approve")
    assert plan.returncode == EXIT_WAITING, plan.stderr
    assert "calculate({\"expression\": \"2 + 3 * 4\"})" in plan.stdout
    edit = tmp_path / "edit.json"
    edit.write_text(json.dumps({"expression": "6 * 7"}), encoding="utf-8")
    tool = memento("resume", "ask", "--data-dir", data, "--edit", str(edit))
    assert tool.returncode == EXIT_WAITING, tool.stderr
    assert "answer: 42" in tool.stdout and "reward: 1" in tool.stdout
    assert case_bank_for(Context(data_dir=data)).count() == 0  # nothing stored before its approval
    # An empty or shapeless edit of the case is not an approval: refused, the case still waits, nothing stored.
    for content, why in (({}, "must set reward or final_answer"), ({"score": {}}, "must set reward or final_answer"),
                         ({"decisions": [{"type": "edit", "edited_action": {"args": {}}}]}, "must set reward"),
                         ({"decisions": [{"type": "approve", "reward": 1}]}, "takes only type"),
                         ({"decisions": [{"type": "approve"}], "reward": 1}, "beside")):
        edit.write_text(json.dumps(content), encoding="utf-8")
        one_line_error(memento("resume", "ask", "--data-dir", data, "--edit", str(edit)), "answer refused", why)
        listed = json.loads(memento("threads", "--data-dir", data, "--json").stdout)
        assert listed["threads"][0]["interrupt"]["point"] == "case"
    assert case_bank_for(Context(data_dir=data)).count() == 0
    case = memento("resume", "ask", "--data-dir", data, "--reject", "a test run", "--json")
    assert case.returncode == 0, case.stderr
    outcome = json.loads(case.stdout)
    assert outcome["status"] == "done" and outcome["final_answer"] == "42" and outcome["case_discarded"] is True
    assert case_bank_for(Context(data_dir=data)).count() == 0

    listed = json.loads(memento("threads", "--data-dir", data, "--json").stdout)
    assert [(r["thread_id"], r["status"]) for r in listed["threads"]] == [("ask", "done")]
    assert listed["count"] == 1 and listed["waiting_only"] is False
    again = memento("resume", "ask", "--data-dir", data, "--approve")
    one_line_error(again, "not waiting for approval")


def test_interactive_answers_at_the_terminal(tmp_path):
    data = str(tmp_path / "data")
    # approve the plan; edit the case's reward to 0.5, keeping the answer
    done = memento("run", "What is 6 * 7?", "--data-dir", data, "--approve-plan", "--approve-case", "--interactive",
                   input="a\ne\n0.5\n\n")
    assert done.returncode == 0, done.stderr
    assert "the plan for cycle 1 waits for approval" in done.stdout
    assert "the case waits for approval" in done.stdout
    (case,) = case_bank_for(Context(data_dir=data)).list()
    assert case.reward == 0.5 and case.final_answer == "42" and case.scored_by == "human"


def test_config_file_approval_table_and_bad_policy(tmp_path):
    config = tmp_path / "approval.toml"
    config.write_text('[approval]\ncase = true\n\n[approval.tools]\n"calc*" = ["approve", "reject"]\n',
                      encoding="utf-8")
    data = str(tmp_path / "data")
    done = memento("run", "What is 6 * 7?", "--data-dir", data, "--config", str(config), "--json")
    assert done.returncode == EXIT_WAITING, done.stderr
    waiting = json.loads(done.stdout)
    assert waiting["point"] == "tools"
    assert waiting["interrupt"]["review_configs"][0]["allowed_decisions"] == ["approve", "reject"]
    assert not any("--edit" in c for c in waiting["commands"])
    assert f"--config {config}" in waiting["commands"][0]

    config.write_text('[approval]\nplan = "yes"\n', encoding="utf-8")
    one_line_error(memento("run", "hi", "--data-dir", data, "--config", str(config)), "approval.plan")
    config.write_text('[approval]\nplans = true\n', encoding="utf-8")
    one_line_error(memento("run", "hi", "--data-dir", data, "--config", str(config)), "unknown approval key")


def test_a_corrupted_checkpoint_file_is_one_clear_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "checkpoints.sqlite").write_bytes(b"this is not a database" * 100)
    for args in (("run", "What is 6 * 7?"), ("resume", "some-thread"), ("threads",)):
        done = memento(*args, "--data-dir", str(data))
        line = one_line_error(done, "checkpoint file", "cannot be read as a SQLite database", "keep it")
        assert "memento resume" not in line and done.returncode == 2  # no hint that cannot work
        assert "move it aside" not in line and "delete" not in line  # no advice to throw a file away


def test_interactive_without_input_says_what_is_asked_and_waits(tmp_path):
    data = str(tmp_path / "data")
    done = memento("run", "What is 6 * 7?", "--data-dir", data, "--approve-plan", "--interactive", "--json", input="")
    assert done.returncode == EXIT_WAITING, done.stderr
    assert json.loads(done.stdout)["point"] == "plan"  # prompts went to stderr: stdout is one object


def test_hints_offer_only_answers_every_call_allows(tmp_path):
    from memento.cli.approval import answer_commands
    from memento.graph.approval import tools_request

    request = tools_request([{"name": "read_x", "args": {}}, {"name": "run_y", "args": {}}],
                            [("approve", "edit"), ("approve", "edit", "reject")])
    commands = answer_commands("t", request, [])
    assert any(c.endswith("--approve") for c in commands)
    assert not any("--reject" in c for c in commands) and any("--edit" in c for c in commands)


def test_the_demo_runs(tmp_path):
    config = tmp_path / "approval.toml"
    config.write_text("[approval]\nplan = true\ncase = true\n", encoding="utf-8")  # the demo runs unattended
    done = memento("demo", "--data-dir", str(tmp_path / "demo"), "--config", str(config))
    assert done.returncode == 0, done.stderr
    answers = [line for line in done.stdout.splitlines() if line.startswith("answer: ")]
    assert len(answers) == 7 and "Traceback" not in done.stderr
