"""Command-line plumbing shared by the servers: stdio by default, streamable HTTP on request.

Over stdio a server answers only the process that started it (memento's own client, the
operator's process). Over streamable HTTP anyone who can reach the port could call it, so every
request must carry `Authorization: Bearer TOKEN` with a token from the server's environment
variable `MEMENTO_MCP_TOKEN` (`NAME:TOKEN` or `TOKEN`, several separated by commas); a server
refuses to start over HTTP without one. The token's holder is the request's client: a tool sees
it through `client_identity`, and a call's `_meta` may then only narrow what the server's own
settings allow (see each server)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from mcp.server.fastmcp import FastMCP

from memento.graph.tokens import accepted_tokens, bearer_identity

TOKEN_VARIABLE = "MEMENTO_MCP_TOKEN"
CLIENT_KEY = "memento_client"  # where the middleware puts the client's identity in the request's state


def add_transport_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--transport", choices=["stdio", "streamable-http"], default="stdio",
                        help="stdio (default) or streamable-http")
    parser.add_argument("--host", default="127.0.0.1", help="bind address for streamable-http")
    parser.add_argument("--port", type=int, default=8765, help="port for streamable-http")


class BearerTokens:
    """ASGI middleware: a request without an accepted bearer token gets 401 and reaches nothing."""

    def __init__(self, app: Any, tokens: dict[str, str]) -> None:
        self.app, self.tokens = app, tokens

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan events
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers") or []}
        identity = bearer_identity(headers.get(b"authorization", b"").decode("latin-1"), self.tokens)
        if identity is None:
            body = json.dumps({"error": "this MCP server needs Authorization: Bearer TOKEN with a token it "
                                        f"accepts ({TOKEN_VARIABLE} on the server)"}).encode("utf-8")
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
            await send({"type": "http.response.body", "body": body})
            return
        scope.setdefault("state", {})[CLIENT_KEY] = identity
        await self.app(scope, receive, send)


def run_server(server: FastMCP, args: argparse.Namespace) -> None:
    if args.transport != "streamable-http":
        server.run(transport=args.transport)
        return
    tokens = accepted_tokens(os.environ.get(TOKEN_VARIABLE))
    if not tokens:
        sys.exit(f"{server.name}: refusing to serve over HTTP without {TOKEN_VARIABLE}: set it to a secret token "
                 "(clients send Authorization: Bearer TOKEN; memento sends it from the server's `headers`)")
    import uvicorn

    app = BearerTokens(server.streamable_http_app(), tokens)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


def serve(server: FastMCP, description: str) -> None:
    """Parse the transport options and run: for servers with no options of their own."""
    parser = argparse.ArgumentParser(description=description)
    add_transport_options(parser)
    run_server(server, parser.parse_args())


# What belongs to one run travels with each tool call in the request's `_meta`, under this key:
# {"allowed_paths": [...], "workspace": "..."}. The client (memento's toolbox) sets it; a model
# only writes tool arguments, so it cannot widen its own scope.
RUN_SCOPE_KEY = "memento/run"


def _request(ctx: Any) -> Any:
    try:
        return ctx.request_context.request
    except (AttributeError, LookupError, ValueError):
        return None


def over_http(ctx: Any) -> bool:
    """Whether this call came over HTTP (from anyone with a token), not from the parent process."""
    return _request(ctx) is not None


def client_identity(ctx: Any) -> str | None:
    """Who sent this call over HTTP (its token's identity); None over stdio."""
    request = _request(ctx)
    state = getattr(request, "scope", {}).get("state") if request is not None else None
    identity = state.get(CLIENT_KEY) if isinstance(state, dict) else None
    return identity if isinstance(identity, str) else None


def run_scope(ctx: Any) -> dict[str, Any]:
    """The calling run's scope from a FastMCP request context; empty outside one."""
    try:
        meta = ctx.request_context.meta
    except (AttributeError, LookupError, ValueError):
        return {}
    scope = (getattr(meta, "model_extra", None) or {}).get(RUN_SCOPE_KEY) if meta is not None else None
    return scope if isinstance(scope, dict) else {}
