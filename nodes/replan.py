"""`replan`: after a plan has run, the planner answers or plans again; on the last cycle it must answer."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from memento.graph.context import Context, context_of
from memento.graph.state import State
from memento.nodes import prompts
from memento.nodes.planner import planner_step
from memento.nodes.schemas import FinalAnswer, PlannerDecision


def replan(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    ctx = context_of(runtime)
    cycle = state.get("cycle", 1)
    if cycle >= ctx.max_cycles:
        # A plan is never returned as the answer: the schema leaves the planner no other choice.
        return planner_step(state, ctx, prompts.FINAL_INSTRUCTION.format(max_cycles=ctx.max_cycles), FinalAnswer)
    template = prompts.REJECTED_INSTRUCTION if state.get("plan_rejected") else prompts.REPLAN_INSTRUCTION
    instruction = template.format(cycle=cycle, max_cycles=ctx.max_cycles)
    return planner_step(state, ctx, instruction, PlannerDecision)
