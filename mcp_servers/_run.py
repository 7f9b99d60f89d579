"""Command-line plumbing shared by the servers: stdio by default, streamable HTTP on request."""

from __future__ import annotations

import argparse
from typing import Any

from mcp.server.fastmcp import FastMCP


def add_transport_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--transport", choices=["stdio", "streamable-http"], default="stdio",
                        help="stdio (default) or streamable-http")
    parser.add_argument("--host", default="127.0.0.1", help="bind address for streamable-http")
    parser.add_argument("--port", type=int, default=8765, help="port for streamable-http")


def run_server(server: FastMCP, args: argparse.Namespace) -> None:
    if args.transport == "streamable-http":
        server.settings.host, server.settings.port = args.host, args.port
    server.run(transport=args.transport)


def serve(server: FastMCP, description: str) -> None:
    """Parse the transport options and run: for servers with no options of their own."""
    parser = argparse.ArgumentParser(description=description)
    add_transport_options(parser)
    run_server(server, parser.parse_args())


# What belongs to one run travels with each tool call in the request's `_meta`, under this key:
# {"allowed_paths": [...], "workspace": "..."}. The client (memento's toolbox) sets it; a model
# only writes tool arguments, so it cannot widen its own scope.
RUN_SCOPE_KEY = "memento/run"


def run_scope(ctx: Any) -> dict[str, Any]:
    """The calling run's scope from a FastMCP request context; empty outside one."""
    try:
        meta = ctx.request_context.meta
    except (AttributeError, LookupError, ValueError):
        return {}
    scope = (getattr(meta, "model_extra", None) or {}).get(RUN_SCOPE_KEY) if meta is not None else None
    return scope if isinstance(scope, dict) else {}
