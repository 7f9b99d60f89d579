"""`replan`: after a plan has run, the planner answers or plans again; on the last cycle it must answer."""

from __future__ import annotations

from typing import Any

from langgraph.runtime import Runtime

from memento.graph.context import Context, context_of
from memento.graph.state import State, end_of_run
from memento.nodes import prompts
from memento.nodes.planner import ask_planner, decision_update, planner_messages
from memento.nodes.schemas import FinalAnswer, PlannerDecision
from memento.nodes.toolbox import TOOLBOXES


def replan(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    ctx = context_of(runtime)
    cycle = state.get("cycle", 1)
    if cycle >= ctx.max_cycles:
        # A plan is never returned as the answer: the schema leaves the planner no other choice.
        instruction, schema = prompts.FINAL_INSTRUCTION.format(max_cycles=ctx.max_cycles), FinalAnswer
    else:
        instruction = prompts.REPLAN_INSTRUCTION.format(cycle=cycle, max_cycles=ctx.max_cycles)
        schema = PlannerDecision
    decision, error = ask_planner(ctx, planner_messages(state, ctx, instruction), schema)
    if error:
        TOOLBOXES.release(state.get("case_id"))
        return end_of_run({"error": error})
    return decision_update(state, decision)
