"""`plan`: the planner's first decision, a plan of subtasks (or, for a trivial task, the answer)."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from memento.graph.context import Context, context_of
from memento.graph.state import State, end_of_run
from memento.nodes import prompts
from memento.nodes.planner import ask_planner, decision_update, planner_messages
from memento.nodes.schemas import PlannerDecision
from memento.nodes.toolbox import TOOLBOXES


def plan(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    ctx = context_of(runtime)
    instruction = prompts.PLAN_INSTRUCTION.format(max_cycles=ctx.max_cycles)
    decision, error = ask_planner(ctx, planner_messages(state, ctx, instruction), PlannerDecision)
    if error:
        TOOLBOXES.release(state.get("case_id"))
        return end_of_run({"error": error})
    return decision_update(state, decision)
