"""The command line: configuration errors are one clear line, and the case bank is curable."""

import json
import os
import subprocess
import sys

import pytest


def memento(*args, env=None, timeout=300, input=None):
    full_env = {k: v for k, v in os.environ.items() if not k.endswith("API_KEY")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "memento.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, input=input)


def one_line_error(done, *words):
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("memento: error: ")
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in lines[0]
    return lines[0]


def test_missing_api_key(tmp_path):
    done = memento("run", "hi", "--planner-model", "openai:gpt-4o-mini", "--data-dir", str(tmp_path))
    one_line_error(done, "OPENAI_API_KEY", "planner")
    assert done.returncode == 2


def test_unknown_model_provider(tmp_path):
    done = memento("run", "hi", "--executor-model", "anthropique:claude", "--data-dir", str(tmp_path))
    one_line_error(done, "unknown model provider 'anthropique'", "executor_model")


def test_unreadable_attached_file(tmp_path):
    done = memento("run", "sum it", "--file", str(tmp_path / "nope.txt"), "--data-dir", str(tmp_path))
    one_line_error(done, "nope.txt", "does not exist")


def test_bad_config_file(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[limits]\nmax_cycles = 0\n")
    done = memento("run", "hi", "--config", str(config), "--data-dir", str(tmp_path))
    one_line_error(done, "max_cycles")


def test_unreachable_endpoint_names_the_setting(tmp_path):
    # Port 9 on loopback: nothing listens there, so the connection is refused at once.
    done = memento("run", "What is 1 + 1?", "--planner-model", "openai-compatible:any-model",
                   "--planner-base-url", "http://127.0.0.1:9/v1", "--thread-id", "t-unreach",
                   "--data-dir", str(tmp_path))
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("memento: error:")]
    assert len(errors) == 1 and "planner_base_url" in errors[0] and "127.0.0.1:9" in errors[0]
    assert "Traceback" not in done.stderr


def test_resume_unknown_thread(tmp_path):
    one_line_error(memento("resume", "no-such-thread", "--data-dir", str(tmp_path)), "no-such-thread")


def test_run_json_then_cases_list_show_delete(tmp_path):
    data = str(tmp_path)
    done = memento("run", "What is 6 * 7?", "--ground-truth", "42", "--json", "--data-dir", data)
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["final_answer"] == "42" and outcome["simulated_roles"] == ["planner", "executor", "judge"]

    listed = json.loads(memento("cases", "list", "--json", "--data-dir", data).stdout)
    assert [c["id"] for c in listed["cases"]] == [outcome["case_id"]]
    assert listed["count"] == listed["total"] == 1 and listed["location"]
    limited = json.loads(memento("cases", "list", "--json", "--limit", "0", "--data-dir", data).stdout)
    assert limited["cases"] == [] and limited["count"] == 0 and limited["total"] == 1
    shown = json.loads(memento("cases", "show", outcome["case_id"][:8], "--json", "--data-dir", data).stdout)
    assert shown["task"] == "What is 6 * 7?" and shown["reward"] == 1.0
    text = memento("cases", "show", outcome["case_id"], "--data-dir", data).stdout
    assert "final answer: 42" in text

    deleted = json.loads(memento("cases", "delete", outcome["case_id"], "--json", "--data-dir", data).stdout)
    assert deleted == {"deleted": [outcome["case_id"]]}
    assert json.loads(memento("cases", "list", "--json", "--data-dir", data).stdout)["cases"] == []
    one_line_error(memento("cases", "show", "abc", "--data-dir", data), "no case with id 'abc'")


@pytest.mark.parametrize("command", [[], ["run"], ["resume"], ["demo"], ["cases"], ["cases", "list"],
                                     ["cases", "show"], ["cases", "delete"]])
def test_help_on_every_command(command):
    done = memento(*command, "--help", timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("usage: memento")


LIGHT = """
import json, sys
from memento.cli.main import main
code = main(sys.argv[1:])
heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'langchain_openai', 'openai'})
print(json.dumps({"exit": code, "heavy": heavy}), file=sys.stderr)
"""


@pytest.mark.parametrize("command", [["cases", "list"], ["cases", "export"], ["threads"]])
def test_commands_that_need_no_model_import_no_torch(tmp_path, command):
    done = subprocess.run([sys.executable, "-c", LIGHT, *command, "--data-dir", str(tmp_path / "data")],
                          capture_output=True, text=True, timeout=120)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report == {"exit": 0, "heavy": []}


def test_a_usage_error_under_json_is_one_object_too(capsys):
    from memento.cli.main import main

    with pytest.raises(SystemExit) as stopped:
        main(["run", "--json", "--max-cycles", "many", "What is 6 * 7?"])
    assert stopped.value.code == 2
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["status"] == "error" and "--max-cycles" in outcome["error"] and outcome["exit"] == 2
