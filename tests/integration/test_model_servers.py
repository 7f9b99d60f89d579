"""Conformance: a real run through `memento run --json` against servers that behave as llama.cpp,
JSON-mode-only servers, small models with fenced JSON, cut replies, text tool calls, slow and
failing servers do. Each run ends with the right answer or one clear line naming the setting to
change, never "unexpected", and `--json` prints exactly one object."""

from __future__ import annotations

import json

import pytest

from memento.cli.main import main
from memento.llm.structured import forget_learned, learned_method
from tests.fixtures.model_servers import ModelServer

TASK = "What is 6 * 7?"


@pytest.fixture(autouse=True)
def fresh_memory():
    from memento.mcp_servers.client import SESSIONS

    forget_learned()  # each server is new: nothing learned about an earlier one on the same port
    yield
    forget_learned()
    SESSIONS.close_all()  # the tool servers wrote to this test's captured stderr


def run_json(capsys, tmp_path, url, *extra):
    roles = [f"--{role}-{key}" for role in ("planner", "executor", "judge") for key in ("model", "base-url")]
    values = ["openai-compatible:local-model", url] * 3
    argv = ["run", TASK, "--json", "--data-dir", str(tmp_path / "data"),
            *[x for pair in zip(roles, values) for x in pair], *extra]
    code = main(argv)
    out = capsys.readouterr()
    objects = [json.loads(line) for line in _objects(out.out)]
    assert len(objects) == 1, out.out  # exactly one JSON object on stdout, whatever happened
    assert "unexpected" not in out.err and "unexpected" not in out.out
    return code, objects[0], out.err


def _objects(text):
    decoder, at, found = json.JSONDecoder(), 0, []
    while at < len(text.strip()):
        while text[at].isspace():
            at += 1
        value, at = decoder.raw_decode(text, at)
        found.append(json.dumps(value))
        if at >= len(text) or not text[at:].strip():
            break
    return found


@pytest.mark.parametrize("persona,method", [
    ("openai", "function_calling"),
    ("llamacpp", "tool_required"),       # the named tool choice is ignored: fall back
    ("fenced", "function_calling"),      # prose around a fenced block: read leniently
    ("cut", "function_calling"),         # a reply cut at the token limit is retried
    ("text-tools", "function_calling"),  # the executor's calls come as text
    ("cut-call", "function_calling"),    # a tool call cut at the limit, calls without ids
    ("think", "function_calling"),       # reasoning before the answer, with a draft in it
])
def test_a_run_finishes_with_the_right_answer(capsys, tmp_path, persona, method):
    with ModelServer(persona) as server:
        code, outcome, err = run_json(capsys, tmp_path, server.url)
        assert code == 0 and outcome["status"] == "done", (outcome, err)
        assert outcome["final_answer"] == "42"
        assert outcome["results"][0]["tool_calls"][0]["name"] == "calculate"
        assert learned_method(server.url, "local-model") == method
        planner_calls = [r for r in server.requests if "planner of a Memento" in json.dumps(r)]
        assert all(r.get("max_completion_tokens") == 2048 and r.get("max_tokens") == 2048 for r in planner_calls)
    if persona == "llamacpp":
        assert "structured output: tool_required" in err  # the progress says which method is in use
    if persona == "think":
        assert outcome["reward"] == 1  # the judge's final verdict, not the draft in its thinking
        assert len(outcome["results"][0]["tool_calls"]) == 1  # the call drafted while thinking did not run


def test_a_json_mode_only_server_names_the_executor_setting_then_works_with_it(capsys, tmp_path):
    with ModelServer("json-mode-only") as server:
        code, outcome, err = run_json(capsys, tmp_path, server.url)
        assert code == 1 and outcome["status"] == "error"
        assert "HTTP 400" in outcome["error"] and "executor_tool_protocol" in outcome["error"]
        assert learned_method(server.url, "local-model") == "json_mode"  # the planner found its way
        code, outcome, _ = run_json(capsys, tmp_path, server.url, "--executor-tool-protocol", "text")
        assert code == 0 and outcome["final_answer"] == "42"


def test_a_fixed_method_the_server_refuses_names_the_setting(capsys, tmp_path):
    with ModelServer("json-mode-only") as server:
        code, outcome, _ = run_json(capsys, tmp_path, server.url, "--planner-output-method", "json_schema")
    assert code == 1 and "refused structured output" in outcome["error"] and "planner_output_method" in outcome["error"]


def test_a_slow_server_is_a_timeout_not_an_unreachable_one(capsys, tmp_path):
    settings = tmp_path / "slow.toml"
    settings.write_text("[models]\nrequest_timeout = 1.0\nmodel_retries = 0\n")
    with ModelServer("slow", delay=2.5) as server:
        code, outcome, _ = run_json(capsys, tmp_path, server.url, "--config", str(settings))
    assert code == 1 and outcome["status"] == "error"
    assert "did not answer within request_timeout=1 s" in outcome["error"] and "cannot reach" not in outcome["error"]


def test_a_failing_server_is_one_clear_line(capsys, tmp_path):
    settings = tmp_path / "once.toml"
    settings.write_text("[models]\nmodel_retries = 0\n")
    with ModelServer("error") as server:
        code, outcome, err = run_json(capsys, tmp_path, server.url, "--config", str(settings))
    assert code == 1 and outcome["status"] == "error"
    assert "answered HTTP 500" in outcome["error"] and "\n" not in outcome["error"]
    assert err.count("memento: error:") == 1


@pytest.mark.parametrize("persona,words", [
    ("html", ["not an OpenAI chat completion", "planner_base_url", "/v1"]),
    ("overflow", ["does not fit the model's context", "llama-server -c", "planner_max_tokens"]),
])
def test_a_misconfigured_endpoint_is_one_line_naming_what_to_change(capsys, tmp_path, persona, words):
    settings = tmp_path / "once.toml"
    settings.write_text("[models]\nmodel_retries = 0\n")
    with ModelServer(persona) as server:
        code, outcome, _ = run_json(capsys, tmp_path, server.url, "--config", str(settings))
        assert len(server.requests) == 1  # an overflow is not a structured-output refusal: no fallbacks
    assert code == 1 and outcome["status"] == "error" and "\n" not in outcome["error"]
    assert all(word in outcome["error"] for word in words), outcome["error"]
