"""Human approval: the policy (which points ask), and the request and decision shapes.

The shapes are LangChain's human-in-the-loop convention (`HumanInTheLoopMiddleware`), so agent
UIs that render its interrupts render ours. An interrupt's value is a request:

    {"action_requests": [{"name": ..., "args": {...}, "description": ...}, ...],
     "review_configs": [{"action_name": ..., "allowed_decisions": ["approve", "edit", "reject"]}, ...],
     "point": "plan" | "tools" | "case",          # ours: which approval point asks
     "error": "..."}                               # ours: why the last answer was refused, if it was

and the resume value (`Command(resume=...)`) is a response, one decision per action request, in
order:

    {"decisions": [{"type": "approve"}
                   | {"type": "edit", "edited_action": {"name": ..., "args": {...}}}
                   | {"type": "reject", "message": "why"}, ...]}

At the case point the convention is extended, not replaced: the action is `write_case`, an edit's
args may set `reward` (0 to 1) and `final_answer`, and reject discards the case.

Everything here is pure (no LangGraph), so settings and answers can be checked anywhere: in a
node, and in the command line before it resumes a thread.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Literal

from typing_extensions import NotRequired, TypedDict

DecisionType = Literal["approve", "edit", "reject"]
DECISIONS: tuple[str, ...] = ("approve", "edit", "reject")
DECISION_KEYS = {"approve": {"type"}, "reject": {"type", "message"}, "edit": {"type", "edited_action"}}
POINTS = ("plan", "tools", "case")
PLAN_ACTION = "plan"
CASE_ACTION = "write_case"
POLICY_KEYS = ("plan", "replans", "case", "tools")


class Action(TypedDict):
    name: str
    args: dict[str, Any]


class ActionRequest(TypedDict):
    name: str
    args: dict[str, Any]
    description: NotRequired[str]


class ReviewConfig(TypedDict):
    action_name: str
    allowed_decisions: list[DecisionType]
    args_schema: NotRequired[dict[str, Any]]


class ApprovalRequest(TypedDict):
    """An interrupt's value: LangChain's `HITLRequest` plus `point` and, after a refused answer, `error`."""

    action_requests: list[ActionRequest]
    review_configs: list[ReviewConfig]
    point: str
    error: NotRequired[str]


class PolicyError(ValueError):
    """The `approval` setting is malformed."""


@dataclass(frozen=True)
class ApprovalPolicy:
    """Which approval points ask. All off by default.

    `tools` maps a tool name or glob pattern (`run_*`) to the decisions allowed for its calls;
    given as a list, every decision is allowed."""

    plan: bool = False
    replans: bool = False
    case: bool = False
    tools: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.plan or self.replans or self.case or bool(self.tools)

    def tool_decisions(self, name: str) -> tuple[str, ...] | None:
        """The decisions allowed for a call of `name`, or None if its calls need no approval.
        The first pattern (in the order given) that matches decides."""
        for pattern, allowed in self.tools.items():
            if fnmatch.fnmatchcase(name, pattern):
                return allowed
        return None

    def asks_for_plan(self, cycle: int) -> bool:
        return self.plan if cycle <= 1 else self.replans


def parse_policy(value: Any) -> ApprovalPolicy:
    """An `ApprovalPolicy` from the `approval` setting (a dict, as in the `[approval]` table)."""
    if value is None:
        return ApprovalPolicy()
    if isinstance(value, ApprovalPolicy):
        return value
    if not isinstance(value, dict):
        raise PolicyError(f"setting approval must be a table of {', '.join(POLICY_KEYS)}, got {type(value).__name__}")
    unknown = sorted(set(value) - set(POLICY_KEYS))
    if unknown:
        raise PolicyError(f"unknown approval key(s) {', '.join(unknown)}: use {', '.join(POLICY_KEYS)}")
    flags = {}
    for key in ("plan", "replans", "case"):
        flag = value.get(key, False)
        if not isinstance(flag, bool):
            raise PolicyError(f"approval.{key} must be true or false, got {flag!r}")
        flags[key] = flag
    return ApprovalPolicy(**flags, tools=_tool_rules(value.get("tools", [])))


def _tool_rules(value: Any) -> dict[str, tuple[str, ...]]:
    if isinstance(value, (list, tuple)):
        value = {pattern: list(DECISIONS) for pattern in value}
    if not isinstance(value, dict):
        raise PolicyError("approval.tools must be a list of tool names or patterns, or a table pattern = [decisions]")
    rules: dict[str, tuple[str, ...]] = {}
    for pattern, allowed in value.items():
        if not isinstance(pattern, str) or not pattern.strip():
            raise PolicyError(f"approval.tools: a tool name or pattern must be a non-empty string, got {pattern!r}")
        if (not isinstance(allowed, (list, tuple)) or not allowed
                or any(d not in DECISIONS for d in allowed)):
            raise PolicyError(f"approval.tools[{pattern!r}] must be a non-empty list of {', '.join(DECISIONS)}, "
                              f"got {allowed!r}")
        rules[pattern] = tuple(dict.fromkeys(allowed))
    return rules


def run_policy(state: dict[str, Any], ctx: Any) -> ApprovalPolicy:
    """The policy a run started with (kept in its state), else the settings' (`ctx.policy`)."""
    kept = state.get("run_approval")
    return parse_policy(kept) if kept is not None else ctx.policy


def policy_dict(policy: ApprovalPolicy) -> dict[str, Any]:
    return {"plan": policy.plan, "replans": policy.replans, "case": policy.case,
            "tools": {p: list(d) for p, d in policy.tools.items()}}


# -- requests ----------------------------------------------------------------------------

def plan_request(subtasks: list[str], cycle: int, task: str, max_subtasks: int, reasoning: str = "",
                 last_cycle: bool = False) -> ApprovalRequest:
    """The plan's question. A rejection sends the planner back with the feedback, which takes a
    planning cycle: on the last cycle there is none left, so the plan may be approved or edited only."""
    why = f" The planner's reasoning: {reasoning}" if reasoning else ""
    allowed = ["approve", "edit"] if last_cycle else list(DECISIONS)
    what = ("This is the last planning cycle: approve it or edit it (reject is not available, no cycle is "
            "left to plan again)." if last_cycle else
            "Approve to run it, edit to replace the subtasks, or reject with feedback for the planner.")
    return {
        "point": "plan",
        "action_requests": [{
            "name": PLAN_ACTION, "args": {"subtasks": list(subtasks), "cycle": cycle, "task": task},
            "description": f"Plan for cycle {cycle}: {len(subtasks)} subtask(s), run in order.{why} {what}",
        }],
        "review_configs": [{
            "action_name": PLAN_ACTION, "allowed_decisions": allowed,
            "args_schema": {"type": "object", "required": ["subtasks"], "properties": {"subtasks": {
                "type": "array", "minItems": 1, "maxItems": max_subtasks, "items": {"type": "string", "minLength": 1}}}},
        }],
    }


def tools_request(calls: list[dict[str, Any]], allowed: list[tuple[str, ...]]) -> ApprovalRequest:
    return {
        "point": "tools",
        "action_requests": [{
            "name": call["name"], "args": dict(call.get("args") or {}),
            "description": f"Tool call {call['name']} requested by the executor. Approve to run it, edit its "
                           "arguments, or reject with a reason (the executor sees it as the tool's error).",
        } for call in calls],
        "review_configs": [{"action_name": call["name"], "allowed_decisions": list(decisions)}
                           for call, decisions in zip(calls, allowed)],
    }


def case_request(task: str, answer: str, score: dict[str, Any]) -> ApprovalRequest:
    return {
        "point": "case",
        "action_requests": [{
            "name": CASE_ACTION,
            "args": {"task": task, "final_answer": answer, "reward": score["reward"], "score": score},
            "description": f"Store this run in the case bank with reward {score['reward']:g} "
                           f"(scored by {score['scored_by']}). Approve to store it, edit to change its reward "
                           "(0 to 1) or final answer first, or reject to discard it: no case is written and the "
                           "retriever learns nothing from this run.",
        }],
        "review_configs": [{
            "action_name": CASE_ACTION, "allowed_decisions": list(DECISIONS),
            "args_schema": {"type": "object", "properties": {
                "reward": {"type": "number", "minimum": 0, "maximum": 1},
                "final_answer": {"type": "string", "minLength": 1}}},
        }],
    }


# -- answers -----------------------------------------------------------------------------

class AnswerError(ValueError):
    """A resume value that does not answer the request; the message says what was wrong."""


def check_response(request: ApprovalRequest, response: Any, max_subtasks: int = 8) -> list[dict[str, Any]]:
    """The decisions of a well-formed `response` to `request`, normalised; else `AnswerError`."""
    actions = request["action_requests"]
    if isinstance(response, list):
        response = {"decisions": response}
    if not isinstance(response, dict) or not isinstance(response.get("decisions"), list):
        raise AnswerError('the answer must be {"decisions": [...]}, one decision per action request')
    if set(response) != {"decisions"}:
        extra = sorted(str(k)[:40] for k in set(response) - {"decisions"})
        raise AnswerError(f'the answer holds {", ".join(extra)} beside "decisions": give only {{"decisions": [...]}}')
    decisions = response["decisions"]
    if len(decisions) != len(actions):
        raise AnswerError(f"{len(decisions)} decision(s) given for {len(actions)} action request(s): give one each, "
                          "in order")
    checked = []
    for n, (decision, action, config) in enumerate(zip(decisions, actions, request["review_configs"]), 1):
        where = f"decision {n} ({action['name']})"
        kind = decision.get("type") if isinstance(decision, dict) else None
        if kind not in DECISIONS:
            raise AnswerError(f"{where}: unknown decision type {str(kind)[:40]!r}: use approve, edit or reject")
        extra = sorted(str(k)[:40] for k in set(decision) - DECISION_KEYS[kind])
        if extra:
            raise AnswerError(f"{where}: a {kind} takes only {', '.join(sorted(DECISION_KEYS[kind]))}, not "
                              f"{', '.join(extra)}")
        if kind not in config["allowed_decisions"]:
            raise AnswerError(f"{where}: {kind} is not allowed here; allowed: {', '.join(config['allowed_decisions'])}")
        if kind == "approve":
            checked.append({"type": "approve"})
        elif kind == "reject":
            message = decision.get("message", "")
            if not isinstance(message, str):
                raise AnswerError(f"{where}: a reject's message must be a string")
            checked.append({"type": "reject", "message": message.strip()})
        else:
            edited = decision.get("edited_action")
            if not isinstance(edited, dict) or not isinstance(edited.get("args"), dict):
                raise AnswerError(f'{where}: an edit needs "edited_action": {{"name": ..., "args": {{...}}}}')
            if edited.get("name", action["name"]) != action["name"]:
                raise AnswerError(f"{where}: an edit may change the arguments, not the action "
                                  f"({edited.get('name')!r} given for {action['name']!r})")
            if set(edited) - {"name", "args"}:
                raise AnswerError(f'{where}: "edited_action" takes only name and args')
            args = _check_edit(request["point"], edited["args"], where, max_subtasks, action, config)
            checked.append({"type": "edit", "edited_action": {"name": action["name"], "args": args}})
    return checked


def _check_edit(point: str, args: dict[str, Any], where: str, max_subtasks: int,
                action: dict[str, Any] | None = None, config: dict[str, Any] | None = None) -> dict[str, Any]:
    if point == "plan":
        subtasks = args.get("subtasks")
        if (not isinstance(subtasks, list) or not subtasks
                or any(not isinstance(s, str) or not s.strip() for s in subtasks)):
            raise AnswerError(f"{where}: an edited plan needs args.subtasks, a non-empty list of non-empty strings")
        if len(subtasks) > max_subtasks:
            raise AnswerError(f"{where}: the edited plan has {len(subtasks)} subtasks; at most {max_subtasks} are "
                              "allowed (setting max_subtasks)")
        return {"subtasks": [s.strip() for s in subtasks]}
    if point == "case":
        unknown = sorted(set(args) - {"reward", "final_answer", "task", "score"})
        if unknown:
            raise AnswerError(f"{where}: a case edit may set reward and final_answer, not {', '.join(unknown)}")
        if "reward" not in args and "final_answer" not in args:
            raise AnswerError(f"{where}: a case edit must set reward or final_answer (or both); to store the case "
                              "as it is, approve it")
        out: dict[str, Any] = {}
        if "reward" in args:
            reward = args["reward"]
            if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not 0 <= reward <= 1:
                raise AnswerError(f"{where}: reward must be a number from 0 to 1, got {reward!r}")
            out["reward"] = float(reward)
        if "final_answer" in args:
            answer = args["final_answer"]
            if not isinstance(answer, str) or not answer.strip():
                raise AnswerError(f"{where}: final_answer must be a non-empty string")
            out["final_answer"] = answer.strip()
        return out
    # A tool call: the edit is the call's whole new arguments, and must keep what the tool needs.
    required = ((config or {}).get("args_schema") or {}).get("required") or []
    missing = [k for k in required if k not in args]
    if missing:
        raise AnswerError(f"{where}: the edited call lacks {', '.join(missing)}, which the tool needs")
    if not args and (action or {}).get("args"):
        raise AnswerError(f"{where}: an edit with no arguments would drop all of the call's: give the edited "
                          "arguments, or approve or reject the call")
    return dict(args)


def answer_all(request: ApprovalRequest, kind: str, message: str = "") -> dict[str, Any]:
    """The same decision for every action of `request` (the command line's --approve and --reject)."""
    return {"decisions": [{"type": kind, **({"message": message} if kind == "reject" else {})}
                          for _ in request["action_requests"]]}


def edit_response(request: ApprovalRequest, content: Any) -> dict[str, Any]:
    """A response from an edit file: either a whole response (`{"decisions": [...]}`), or, for a
    request with one action, that action's edited args (`{"subtasks": [...]}`, `{"reward": 0.5}`)."""
    if isinstance(content, dict) and "decisions" in content:
        return content
    if len(request["action_requests"]) != 1:
        raise AnswerError(f"this request has {len(request['action_requests'])} actions: the edit file must hold "
                          '{"decisions": [...]}, one decision each')
    if not isinstance(content, dict):
        raise AnswerError("the edit file must hold a JSON object: the edited arguments, or {\"decisions\": [...]}")
    name = request["action_requests"][0]["name"]
    return {"decisions": [{"type": "edit", "edited_action": {"name": name, "args": content}}]}
