"""Run, resume and list threads with the configured checkpointer (SQLite in the data folder by
default, or PostgreSQL)."""

from __future__ import annotations

import json
import sqlite3
import sys
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator, TextIO

from langgraph._internal._constants import NULL_TASK_ID, RESUME

from memento.cli.render import Progress
from memento.graph.builder import NODES, build_graph
from memento.graph.context import ConfigError, Context, context_from_dict, read_config_file
from memento.graph.errors import RunError
from memento.graph.persistence import open_checkpointer, redact_url, thread_ids
from memento.graph.storage import folder_condition, storage_problem, what_to_do
from memento.mcp_servers.client import redact_secrets

SETTINGS_KEY = "memento_settings"


class StorageError(RunError, OSError):
    """The disk under the data folder cannot take a write now (full, read-only, a permission)."""


def check_checkpoint_file(ctx: Context) -> None:
    """A one-line error for a checkpoint file SQLite cannot read: the disk (full, read-only, a
    permission), which is fixed and then resumed, told apart from a file that is not a database."""
    path = ctx.checkpoint_path()
    if ctx.uses_postgres() or not path.exists():
        return
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        problem = storage_problem(exc, path.parent) or folder_condition(path.parent)
        if problem:
            raise StorageError(f"{problem}: {what_to_do(problem)}, then run the command again; the checkpoints in "
                               f"{path} are kept and their runs resume") from None
        raise ConfigError(f"checkpoint file {path} cannot be read as a SQLite database ({exc}): its runs cannot be "
                          "resumed from it; keep it for recovery, and give another --data-dir for new runs") from None


@contextmanager
def checkpointed_graph(ctx: Context) -> Iterator[Any]:
    ctx.resolved_data_dir().mkdir(mode=0o700, parents=True, exist_ok=True)  # cases and checkpoints: private
    check_checkpoint_file(ctx)  # a SQLite file's own folder is made by open_checkpointer
    with open_checkpointer(ctx.checkpointer_target()) as saver:
        yield build_graph(saver)


def has_checkpoints(ctx: Context) -> bool:
    """Whether there can be threads to find (a SQLite file that does not exist has none)."""
    return ctx.uses_postgres() or ctx.checkpoint_path().exists()


def thread_config(thread_id: str, ctx: Context) -> dict[str, Any]:
    # The run's settings ride in `configurable` so they land in each checkpoint's metadata,
    # where `resume` finds them. They hold no secrets: API keys stay in the environment, and where
    # the checkpoints live (a Postgres URL may hold a password) is not stored with them: the
    # resuming process names it to find the run at all.
    settings = ctx.to_dict() | {"mcp_servers": redact_secrets(ctx.mcp_servers)}
    settings.pop("checkpointer", None)
    return {"configurable": {"thread_id": thread_id, SETTINGS_KEY: json.dumps(settings)}}


def thread_snapshot(ctx: Context, thread_id: str) -> tuple[Any, str] | None:
    """The thread's latest checkpoint (values, pending tasks, interrupts, metadata) and its status,
    or None if there is none."""
    if not has_checkpoints(ctx):
        return None
    with checkpointed_graph(ctx) as graph:
        snapshot = graph.get_state({"configurable": {"thread_id": thread_id}})
        if snapshot.created_at is None:
            return None
        return snapshot, thread_status(snapshot, answered(graph, thread_id))


def answered(graph: Any, thread_id: str) -> bool:
    """Whether the thread's interrupt already has its answer: a process given `Command(resume=...)`
    stopped before the node that asked could finish. The old question still shows in the state
    until then, but the answer is on disk, and resuming without one continues with it."""
    saved = graph.checkpointer.get_tuple({"configurable": {"thread_id": thread_id}})
    return bool(saved) and any(task == NULL_TASK_ID and channel == RESUME for task, channel, _ in saved.pending_writes or [])


def thread_status(snapshot: Any, answer_on_disk: bool = False) -> str:
    """waiting (an interrupt asks for approval), running (work is left: in progress, or stopped by
    a signal or a crash; `resume` continues it), failed (a node raised, or the run ended with an
    error) or done.

    As LangGraph decides it: a thread is finished when no task is left, not when the checkpoint
    names no next node; a task that finished before the process stopped still has its writes to
    apply, and `resume` applies them."""
    if snapshot.interrupts and not answer_on_disk:
        return "waiting"
    if any(t.error for t in snapshot.tasks):
        return "failed"
    if snapshot.tasks:
        return "running"
    return "failed" if snapshot.values.get("error") else "done"


@dataclass
class Outcome:
    """Where a run stands after the command line drove it as far as it goes."""

    state: dict[str, Any]
    status: str
    interrupts: list[Any] = field(default_factory=list)

    @property
    def request(self) -> dict[str, Any] | None:
        return self.interrupts[0].value if self.interrupts else None


def stream_run(ctx: Context, thread_id: str, graph_input: Any, progress_out: TextIO) -> Outcome:
    """Run a thread (input), resume it (None) or answer its interrupt (a `Command`) until it ends or
    waits; print progress as it goes."""
    progress = Progress(progress_out)
    config = thread_config(thread_id, ctx)
    with checkpointed_graph(ctx) as graph, closing(progress):
        # durability="sync": a step's checkpoint is on disk before the next step starts, so a
        # killed process loses at most the step it was in.
        for mode, chunk in graph.stream(graph_input, config, context=ctx, stream_mode=["updates", "custom"],
                                        durability="sync"):
            if mode == "custom":
                progress.custom(chunk)
            else:
                for node, values in chunk.items():
                    if node in NODES or node == "__interrupt__":  # not the model and tool tasks inside nodes
                        progress.update(node, values)
        snapshot = graph.get_state(config)
        return Outcome(dict(snapshot.values), thread_status(snapshot, answered(graph, thread_id)),
                       list(snapshot.interrupts))


def resume_context(ctx_defaults: Context, thread_id: str, overrides: dict[str, Any],
                   config_file: str | None = None) -> tuple[Context, Any]:
    """The settings a thread was started with, then those of `config_file`, then `overrides`;
    and the thread's latest checkpoint."""
    found = thread_snapshot(ctx_defaults, thread_id)
    if found is None:
        where = (redact_url(ctx_defaults.checkpointer) if ctx_defaults.uses_postgres()
                 else ctx_defaults.resolved_data_dir())
        raise ConfigError(f"no run with thread id {thread_id!r} in {where}: "
                          "check the id, or pass the --data-dir (or --checkpointer) the run used")
    snapshot = found[0]
    raw = (snapshot.metadata or {}).get(SETTINGS_KEY)
    if not raw:
        raise ConfigError(f"thread {thread_id} was not started by the memento command line: resume it from your code")
    settings = json.loads(raw)
    if config_file:
        from_file = read_config_file(config_file)
        from_file.pop("approval", None)  # a run keeps the approval policy it started with
        settings["mcp_servers"] = settings.get("mcp_servers", {}) | from_file.pop("mcp_servers", {})
        settings.update(from_file)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return context_from_dict(settings, source=f"thread {thread_id}"), found


def list_threads(ctx: Context, waiting_only: bool = False, limit: int | None = None) -> list[dict[str, Any]]:
    """The threads in the data directory's checkpoints, most recently active first."""
    if not has_checkpoints(ctx):
        return []
    now = datetime.now(timezone.utc)
    rows: list[dict[str, Any]] = []
    with checkpointed_graph(ctx) as graph:
        for thread in thread_ids(graph.checkpointer):
            snapshot = graph.get_state({"configurable": {"thread_id": thread}})
            status = thread_status(snapshot, answered(graph, thread))
            if waiting_only and status != "waiting":
                continue
            updated = datetime.fromisoformat(snapshot.created_at)
            row = {"thread_id": thread, "task": snapshot.values.get("task"), "status": status,
                   "updated_at": snapshot.created_at, "age_s": round((now - updated).total_seconds(), 1)}
            if status == "waiting":
                row["interrupt"] = snapshot.interrupts[0].value
            elif status == "failed":
                raised = next((t.error for t in snapshot.tasks if t.error), None)
                row["error"] = snapshot.values.get("error") or f"{type(raised).__name__}: {raised}"
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
    return rows


def progress_stream(as_json: bool) -> TextIO:
    return sys.stderr if as_json else sys.stdout
