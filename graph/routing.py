"""Conditional edges: where the run goes after each node."""

from __future__ import annotations

from typing import Literal

from langgraph.graph import END

from memento.graph.state import State


def after_retrieve(state: State) -> Literal["plan", "__end__"]:
    return END if state.get("error") else "plan"


def after_planning(state: State) -> Literal["review_plan", "execute_subtask", "write_case", "__end__"]:
    """After `plan` or `replan`: have the plan reviewed (when the approval policy asks), run it,
    or score and store a final answer, or stop on error."""
    if state.get("error"):
        return END
    if state.get("final_answer") is not None:
        return "write_case"
    return "review_plan" if state.get("plan_review") else "execute_subtask"


def after_review(state: State) -> Literal["execute_subtask", "replan"]:
    """After `review_plan`: run the approved (or edited) plan, or plan again after a rejection."""
    return "replan" if state.get("plan_rejected") else "execute_subtask"


def after_execute(state: State) -> Literal["execute_subtask", "replan"]:
    return "execute_subtask" if state["next_subtask"] < len(state["plan"]) else "replan"
