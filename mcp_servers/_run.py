"""Command-line plumbing shared by the servers: stdio by default, streamable HTTP on request."""

from __future__ import annotations

import argparse

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
