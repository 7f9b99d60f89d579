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
from memento.nodes.toolbox import redact_secrets

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


def stored_settings(ctx: Context, thread_id: str) -> dict[str, Any] | None:
    """The settings a thread was started with, or None when the data dir has no such thread."""
    if not ctx.checkpoint_path().exists():
        return None
    with checkpointed_graph(ctx) as graph:
        found = graph.checkpointer.get_tuple({"configurable": {"thread_id": thread_id}})
    if found is None:
        return None
    raw = found.metadata.get(SETTINGS_KEY)
    if not raw:
        raise ConfigError(f"thread {thread_id} was not started by the memento command line: resume it from your code")
    return json.loads(raw)


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
                   config_file: str | None = None) -> Context:
    """The settings a thread was started with, then those of `config_file`, then `overrides`."""
    settings = stored_settings(ctx_defaults, thread_id)
    if settings is None:
        raise ConfigError(f"no run with thread id {thread_id!r} in {ctx_defaults.resolved_data_dir()}: "
                          "check the id, or pass the --data-dir the run used")
    if config_file:
        from_file = read_config_file(config_file)
        settings["mcp_servers"] = settings.get("mcp_servers", {}) | from_file.pop("mcp_servers", {})
        settings.update(from_file)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return context_from_dict(settings, source=f"thread {thread_id}")


def pending_nodes(ctx: Context, thread_id: str) -> tuple[str, ...]:
    with checkpointed_graph(ctx) as graph:
        return tuple(graph.get_state({"configurable": {"thread_id": thread_id}}).next)


def progress_stream(as_json: bool) -> TextIO:
    return sys.stderr if as_json else sys.stdout
