"""Reading structured replies leniently, and tool calls written as text."""

import pytest
from langchain_core.messages import AIMessage

from memento.llm.structured import json_objects, read_reply, text_tool_calls
from memento.nodes.schemas import JudgeVerdict, bounded_plan


@pytest.mark.parametrize("text", [
    '{"correct": true, "reason": "ok"}',
    'Sure.\n```json\n{"correct": true, "reason": "ok"}\n```\nAnything else?',
    'My verdict is {"correct": true, "reason": "a } inside a string"} as asked.',
    '```\n{"correct": true, "reason": "ok",}\n```',  # a trailing comma
])
def test_the_json_object_is_found_in_what_models_write(text):
    parsed, problem, kind = read_reply(AIMessage(text), JudgeVerdict)
    assert parsed is not None and parsed.correct is True and problem is None and kind == "parsed"


def test_json_that_does_not_fit_is_a_problem_to_retry_not_a_missing_reply():
    parsed, problem, kind = read_reply(AIMessage('{"subtasks": ["a", "b", "c"]}'), bounded_plan(2))
    assert parsed is None and "at most 2 items" in problem and kind == "invalid"
    parsed, problem, kind = read_reply(AIMessage("I think it is fine."), JudgeVerdict)
    assert parsed is None and "no JSON object" in problem and kind == "prose"  # the method did not work
    for empty in (AIMessage(""), AIMessage("", additional_kwargs={"refusal": "I can't help with that."}),
                  AIMessage("", response_metadata={"finish_reason": "content_filter"})):
        assert read_reply(empty, JudgeVerdict)[2] == "empty"  # a retry, no sign against the method


def test_a_cut_reply_is_a_retry():
    cut = AIMessage('{"correct": tr', response_metadata={"finish_reason": "length"})
    parsed, problem, kind = read_reply(cut, JudgeVerdict)
    assert parsed is None and "cut at the token limit" in problem and kind == "cut"


def test_nested_and_unbalanced_text_is_bounded():
    assert json_objects("{" * 10_000) == []
    assert json_objects('[' * 5000 + ']' * 5000) == []


def test_text_tool_calls_only_for_known_tools_and_whole_replies_under_auto():
    call = '{"tool": "calculate", "arguments": {"expression": "6 * 7"}}'
    assert text_tool_calls(call, {"calculate"}, whole_reply=True)[0]["args"] == {"expression": "6 * 7"}
    assert text_tool_calls(f"```json\n{call}\n```", {"calculate"}, whole_reply=True)
    assert text_tool_calls(call, {"read_document"}, whole_reply=True) == []  # unknown tool: not a call
    quoted = f"The executor could send {call} to compute it; the answer is 42."
    assert text_tool_calls(quoted, {"calculate"}, whole_reply=True) == []  # an answer that quotes a call
    assert text_tool_calls(quoted, {"calculate"}, whole_reply=False) == []  # ... also under the text protocol
    assert text_tool_calls(f"I will use the calculator.\n{call}", {"calculate"}, whole_reply=False)
    answer = '{"name": "calculate", "result": 42}'  # names a tool, but is an answer: no arguments
    assert text_tool_calls(answer, {"calculate"}, whole_reply=True) == []
    thinking = f"<think>maybe {call}? yes.</think>\n{call}"
    assert len(text_tool_calls(thinking, {"calculate"}, whole_reply=True)) == 1  # the draft is not run
    as_string = '{"name": "calculate", "arguments": "{\\"expression\\": \\"1 + 1\\"}"}'
    assert text_tool_calls(as_string, {"calculate"}, whole_reply=True)[0]["args"] == {"expression": "1 + 1"}


def test_reasoning_and_drafts_do_not_win_over_the_final_object():
    reply = ('<think>Draft: {"correct": false, "reason": "first look"} and a set {1, 2}</think>'
             'Format: { correct, reason. Final: {"correct": true, "reason": "checked"}')
    parsed, _, _ = read_reply(AIMessage(reply), JudgeVerdict)
    assert parsed.correct is True and parsed.reason == "checked"
    corrected = '{"correct": false, "reason": "oops"}\nWait, correction: {"correct": true, "reason": "fixed"}'
    assert read_reply(AIMessage(corrected), JudgeVerdict)[0].reason == "fixed"
    many = " ".join("{%d}" % n for n in range(40)) + ' {"correct": true, "reason": "x"}'
    assert read_reply(AIMessage(many), JudgeVerdict)[0].correct is True
    assert json_objects("</think>{\"a\": 1}") == [{"a": 1}] and json_objects("<think>{\"a\": 1}") == []
