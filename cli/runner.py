"""Run or resume the graph with a SQLite checkpointer in the data directory."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any, Iterator, TextIO

from langgraph.checkpoint.sqlite import SqliteSaver

from memento.cli.render import Progress
from memento.graph.builder import build_graph
from memento.graph.context import ConfigError, Context, context_from_dict, read_config_file
from memento.mcp_servers.client import redact_secrets

SETTINGS_KEY = "memento_settings"


@contextmanager
def checkpointed_graph(ctx: Context) -> Iterator[Any]:
    ctx.resolved_data_dir().mkdir(parents=True, exist_ok=True)
    with SqliteSaver.from_conn_string(str(ctx.checkpoint_path())) as saver:
        yield build_graph(saver)


def thread_config(thread_id: str, ctx: Context) -> dict[str, Any]:
    # The run's settings ride in `configurable` so they land in each checkpoint's metadata,
    # where `resume` finds them. They hold no secrets: API keys stay in the environment.
    settings = ctx.to_dict() | {"mcp_servers": redact_secrets(ctx.mcp_servers)}
    return {"configurable": {"thread_id": thread_id, SETTINGS_KEY: json.dumps(settings)}}


def thread_snapshot(ctx: Context, thread_id: str) -> Any | None:
    """The thread's latest checkpoint (values, next nodes, metadata), or None if there is none."""
    if not ctx.checkpoint_path().exists():
        return None
    with checkpointed_graph(ctx) as graph:
        snapshot = graph.get_state({"configurable": {"thread_id": thread_id}})
    return snapshot if snapshot.created_at is not None else None


def stream_run(ctx: Context, thread_id: str, graph_input: dict[str, Any] | None, progress_out: TextIO) -> dict[str, Any]:
    """Run (or, with no input, resume) a thread to its end, printing progress; return the final state."""
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
                    progress.update(node, values)
        return dict(graph.get_state(config).values)


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


def progress_stream(as_json: bool) -> TextIO:
    return sys.stderr if as_json else sys.stdout
