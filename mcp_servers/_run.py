"""Command-line entry shared by the servers: stdio by default, streamable HTTP on request."""

from __future__ import annotations

import argparse

from mcp.server.fastmcp import FastMCP


def serve(server: FastMCP, description: str) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--transport", choices=["stdio", "streamable-http"], default="stdio",
                        help="stdio (default) or streamable-http")
    parser.add_argument("--host", default="127.0.0.1", help="bind address for streamable-http")
    parser.add_argument("--port", type=int, default=8765, help="port for streamable-http")
    args = parser.parse_args()
    if args.transport == "streamable-http":
        server.settings.host, server.settings.port = args.host, args.port
    server.run(transport=args.transport)
