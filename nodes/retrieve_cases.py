"""`retrieve_cases`: start a run clean and fetch the past cases most similar to the task."""

from __future__ import annotations

import os
import uuid
from typing import Any

from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime

from memento.graph.context import Context, context_of
from memento.graph.state import State, end_of_run
from memento.nodes.resources import case_bank_for


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
        "files": files, "case_id": str(uuid.uuid4()), "cases_used": [], "plan": [], "plans": [],
        "results": [], "next_subtask": 0, "cycle": 0, "planner_notes": [], "final_answer": None,
        "reward": None, "score": None, "error": None, "case_written": False,
    }
    if not (state.get("task") or "").strip():
        return end_of_run({**update, "error": "the input has no task: give {'task': 'what to do'}"})
    if problem := unreadable_file(files):
        return end_of_run({**update, "error": problem})
    if ctx.retrieval_mode == "none" or ctx.top_k == 0:
        return update
    cases = case_bank_for(ctx).retrieve(state["task"], ctx.top_k)
    update["cases_used"] = [case.model_dump() for case in cases]
    get_stream_writer()({"event": "cases", "count": len(cases),
                         "successes": sum(case.success for case in cases)})
    return update
