"""The Memento graph:

    START -> retrieve_cases -> plan -> execute_subtask (once per subtask) -> replan
          -> (new plan) execute_subtask ... | (final answer) write_case -> END

`build_graph(checkpointer=...)` is for library use; the module-level `graph`, compiled
without a checkpointer, is what `langgraph dev` serves (it brings its own persistence).
"""

from __future__ import annotations

from typing import Any, Sequence

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Checkpointer

from memento.graph.context import Context
from memento.graph.routing import after_execute, after_planning, after_retrieve
from memento.graph.state import InputState, OutputState, State
from memento.nodes import execute_subtask, plan, replan, retrieve_cases, write_case

NODES = ("retrieve_cases", "plan", "execute_subtask", "replan", "write_case")


def build_graph(
    checkpointer: Checkpointer = None,
    *,
    store: Any = None,
    interrupt_before: Sequence[str] | None = None,
    interrupt_after: Sequence[str] | None = None,
    name: str = "memento",
) -> CompiledStateGraph:
    """Compile the Memento graph. Pass a checkpointer (e.g. SqliteSaver) to make runs resumable."""
    builder = StateGraph(State, context_schema=Context, input_schema=InputState, output_schema=OutputState)
    builder.add_node("retrieve_cases", retrieve_cases)
    builder.add_node("plan", plan)
    builder.add_node("execute_subtask", execute_subtask)
    builder.add_node("replan", replan)
    builder.add_node("write_case", write_case)

    builder.add_edge(START, "retrieve_cases")
    builder.add_conditional_edges("retrieve_cases", after_retrieve)
    builder.add_conditional_edges("plan", after_planning)
    builder.add_conditional_edges("execute_subtask", after_execute)
    builder.add_conditional_edges("replan", after_planning)
    builder.add_edge("write_case", END)
    return builder.compile(checkpointer=checkpointer, store=store, name=name,
                           interrupt_before=interrupt_before, interrupt_after=interrupt_after)


graph = build_graph()
