"""`plan`: the planner's first decision, a plan of subtasks (or, for a trivial task, the answer)."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from memento.graph.context import Context, context_of
from memento.graph.state import State
from memento.nodes import prompts
from memento.nodes.planner import planner_step
from memento.nodes.schemas import PlannerDecision


def plan(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    ctx = context_of(runtime)
    return planner_step(state, ctx, prompts.PLAN_INSTRUCTION.format(max_cycles=ctx.max_cycles), PlannerDecision)
