"""What a caller of the LangGraph server may choose for one run, within the operator's bounds.

The operator of a server (its config file and environment) decides everything that touches the
machine or a secret: data folders, model endpoints and the variables their keys come from, MCP
servers and their commands, sandbox options, encoder and retriever paths, and the upper bounds of
the limits a caller may set. A caller (Studio, the SDK, `RemoteGraph`) chooses only the fields of
`CallerContext`, in a run's `context`: how cases are retrieved and how many, the approval points,
the limits of its own run up to the operator's bounds, and a model among the operator's named
profiles. Any other field is refused, with a one-line error that names it, before anything runs.

Library users who build their own graph (`build_graph()`) are the operator of their process and
pass a full `Context`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field
from typing_extensions import TypedDict

from memento.graph.context import DEFAULT_CALLER_LIMITS, FIELD_NAMES, RETRIEVAL_MODES, ConfigError, Context

# The fields of a model profile: a profile is a partial set of these, named by the operator.
PROFILE_FIELDS = frozenset({
    f"{role}_{what}" for role in ("planner", "executor", "judge") for what in ("model", "base_url", "api_key_env")
} | {"planner_output_method", "judge_output_method", "structured_output_method", "executor_tool_protocol",
     "planner_max_tokens", "executor_max_tokens", "judge_max_tokens", "temperature"})

class ApprovalChoice(TypedDict, total=False):
    """Where the run stops for a human's approval."""

    plan: Annotated[bool, Field(description="Ask before the first plan runs.")]
    replans: Annotated[bool, Field(description="Ask before each new plan runs.")]
    case: Annotated[bool, Field(description="Ask before the run's case is stored.")]
    tools: Annotated[list[str] | dict[str, list[str]], Field(
        description="Tools whose calls need approval: names or glob patterns, or a table pattern -> allowed "
                    "decisions (approve, edit, reject, respond).")]


class CallerContext(TypedDict, total=False):
    """What a caller may set for one run; every field is optional and defaults to the server's."""

    retrieval_mode: Annotated[Literal["similarity", "parametric", "utility", "none"], Field(
        description="How past cases are chosen: similarity, parametric (the learned Q-retriever), utility "
                    "(MemRL's per-case utility) or none.")]
    top_k: Annotated[int, Field(ge=0, description="How many past cases the planner sees (at most the server's "
                                                    "bound).")]
    retrieval_temperature: Annotated[float, Field(ge=0, description="Exploration in parametric retrieval; 0 shows "
                                                                      "the K highest Q.")]
    distinct_source_tasks: Annotated[bool, Field(description="At most one case per source task.")]
    write_cases: Annotated[bool, Field(description="Store this run as a case.")]
    online_learning: Annotated[bool, Field(description="Let this run's reward train the retriever.")]
    max_cycles: Annotated[int, Field(ge=1, description="Planning cycles before the planner must answer.")]
    max_subtasks: Annotated[int, Field(ge=1, description="Most subtasks one plan may hold.")]
    max_tool_calls: Annotated[int, Field(ge=1, description="Most tool calls for one subtask.")]
    max_planner_retries: Annotated[int, Field(ge=0, description="Retries after a malformed planner reply.")]
    temperature: Annotated[float, Field(ge=0, description="Sampling temperature of the models.")]
    model_profile: Annotated[str, Field(description="One of the model profiles the server's operator defined; "
                                                    "empty: the server's models.")]
    approval: Annotated[ApprovalChoice, Field(description="Human approval points for this run.")]


CALLER_FIELDS = frozenset(CallerContext.__annotations__)
_INTS = {"top_k": 0, "max_cycles": 1, "max_subtasks": 1, "max_tool_calls": 1, "max_planner_retries": 0}
_FLOATS = ("retrieval_temperature", "temperature")
_BOOLS = ("distinct_source_tasks", "write_cases", "online_learning")


MAX_APPROVAL_TOOLS = 100  # patterns a caller's approval policy may name, each at most 200 characters
MAX_FILES = 32  # files a caller may attach to one run


def check_caller_files(operator: Context, files: Any) -> None:
    """A caller's attached files: each must be a regular file below one of the operator's
    `input_roots`, reached from the root without following any link (so a link planted there
    leads nowhere); ConfigError naming the first that is not."""
    if not files:
        return
    if not isinstance(files, list) or len(files) > MAX_FILES or not all(isinstance(f, str) and f for f in files):
        raise ConfigError(f"'files' must be a list of at most {MAX_FILES} paths")
    from memento.mcp_servers.workspace import PathRefused, locate, open_beneath

    roots = [Path(r).expanduser() for r in operator.input_roots if Path(r).expanduser().is_dir()]
    for path in files:
        shown = path[:200]
        if not roots:
            raise ConfigError(f"attached file {shown!r} refused: this server takes no files from callers (its "
                              "operator sets input_roots for that)")
        try:
            root, parts = locate(roots, path)
            os.close(open_beneath(root, parts, os.O_RDONLY | os.O_NONBLOCK, shown=shown))
        except (PathRefused, OSError) as exc:
            raise ConfigError(f"attached file {shown!r} refused: it must be a regular file inside "
                              f"{' or '.join(map(str, roots))}, reached without links ({exc})") from None


def check_operator_settings(ctx: Context) -> None:
    """The operator's `caller_limits` and `model_profiles`, checked once (ConfigError names the key)."""
    for key, bound in ctx.caller_limits.items():
        if key not in DEFAULT_CALLER_LIMITS:
            raise ConfigError(f"caller_limits.{key} is not a limit a caller can set: use some of "
                              f"{', '.join(sorted(DEFAULT_CALLER_LIMITS))}")
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound) or bound < 0:
            raise ConfigError(f"caller_limits.{key} must be a finite number >= 0, got {bound!r}")
    for name, profile in ctx.model_profiles.items():
        if not isinstance(profile, dict):
            raise ConfigError(f"model_profiles.{name} must be a table of model settings")
        unknown = sorted(set(profile) - PROFILE_FIELDS)
        if unknown:
            raise ConfigError(f"model_profiles.{name} sets {', '.join(unknown)}, which a profile cannot: use some "
                              f"of {', '.join(sorted(PROFILE_FIELDS))}")
        from memento.llm.factory import check_model_settings

        try:
            check_model_settings(ctx.replace(**profile))  # each profile must make models that can be built
        except ConfigError as exc:
            raise ConfigError(f"model_profiles.{name}: {exc}") from None


def caller_settings(operator: Context, caller: Any) -> Context:
    """The operator's settings with what the caller chose for this run, every value checked."""
    if caller is None or caller == {}:
        return operator
    if not isinstance(caller, dict):
        raise ConfigError(f"a run's context must be an object of caller settings, got {type(caller).__name__}")
    allowed = ", ".join(sorted(CALLER_FIELDS))
    for key in caller:
        if key in CALLER_FIELDS:
            continue
        if key in FIELD_NAMES:
            raise ConfigError(f"run context field {key!r} is set by the server's operator, not by a caller: remove it "
                              f"(a caller may set {allowed})")
        raise ConfigError(f"unknown run context field {str(key)[:80]!r}: a caller may set {allowed}")
    bounds = {**DEFAULT_CALLER_LIMITS, **operator.caller_limits}
    changes: dict[str, Any] = {}
    profile: dict[str, Any] = {}
    for key, value in caller.items():
        if key in _INTS:
            if isinstance(value, bool) or not isinstance(value, int) or value < _INTS[key]:
                raise ConfigError(f"run context field {key!r} must be a whole number >= {_INTS[key]}, got {value!r}")
        elif key in _FLOATS:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"run context field {key!r} must be a finite number >= 0, got {value!r}")
        elif key in _BOOLS:
            if not isinstance(value, bool):
                raise ConfigError(f"run context field {key!r} must be true or false, got {value!r}")
        elif key == "retrieval_mode":
            if value not in RETRIEVAL_MODES:
                raise ConfigError(f"run context field 'retrieval_mode' must be one of {', '.join(RETRIEVAL_MODES)}")
        elif key == "approval":
            tools = value.get("tools") if isinstance(value, dict) else None
            if tools is not None and (len(tools) > MAX_APPROVAL_TOOLS
                                      or any(len(str(t)) > 200 for t in tools)):
                raise ConfigError(f"run context field 'approval' names at most {MAX_APPROVAL_TOOLS} tool patterns of "
                                  "at most 200 characters")
        elif key == "model_profile":
            if not isinstance(value, str):
                raise ConfigError("run context field 'model_profile' must be a profile name")
            if value and value not in operator.model_profiles:
                names = ", ".join(sorted(operator.model_profiles)) or "none are defined"
                raise ConfigError(f"model profile {value[:80]!r} is not one of this server's profiles ({names})")
            profile = dict(operator.model_profiles.get(value, {}))
            continue
        if key in bounds and value > bounds[key]:
            raise ConfigError(f"run context field {key!r} is {value!r}; this server allows at most {bounds[key]:g}")
        changes[key] = value
    if "approval" in changes:  # a caller adds approval points; the operator's stay
        changes["approval"] = _at_least(operator, changes["approval"])
    # The profile first, so that what the caller set beside it (a temperature) wins.
    return operator.replace(**{**profile, **changes})  # Context checks the whole again (approval included)


def _at_least(operator: Context, asked: Any) -> Any:
    """The caller's approval policy joined with the operator's: every point either asks for is asked."""
    from memento.graph.approval import PolicyError, parse_policy, policy_dict

    try:
        mine = policy_dict(parse_policy(asked))
    except PolicyError as exc:
        raise ConfigError(f"run context field 'approval': {exc}") from None
    theirs = policy_dict(operator.policy)
    tools = {**mine["tools"], **theirs["tools"]}  # where both name a pattern, the operator's decisions hold
    return {"plan": mine["plan"] or theirs["plan"], "replans": mine["replans"] or theirs["replans"],
            "case": mine["case"] or theirs["case"], "tools": tools}
