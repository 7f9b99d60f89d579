"""`retrieve_cases`: start a run clean and fetch the past cases most similar to the task."""

from __future__ import annotations

import os
import uuid
from typing import Any

import numpy as np
from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore

from memento.graph.approval import policy_dict
from memento.graph.context import Context, context_of
from memento.graph.state import State
from memento.memory.case import RetrievedCase
from memento.memory.lexical import mismatch_matrix
from memento.memory.provenance import memory_access
from memento.memory.resources import case_bank_for, current_retriever, encoder_loading, retriever_for
from memento.memory.retrieval import INITIAL_UTILITY, distinct_sources, utility_order

MAX_SHOWN_STEPS = 20  # steps of a past case's plan the planner sees


def unreadable_file(files: list[str]) -> str | None:
    """A one-line problem with the first attached file that cannot be read, else None."""
    for path in files:
        if not os.path.isfile(path):
            return f"attached file {path} does not exist or is not a file: check the path"
        if not os.access(path, os.R_OK):
            return f"attached file {path} is not readable: check its permissions"
    return None


def retrieve_cases(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    ctx = context_of(runtime)
    files = [os.path.abspath(os.path.expanduser(p)) for p in state.get("files") or []]
    # Every per-run key is reset here, so a thread reused for a new task starts clean.
    update: dict[str, Any] = {
        "files": [], "ground_truth": None, "run_files": files, "run_ground_truth": state.get("ground_truth"),
        "case_id": str(uuid.uuid4()), "cases_used": [], "plan": [], "plans": [],
        "results": [], "next_subtask": 0, "cycle": 0, "planner_notes": [], "final_answer": None,
        "reward": None, "score": None, "error": None, "case_written": False, "cited_cases": [],
        "abandoned_cases": [], "plan_review": False, "plan_rejected": False, "review_feedback": [], "ranking": None,
        "case_discarded": False, "run_approval": policy_dict(ctx.policy), "transitions": 0,
        "retriever_version": None,
    }
    if not (state.get("task") or "").strip():
        return {**update, "error": "the input has no task: give {'task': 'what to do'}"}
    if state.get("ground_truth") and ctx.caller_rewards == "refuse" and not memory_access(ctx).trusted:
        return {**update, "error": "this server does not take a ground truth from its callers (its operator set "
                                   "caller_rewards = refuse): send the task without ground_truth"}
    if problem := ctx.task_problem(state["task"]) or unreadable_file(files):
        return {**update, "error": problem}
    if ctx.retrieval_mode == "none" or ctx.top_k == 0:
        return update
    from memento.memory.device import torch_threads  # torch: only when there is encoding to do

    if phase := encoder_loading(ctx):
        get_stream_writer()({"event": "phase", "text": phase})
    with torch_threads(ctx.torch_threads):
        cases = select_cases(ctx, state["task"], runtime.store)
    update["cases_used"] = [bounded_case(case, ctx.case_field_chars) for case in cases]
    if ctx.retrieval_mode == "parametric":
        retriever = retriever_for(ctx)
        update["retriever_version"] = retriever.version
        update["ranking"] = "learned" if retriever.ahead else "similarity"
    get_stream_writer()({"event": "cases_retrieved", "count": len(cases), "mode": ctx.retrieval_mode,
                         "successes": sum(case.success for case in cases),
                         **({"ranking": update["ranking"]} if update["ranking"] else {})})
    return update


def bounded_case(case: RetrievedCase, chars: int) -> dict[str, Any]:
    """A retrieved case as the run keeps it in its state (checkpointed, shown to the planner): every
    text field cut to `chars` characters and the plan to `MAX_SHOWN_STEPS` steps, so that one huge
    case cannot fill a prompt or a checkpoint."""
    data = case.model_dump()
    for key in ("task", "final_answer", "result_summary", "plan_source"):
        if isinstance(data.get(key), str):
            data[key] = clip(data[key], chars)
    data["plan"] = [clip(step, chars) for step in data["plan"][:MAX_SHOWN_STEPS]]
    return data


def clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else f"{text[:chars]} [... {len(text) - chars} more characters cut]"


def select_cases(ctx: Context, task: str, store: BaseStore | None = None) -> list[RetrievedCase]:
    """Two stages: Chroma's nearest candidates (one per source task, unless
    `distinct_source_tasks` is off), then the K to show, by mode: the nearest (similarity), the
    best of the nearest `utility_candidates` by similarity and utility (utility), or the highest
    Q, drawn by the exploring policy (parametric).

    Per-query work is one encoder pass for the task, the nearest-neighbour search, and one
    batched network pass over at most `candidates` stored embeddings: nothing grows with the bank.

    With a LangGraph `store` (the one given to `build_graph`), the cases are that store's, found by
    its own search of the task's text."""
    bank = case_bank_for(ctx, store)
    return select_for_query(ctx, bank, task, bank.encoder.encode([task])[0])


def _by_utility(ctx: Context, pool: list[RetrievedCase]) -> list[RetrievedCase]:
    """The K of the nearest `utility_candidates` best by 0.5 z(similarity) + 0.5 z(utility)."""
    utilities = np.asarray([INITIAL_UTILITY if c.utility is None else c.utility for c in pool])
    order = utility_order(np.asarray([c.similarity for c in pool]), utilities)
    return [pool[i] for i in order[:ctx.top_k]]


def select_for_query(ctx: Context, bank: Any, task: str, query: np.ndarray) -> list[RetrievedCase]:
    """`select_cases` once the task's embedding is known: what retrieval costs past the encoder."""
    mode = ctx.retrieval_mode
    access = memory_access(ctx)  # only the scopes this run may read, quarantined cases left out
    if mode in ("similarity", "utility") and hasattr(bank, "nearest"):  # ids first, the shown cases read after
        wanted = ctx.top_k if mode == "similarity" else ctx.utility_candidates
        shown = bank.nearest(query, wanted, max(ctx.candidates, ctx.top_k), ctx.distinct_source_tasks, access=access)
        return shown if mode == "similarity" else _by_utility(ctx, shown)
    wide = mode != "similarity" or ctx.distinct_source_tasks
    found = bank.candidates(query, max(ctx.candidates, ctx.top_k) if wide else ctx.top_k, query_text=task,
                            vectors=mode == "parametric", access=access)  # only the Q-retriever reads the vectors
    keep = distinct_sources(found.cases) if ctx.distinct_source_tasks else list(range(len(found.cases)))
    cases = [found.cases[i] for i in keep]
    if mode == "similarity":
        return cases[:ctx.top_k]
    if mode == "utility":
        return _by_utility(ctx, cases[:ctx.utility_candidates])
    retriever = current_retriever(ctx, bank)  # the newest version the learner published
    mismatch = (mismatch_matrix(task, [c.task for c in cases], [c.success for c in cases],
                                retriever.settings.word_pairs)
                if retriever.settings.lexical else None)
    q = retriever.q_values(query, found.task_embeddings[keep], found.plan_embeddings[keep], mismatch)
    # An untrained network has nothing to add, and one that has not beaten similarity on runs it had
    # not yet learned from may not know yet: until then, keep the similarity order.
    order = (retriever.choose(q, ctx.top_k, ctx.retrieval_temperature, task, pool=2 * ctx.top_k)
             if retriever.ahead else np.arange(len(q)))
    return [cases[i].model_copy(update={"q": round(float(q[i]), 4)}) for i in order[:ctx.top_k]]
