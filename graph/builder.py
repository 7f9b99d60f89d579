"""The Memento graph:

    START -> retrieve_cases -> plan -> [review_plan] -> execute_subtask (once per subtask) -> replan
          -> (new plan) [review_plan] -> execute_subtask ... | (final answer) write_case -> END

`review_plan` runs only when the approval policy asks for the plan; a rejected plan goes back to
`replan` with the reviewer's feedback. Tool calls and the case are approved inside
`execute_subtask` and `write_case`.

`build_graph(checkpointer=...)` is for library use: the caller of `invoke` is the operator of its
process and passes a full `Context`. The module-level `graph` here is the same, compiled without a
checkpointer. What `langgraph dev` and `langgraph build` serve is `memento.graph.server:graph`,
built with `operator=`: the operator's settings come from the server's environment, and a run's
context may only hold a caller's choices (`memento.graph.caller`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

from langgraph.config import get_config, get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore
from langgraph.types import Checkpointer, StreamMode

from memento.graph.caller import CallerContext, caller_settings, check_caller_files, check_operator_settings
from memento.graph.context import ConfigError, Context
from memento.graph.routing import after_execute, after_planning, after_retrieve, after_review
from memento.graph.state import InputState, OutputState, State
from memento.memory.provenance import caller_author, is_author
from memento.nodes import execute_subtask, plan, replan, retrieve_cases, review_plan, write_case
from memento.nodes.execute_subtask import RUN_ID

NODES = ("retrieve_cases", "plan", "review_plan", "execute_subtask", "replan", "write_case")


def check_served_state(operator: Context, ctx: Context, node: str, state: State) -> None:
    """What a node of the served graph reads from the state, checked (the state only ever comes from
    the nodes, but a server API that could write it must not lead anywhere): files only from the
    operator's input_roots, a plain case id, a plan within the run's bounds."""
    if node == "retrieve_cases":
        check_caller_files(operator, state.get("files"))
        return
    check_caller_files(operator, state.get("run_files"))
    case_id = state.get("case_id")
    if case_id is not None and (not isinstance(case_id, str) or not RUN_ID.fullmatch(case_id)):
        raise ConfigError("the run's case id is not a plain name: this state was not made by the graph")
    if len(state.get("plan") or []) > ctx.max_subtasks or len(state.get("plans") or []) > ctx.max_cycles + 1:
        raise ConfigError("the run's plan is beyond the run's bounds: this state was not made by the graph")
    if len(state.get("task") or "") > ctx.max_task_chars:
        raise ConfigError("the run's task is longer than max_task_chars: this state was not made by the graph")


def served_author() -> str:
    """The author of a served run's case: the caller the server authenticated (`langgraph_auth_user_id`,
    which the server sets on every run and refuses from a caller's input), as `caller:<identity>`;
    `caller:anonymous` when the graph is served without authentication."""
    identity = get_config().get("configurable", {}).get("langgraph_auth_user_id") or "anonymous"
    if not isinstance(identity, str) or not is_author(caller_author(identity)):
        raise ConfigError("the caller's identity is not a short printable name: the server's authentication must "
                          "give one")
    return caller_author(identity)


def reported(name: str, node: Callable[[State, Runtime[Context]], dict[str, Any]],
             operator: Context | None = None, store: BaseStore | None = None) -> Callable[..., dict[str, Any]]:
    """`node`, sending `node_started` and `node_finished` events to the `custom` stream. A node
    stopped by an interrupt, or run again on a resume, starts again: its `node_started` repeats.

    With an `operator`, the run's context holds a caller's choices only: they are checked and laid
    over the operator's settings before the node sees them (a refused field stops the run here,
    before anything has started).

    The node's `runtime.store` is `store`, the one given to `build_graph`, which the nodes use as the
    case bank; without one it is None, whatever store the platform runs the graph with (`langgraph
    dev` always passes its own), so the cases stay in the Chroma bank the settings name."""
    @functools.wraps(node)
    def run(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
        if runtime.store is not store:
            runtime = runtime.override(store=store)
        if operator is not None:
            ctx = caller_settings(operator, runtime.context).replace(author=served_author())
            runtime = runtime.override(context=ctx)
            check_served_state(operator, ctx, name, state)
        emit = get_stream_writer()
        emit({"event": "node_started", "node": name})
        update = node(state, runtime)
        emit({"event": "node_finished", "node": name, "keys": sorted(update)})
        return update

    return run


def build_graph(
    checkpointer: Checkpointer = None,
    *,
    store: BaseStore | None = None,
    interrupt_before: Sequence[str] | None = None,
    interrupt_after: Sequence[str] | None = None,
    name: str = "memento",
    stream_mode: StreamMode = "values",
    operator: Context | None = None,
) -> CompiledStateGraph:
    """Compile the Memento graph. Pass a checkpointer (e.g. SqliteSaver) to make runs resumable.

    `stream_mode` is what `.stream()` yields when no mode is asked for. It is "values" (the whole
    state after each step), not StateGraph's "updates", so that a step chained after the graph
    (`first | graph | next_step`) receives the finished state when the chain streams.

    `operator`: build a graph to serve to others. The run context is then a `CallerContext` (what a
    caller may choose, shown as a typed form in Studio), laid over these settings; without it the
    context is a full `Context`, for whoever runs the graph in their own process.

    `store`: a LangGraph store (e.g. `InMemoryStore(index={"dims": 384, "embed": ...})`, a Postgres
    store) that becomes the graph's case bank: runs retrieve from and write their cases to its
    namespace ("memento", "cases") instead of Chroma (`memento.memory.store.StoreCaseBank`). Only a
    store given here is used so; one a platform injects when serving the graph is ignored."""
    if operator is not None:
        check_operator_settings(operator)
    builder = StateGraph(State, context_schema=CallerContext if operator is not None else Context,
                         input_schema=InputState, output_schema=OutputState)
    for node_name, node in (("retrieve_cases", retrieve_cases), ("plan", plan), ("review_plan", review_plan),
                            ("execute_subtask", execute_subtask), ("replan", replan), ("write_case", write_case)):
        builder.add_node(node_name, reported(node_name, node, operator, store))

    builder.add_edge(START, "retrieve_cases")
    builder.add_conditional_edges("retrieve_cases", after_retrieve)
    builder.add_conditional_edges("plan", after_planning)
    builder.add_conditional_edges("review_plan", after_review)
    builder.add_conditional_edges("execute_subtask", after_execute)
    builder.add_conditional_edges("replan", after_planning)
    builder.add_edge("write_case", END)
    compiled = builder.compile(checkpointer=checkpointer, store=store, name=name,
                               interrupt_before=interrupt_before, interrupt_after=interrupt_after)
    compiled.stream_mode = stream_mode
    return compiled


graph = build_graph()
