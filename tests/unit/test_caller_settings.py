"""Operator and caller settings of the served graph, and who may call the server."""

import pytest
from langgraph_sdk import Auth

from memento.graph.auth import LOCAL_DEVELOPER, identify
from memento.graph.caller import CALLER_FIELDS, caller_settings, check_operator_settings
from memento.graph.context import FIELD_NAMES, ConfigError, Context
from memento.graph.tokens import accepted_tokens

OPERATOR = Context(data_dir="/srv/memento", top_k=4, caller_limits={"top_k": 8},
                   model_profiles={"small": {"planner_model": "ollama:qwen2.5:7b", "temperature": 0.2}})


def test_a_caller_sets_its_own_fields_over_the_operators():
    ctx = caller_settings(OPERATOR, {"top_k": 8, "retrieval_mode": "parametric", "approval": {"plan": True},
                                     "model_profile": "small", "temperature": 0.0})
    assert ctx.top_k == 8 and ctx.retrieval_mode == "parametric" and ctx.policy.plan
    assert ctx.planner_model == "ollama:qwen2.5:7b" and ctx.temperature == 0.0  # the caller's beside the profile
    assert ctx.data_dir == "/srv/memento" and ctx.mcp_servers == OPERATOR.mcp_servers
    assert caller_settings(OPERATOR, None) is OPERATOR and caller_settings(OPERATOR, {}) is OPERATOR


@pytest.mark.parametrize("field", sorted(FIELD_NAMES - CALLER_FIELDS))
def test_every_operator_field_is_refused_naming_it(field):
    with pytest.raises(ConfigError, match=f"'{field}' is set by the server's operator") as refused:
        caller_settings(OPERATOR, {field: getattr(OPERATOR, field)})
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("context,problem", [
    ({"top_k": 9}, "at most 8"),
    ({"top_k": True}, "whole number"),
    ({"top_k": -1}, "whole number"),
    ({"top_k": 2.5}, "whole number"),
    ({"max_cycles": 0}, "whole number >= 1"),
    ({"max_cycles": 7}, "at most 6"),
    ({"retrieval_temperature": float("nan")}, "finite"),
    ({"retrieval_temperature": float("inf")}, "finite"),
    ({"temperature": "0.5"}, "finite"),
    ({"temperature": 2.5}, "at most 2"),
    ({"write_cases": "yes"}, "true or false"),
    ({"retrieval_mode": "everything"}, "must be one of"),
    ({"model_profile": "large"}, "not one of this server's profiles"),
    ({"model_profile": 3}, "profile name"),
    ({"approval": {"plan": "yes"}}, "approval"),
    ({"approval": {"tools": ["run_*"], "surprise": True}}, "approval"),
    ({"x" * 500: 1}, "unknown run context field"),
    ("top_k=4", "must be an object"),
])
def test_bad_caller_values_are_refused_in_one_line(context, problem):
    with pytest.raises(ConfigError, match=problem) as refused:
        caller_settings(OPERATOR, context)
    assert "\n" not in str(refused.value) and len(str(refused.value)) < 400


def test_operator_bounds_and_profiles_are_checked_once():
    check_operator_settings(OPERATOR)
    for bad, problem in (({"caller_limits": {"data_dir": 1}}, "not a limit"),
                         ({"caller_limits": {"top_k": float("nan")}}, "finite"),
                         ({"model_profiles": {"p": {"mcp_servers": {}}}}, "cannot"),
                         ({"model_profiles": {"p": {"planner_model": "nonsense-provider:x"}}}, None)):
        with pytest.raises(ConfigError, match=problem):
            check_operator_settings(Context(**bad))


def test_tokens_identities_and_the_unauthenticated_cases():
    tokens = accepted_tokens("alice:secret-a, secret-b ,,")
    assert tokens["secret-a"] == "alice" and tokens["secret-b"].startswith("caller-")
    assert "secret-b" not in tokens["secret-b"]  # a token never becomes an identity
    env = {"MEMENTO_API_TOKEN": "alice:secret-a,secret-b"}
    assert identify("Bearer secret-a", "10.0.0.9", env) == "alice"
    assert identify("bearer  secret-b", "10.0.0.9", env) == tokens["secret-b"]
    for header in (None, "", "Bearer", "Basic secret-a", "Bearer secret-c", "secret-a"):
        with pytest.raises(Auth.exceptions.HTTPException) as refused:
            identify(header, "127.0.0.1", env)
        assert refused.value.status_code == 401
    dev = {"LANGSMITH_LANGGRAPH_API_VARIANT": "local_dev"}
    assert identify(None, "127.0.0.1", dev) == identify(None, "::1", dev) == LOCAL_DEVELOPER
    for host, environ in (("192.168.1.4", dev), ("127.0.0.1", {}), (None, dev), ("not-an-ip", dev)):
        with pytest.raises(Auth.exceptions.HTTPException, match="MEMENTO_API_TOKEN"):
            identify(None, host, environ)
    assert identify(None, "192.168.1.4", {"MEMENTO_ALLOW_UNAUTHENTICATED": "1"}) == "anonymous"


def test_a_caller_adds_approval_points_and_keeps_the_operators():
    strict = Context(approval={"plan": True, "tools": {"run_*": ["approve", "reject"]}})
    ctx = caller_settings(strict, {"approval": {"plan": False, "case": True, "tools": ["write_file"]}})
    assert ctx.policy.plan and ctx.policy.case  # the operator's plan point stays, the caller's case point is added
    assert set(ctx.policy.tools) == {"run_*", "write_file"} and ctx.policy.tools["run_*"] == ("approve", "reject")
    relaxed = caller_settings(strict, {"approval": {"tools": {"run_*": ["approve", "edit", "reject"]}}})
    assert relaxed.policy.tools["run_*"] == ("approve", "reject")  # a caller cannot widen what the operator allows
