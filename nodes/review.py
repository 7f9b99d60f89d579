"""Human approval inside the graph: `ask` (an interrupt that insists on a well-formed answer)
and the `review_plan` node. The tool and case points ask from `execute_subtask` and `write_case`.

A node re-runs from its start when a thread resumes, so whatever comes before an `ask` is either
free of side effects or a LangGraph task (model and tool calls), whose result the checkpoint keeps.
"""

from __future__ import annotations

from typing import Any

from langgraph.config import get_stream_writer
from langgraph.errors import GraphInterrupt
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from memento.graph.approval import AnswerError, ApprovalRequest, check_response, plan_request
from memento.graph.context import Context, context_of
from memento.graph.state import State


def ask(request: ApprovalRequest, max_subtasks: int) -> list[dict[str, Any]]:
    """Interrupt with `request` until the answer is well formed; return its decisions, one per action.

    A malformed answer is not an error of the run: the same request is asked again, with `error`
    saying what was wrong, and nothing else happens. On a resume the node runs again and each
    earlier `interrupt` returns the answer it already got, so the loop replays to where it was."""
    while True:
        try:
            answer = interrupt(request)
        except GraphInterrupt:
            get_stream_writer()({"event": "approval_requested", "point": request["point"],
                                 "actions": [a["name"] for a in request["action_requests"]],
                                 **({"error": request["error"]} if "error" in request else {})})
            raise
        try:
            return check_response(request, answer, max_subtasks)
        except AnswerError as exc:
            request = {**request, "error": str(exc)}


def review_plan(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Ask a human about the plan before its first subtask runs: approve it, replace its subtasks,
    or reject it with feedback, which goes to the planner (`replan`) within the same cycle budget."""
    ctx = context_of(runtime)
    notes = state.get("planner_notes") or []
    request = plan_request(state["plan"], state["cycle"], state["task"], ctx.max_subtasks, notes[-1] if notes else "",
                           last_cycle=state["cycle"] >= ctx.max_cycles)
    decision = ask(request, ctx.max_subtasks)[0]
    if decision["type"] == "approve":
        return {"plan_review": False}
    plans = list(state.get("plans") or [])
    if decision["type"] == "edit":
        subtasks = decision["edited_action"]["args"]["subtasks"]
        return {"plan_review": False, "plan": subtasks, "plans": [*plans[:-1], subtasks], "next_subtask": 0,
                "planner_notes": [*notes, "the plan was edited by a human reviewer"]}
    feedback = decision["message"] or "rejected without a reason"
    cited = list(state.get("cited_cases") or [])
    return {
        # The rejected plan never ran: it leaves the history, and the cases it cited are credited
        # like those of a replaced plan.
        "plan_review": False, "plan_rejected": True, "plan": [], "plans": plans[:-1], "next_subtask": 0,
        "review_feedback": [*(state.get("review_feedback") or []), f"plan for cycle {state['cycle']}: {feedback}"],
        "cited_cases": [], "abandoned_cases": list(dict.fromkeys([*(state.get("abandoned_cases") or []), *cited])),
    }
