"""The approval policy and the checks on answers (LangChain's human-in-the-loop shapes)."""

import pytest

from memento.graph import ConfigError, Context
from memento.graph.approval import (
    AnswerError,
    answer_all,
    case_request,
    check_response,
    edit_response,
    parse_policy,
    plan_request,
    tools_request,
)


def test_policy_is_off_by_default_and_parses_lists_tables_and_globs():
    assert not Context().policy.active
    policy = parse_policy({"plan": True, "tools": ["run_*", "write_file"]})
    assert policy.asks_for_plan(1) and not policy.asks_for_plan(2)
    assert policy.tool_decisions("run_python") == ("approve", "edit", "reject")
    assert policy.tool_decisions("read_document") is None
    table = parse_policy({"tools": {"run_*": ["approve", "reject"], "*": ["approve"]}})
    assert table.tool_decisions("run_shell") == ("approve", "reject")  # the first matching pattern decides
    assert table.tool_decisions("calculate") == ("approve",)


@pytest.mark.parametrize(("approval", "words"), [
    ({"plan": 1}, "approval.plan must be true or false"),
    ({"tool": ["x"]}, "unknown approval key(s) tool"),
    ({"tools": "run_*"}, "approval.tools must be a list"),
    ({"tools": {"run_*": ["approve", "maybe"]}}, "approval.tools['run_*']"),
    ({"tools": [""]}, "non-empty string"),
    ("yes", "must be a table"),
])
def test_a_bad_policy_is_a_config_error_naming_the_key(approval, words):
    with pytest.raises(ConfigError, match="approval") as raised:
        Context(approval=approval)
    assert words in str(raised.value)


def test_context_round_trips_the_policy_as_plain_data():
    ctx = Context(approval={"case": True, "tools": ["calc*"]})
    data = ctx.to_dict()["approval"]
    assert data == {"plan": False, "replans": False, "case": True, "tools": {"calc*": ["approve", "edit", "reject"]}}
    assert Context(approval=data).policy == ctx.policy


def test_requests_follow_the_hitl_shape():
    for request in (plan_request(["a", "b"], 1, "task", 8), tools_request([{"name": "t", "args": {"x": 1}}],
                                                                         [("approve",)]),
                    case_request("task", "answer", {"reward": 1.0, "scored_by": "judge:x"})):
        assert set(request) >= {"action_requests", "review_configs", "point"}
        for action, config in zip(request["action_requests"], request["review_configs"]):
            assert set(action) == {"name", "args", "description"} and action["name"] == config["action_name"]
            assert set(config["allowed_decisions"]) <= {"approve", "edit", "reject"}


def test_checked_answers_are_normalised_and_bad_ones_name_the_problem():
    plan = plan_request(["a"], 1, "task", 2)
    assert check_response(plan, answer_all(plan, "approve")) == [{"type": "approve"}]
    assert check_response(plan, answer_all(plan, "reject", " too long ")) == [{"type": "reject", "message": "too long"}]
    assert check_response(plan, edit_response(plan, {"subtasks": [" x "]}))[0]["edited_action"]["args"] == {
        "subtasks": ["x"]}
    with pytest.raises(AnswerError, match="at most 2"):
        check_response(plan, edit_response(plan, {"subtasks": ["x", "y", "z"]}), max_subtasks=2)
    with pytest.raises(AnswerError, match="2 decision"):
        check_response(plan, {"decisions": [{"type": "approve"}] * 2})
    with pytest.raises(AnswerError, match='"decisions"'):
        check_response(plan, "yes")
    tools = tools_request([{"name": "a", "args": {}}, {"name": "b", "args": {}}], [("approve", "reject")] * 2)
    with pytest.raises(AnswerError, match="decision 2 \\(b\\): edit is not allowed"):
        check_response(tools, {"decisions": [{"type": "approve"},
                                             {"type": "edit", "edited_action": {"name": "b", "args": {}}}]})
    with pytest.raises(AnswerError, match="2 actions"):
        edit_response(tools, {"x": 1})
    case = case_request("task", "answer", {"reward": 0.0, "scored_by": "judge:x"})
    assert check_response(case, edit_response(case, {"reward": 1}))[0]["edited_action"]["args"] == {"reward": 1.0}
    for bad in ({"reward": -0.1}, {"reward": "1"}, {"final_answer": " "}, {"plan": []}):
        with pytest.raises(AnswerError):
            check_response(case, edit_response(case, bad))


def test_a_decision_must_be_explicit_and_complete():
    case = case_request("task", "answer", {"reward": 1.0, "scored_by": "ground_truth"})
    for bad, why in (({}, "must set reward or final_answer"), ({"task": "x"}, "must set reward or final_answer"),
                     ({"decisions": [{"type": "edit", "edited_action": {"args": {}}}]}, "must set reward"),
                     ({"decisions": [{"type": "edit", "edited_action": {"args": {"reward": 1}, "x": 1}}]}, "only name"),
                     ({"decisions": [{"type": "approve", "edited_action": {}}]}, "takes only type"),
                     ({"decisions": [{"type": "reject", "message": "no", "reward": 0}]}, "takes only"),
                     ({"decisions": [{"type": "approve"}], "extra": 1}, "beside"),
                     ({"decisions": [{}]}, "unknown decision type"),
                     ({"decisions": [{"type": ["approve"]}]}, "unknown decision type")):
        with pytest.raises(AnswerError, match=why):
            check_response(case, edit_response(case, bad) if "decisions" not in bad else bad)
    tool = tools_request([{"name": "run_python", "args": {"code": "print(1)"}}], [("approve", "edit", "reject")])
    with pytest.raises(AnswerError, match="drop all"):
        check_response(tool, edit_response(tool, {}))
    assert check_response(tool, edit_response(tool, {"code": "print(2)"}))[0]["edited_action"]["args"] == {
        "code": "print(2)"}
