"""Run, resume and list threads with a SQLite checkpointer in the data directory."""

from __future__ import annotations

import json
import sqlite3
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator, TextIO

from langgraph.checkpoint.sqlite import SqliteSaver

from memento.cli.render import Progress
from memento.graph.builder import NODES, build_graph
from memento.graph.context import ConfigError, Context, context_from_dict, read_config_file
from memento.mcp_servers.client import redact_secrets

SETTINGS_KEY = "memento_settings"


def check_checkpoint_file(ctx: Context) -> None:
    """A one-line error for a checkpoint file SQLite cannot read (corrupted, or not a database)."""
    path = ctx.checkpoint_path()
    if not path.exists():
        return
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"checkpoint file {path} is unreadable ({exc}): its runs cannot be resumed; move it aside "
                          "to start new runs") from None


@contextmanager
def checkpointed_graph(ctx: Context) -> Iterator[Any]:
    ctx.resolved_data_dir().mkdir(parents=True, exist_ok=True)
    check_checkpoint_file(ctx)
    with SqliteSaver.from_conn_string(str(ctx.checkpoint_path())) as saver:
        yield build_graph(saver)


def thread_config(thread_id: str, ctx: Context) -> dict[str, Any]:
    # The run's settings ride in `configurable` so they land in each checkpoint's metadata,
    # where `resume` finds them. They hold no secrets: API keys stay in the environment.
    settings = ctx.to_dict() | {"mcp_servers": redact_secrets(ctx.mcp_servers)}
    return {"configurable": {"thread_id": thread_id, SETTINGS_KEY: json.dumps(settings)}}


def thread_snapshot(ctx: Context, thread_id: str) -> Any | None:
    """The thread's latest checkpoint (values, pending tasks, interrupts, metadata), or None if there is none."""
    if not ctx.checkpoint_path().exists():
        return None
    with checkpointed_graph(ctx) as graph:
        snapshot = graph.get_state({"configurable": {"thread_id": thread_id}})
    return snapshot if snapshot.created_at is not None else None


def thread_status(snapshot: Any) -> str:
    """waiting (an interrupt asks for approval), running (work is left: in progress, or stopped by
    a signal or a crash; `resume` continues it), failed (a node raised, or the run ended with an
    error) or done.

    As LangGraph decides it: a thread is finished when no task is left, not when the checkpoint
    names no next node; a task that finished before the process stopped still has its writes to
    apply, and `resume` applies them."""
    if snapshot.interrupts:
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
    with checkpointed_graph(ctx) as graph:
        # durability="sync": a step's checkpoint is on disk before the next step starts, so a
        # killed process loses at most the step it was in.
        for mode, chunk in graph.stream(graph_input, config, context=ctx, stream_mode=["updates", "custom"],
                                        durability="sync"):
            if mode == "custom":
                progress.custom(chunk)
            else:
                for node, values in chunk.items():
                    if node in NODES:  # not the model and tool tasks inside the nodes
                        progress.update(node, values)
        snapshot = graph.get_state(config)
        return Outcome(dict(snapshot.values), thread_status(snapshot), list(snapshot.interrupts))


def resume_context(ctx_defaults: Context, thread_id: str, overrides: dict[str, Any],
                   config_file: str | None = None) -> tuple[Context, Any]:
    """The settings a thread was started with, then those of `config_file`, then `overrides`;
    and the thread's latest checkpoint."""
    snapshot = thread_snapshot(ctx_defaults, thread_id)
    if snapshot is None:
        raise ConfigError(f"no run with thread id {thread_id!r} in {ctx_defaults.resolved_data_dir()}: "
                          "check the id, or pass the --data-dir the run used")
    raw = (snapshot.metadata or {}).get(SETTINGS_KEY)
    if not raw:
        raise ConfigError(f"thread {thread_id} was not started by the memento command line: resume it from your code")
    settings = json.loads(raw)
    if config_file:
        from_file = read_config_file(config_file)
        settings["mcp_servers"] = settings.get("mcp_servers", {}) | from_file.pop("mcp_servers", {})
        settings.update(from_file)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return context_from_dict(settings, source=f"thread {thread_id}"), snapshot


def list_threads(ctx: Context, waiting_only: bool = False, limit: int | None = None) -> list[dict[str, Any]]:
    """The threads in the data directory's checkpoints, most recently active first."""
    if not ctx.checkpoint_path().exists():
        return []
    now = datetime.now(timezone.utc)
    rows: list[dict[str, Any]] = []
    with checkpointed_graph(ctx) as graph:
        seen: list[str] = []
        for checkpoint in graph.checkpointer.list(None):
            thread = checkpoint.config["configurable"]["thread_id"]
            if thread not in seen and not checkpoint.config["configurable"].get("checkpoint_ns"):
                seen.append(thread)
        for thread in seen:
            snapshot = graph.get_state({"configurable": {"thread_id": thread}})
            status = thread_status(snapshot)
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
