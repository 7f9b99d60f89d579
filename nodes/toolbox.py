"""The executor's MCP tools, reached through langchain-mcp-adapters.

MCP tools are async only, while the graph's nodes are sync (so the same graph runs under
`invoke`, `ainvoke` and `langgraph dev`). A `Toolbox` therefore runs its sessions on a private
event loop in a daemon thread: one task there opens every server's session, loads the tools
and holds the sessions open until `close()`, because anyio needs a session to be closed by
the task that opened it. Tool calls are scheduled onto that loop from the node's thread.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import threading
from contextlib import AsyncExitStack
from typing import Any

from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.tools import load_mcp_tools

from memento.graph.context import ConfigError

OPEN_TIMEOUT_S = 60.0
CALL_TIMEOUT_S = 120.0


class ToolServerError(RuntimeError):
    """The configured MCP servers could not be started or reached."""


SECRET_REFERENCE = re.compile(r"^\$\{(\w+)\}$")
REDACTED = "<redacted>"


def redact_secrets(servers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Server settings safe to store: `env` and `headers` values other than `${VAR}` references
    are replaced, so a key written straight into a config never lands in a checkpoint."""
    safe = {}
    for name, conn in servers.items():
        conn = dict(conn)
        for key in ("env", "headers"):
            if isinstance(conn.get(key), dict):
                conn[key] = {k: v if SECRET_REFERENCE.match(str(v)) else REDACTED for k, v in conn[key].items()}
        safe[name] = conn
    return safe


def _expand(name: str, key: str, values: dict[str, Any]) -> dict[str, str]:
    out = {}
    for var, value in values.items():
        if value == REDACTED:
            raise ConfigError(f"mcp_servers.{name}.{key}.{var} was not stored with the run: write it as "
                              "${VARIABLE} so it is read from the environment")
        if match := SECRET_REFERENCE.match(str(value)):
            if match.group(1) not in os.environ:
                raise ConfigError(f"mcp_servers.{name}.{key}.{var} refers to ${{{match.group(1)}}}, "
                                  "which is not set in the environment")
            value = os.environ[match.group(1)]
        out[var] = str(value)
    return out


def _connections(servers: dict[str, dict[str, Any]], allowed_paths: list[str]) -> dict[str, dict[str, Any]]:
    """Connection settings with `{python}` resolved and the run's files made readable."""
    out = {}
    for name, raw in servers.items():
        conn = dict(raw)
        if conn.get("enabled", True) is False:
            continue
        conn.pop("enabled", None)
        transport = conn.setdefault("transport", "stdio")
        for key in ("env", "headers"):
            if isinstance(conn.get(key), dict):
                conn[key] = _expand(name, key, conn[key])
        if transport == "stdio":
            if not conn.get("command"):
                raise ConfigError(f"mcp_servers.{name} has no command: give the program that starts the server")
            conn["command"] = sys.executable if conn["command"] == "{python}" else conn["command"]
            env = dict(conn.get("env") or {})
            # The built-in document server confines reads to the run's own files.
            env["MEMENTO_ALLOWED_PATHS"] = json.dumps(allowed_paths)
            conn["env"] = env
        elif not conn.get("url"):
            raise ConfigError(f"mcp_servers.{name} uses {transport} but has no url")
        out[name] = conn
    return out


class _Loop:
    """One daemon thread running an event loop, shared by all toolboxes in the process."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None or cls._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="memento-mcp", daemon=True).start()
                cls._loop = loop
            return cls._loop


class Toolbox:
    """Open sessions to the configured MCP servers and call their tools."""

    def __init__(self, servers: dict[str, dict[str, Any]], allowed_paths: list[str] | None = None) -> None:
        self._connections = _connections(servers, allowed_paths or [])
        self._loop = _Loop.get()
        self._closing: asyncio.Event | None = None
        self._holder: Any = None
        self.tools: list[BaseTool] = []

    def __enter__(self) -> "Toolbox":
        ready = asyncio.run_coroutine_threadsafe(self._open(), self._loop)
        self.tools = ready.result(timeout=OPEN_TIMEOUT_S)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _open(self) -> list[BaseTool]:
        self._closing = asyncio.Event()
        opened: asyncio.Future = asyncio.get_running_loop().create_future()
        self._holder = asyncio.create_task(self._hold(opened))
        return await opened

    async def _hold(self, opened: asyncio.Future) -> None:
        client = MultiServerMCPClient(self._connections)
        try:
            async with AsyncExitStack() as stack:
                tools: list[BaseTool] = []
                for name in self._connections:
                    session = await stack.enter_async_context(client.session(name))
                    tools += await load_mcp_tools(session, server_name=name)
                opened.set_result(tools)
                await self._closing.wait()
        except Exception as exc:  # reported to the caller of __enter__, with the server named
            if not opened.done():
                opened.set_exception(ToolServerError(
                    f"cannot start the MCP tool servers {sorted(self._connections)}: {exc}: check mcp_servers"))

    def close(self) -> None:
        if self._closing is None:
            return
        closing, self._closing = self._closing, None
        self._loop.call_soon_threadsafe(closing.set)
        holder = self._holder
        if holder is not None:
            async def _wait() -> None:
                await asyncio.wait({holder}, timeout=OPEN_TIMEOUT_S)
            asyncio.run_coroutine_threadsafe(_wait(), self._loop).result(timeout=OPEN_TIMEOUT_S + 5)

    def call(self, tool_call: dict[str, Any], max_chars: int) -> ToolMessage:
        """Run one tool call; failures come back as an error ToolMessage, never an exception."""
        tool = next((t for t in self.tools if t.name == tool_call["name"]), None)
        if tool is None:
            return ToolMessage(content=f"unknown tool {tool_call['name']!r}", tool_call_id=tool_call["id"],
                               name=tool_call["name"], status="error")
        future = asyncio.run_coroutine_threadsafe(tool.ainvoke({**tool_call, "type": "tool_call"}), self._loop)
        try:
            message = future.result(timeout=CALL_TIMEOUT_S)
        except Exception as exc:  # a crashed server, a timeout, invalid arguments
            future.cancel()
            return ToolMessage(content=f"tool {tool.name} failed: {type(exc).__name__}: {exc}",
                               tool_call_id=tool_call["id"], name=tool.name, status="error")
        text = message.text if isinstance(message, ToolMessage) else str(message)
        if len(text) > max_chars:
            text = text[:max_chars] + f"\n[truncated: {len(text) - max_chars} more characters]"
        return ToolMessage(content=text, tool_call_id=tool_call["id"], name=tool.name,
                           status=getattr(message, "status", "success"))
