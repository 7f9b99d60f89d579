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
    parsed, problem, answered = read_reply(AIMessage(text), JudgeVerdict)
    assert parsed is not None and parsed.correct is True and problem is None and answered


def test_json_that_does_not_fit_is_a_problem_to_retry_not_a_missing_reply():
    parsed, problem, answered = read_reply(AIMessage('{"subtasks": ["a", "b", "c"]}'), bounded_plan(2))
    assert parsed is None and "at most 2 items" in problem and answered
    parsed, problem, answered = read_reply(AIMessage("I think it is fine."), JudgeVerdict)
    assert parsed is None and "no JSON object" in problem and not answered


def test_a_cut_reply_is_a_retry():
    cut = AIMessage('{"correct": tr', response_metadata={"finish_reason": "length"})
    parsed, problem, answered = read_reply(cut, JudgeVerdict)
    assert parsed is None and "cut at the token limit" in problem and answered


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
    assert text_tool_calls(quoted, {"calculate"}, whole_reply=False)[0]["name"] == "calculate"
    as_string = '{"name": "calculate", "arguments": "{\\"expression\\": \\"1 + 1\\"}"}'
    assert text_tool_calls(as_string, {"calculate"}, whole_reply=True)[0]["args"] == {"expression": "1 + 1"}
