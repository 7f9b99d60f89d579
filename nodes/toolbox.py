"""The executor's MCP tools, reached through langchain-mcp-adapters.

A run holds one session per configured server for its whole length (`TOOLBOXES`, keyed by the
run's case id), so a tool call costs a message, not a process start. MCP tools are async while
the nodes are sync (the same graph runs under `invoke`, `ainvoke` and `langgraph dev`), so the
sessions live on a private event loop in a daemon thread: one task per server opens its session
and holds it until closed, because anyio requires a session to be closed by the task that opened
it. A server that crashes is restarted once; if it fails again its tools report failure. Tool
errors come back as error `ToolMessage`s, never exceptions.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import re
import sys
import threading
import time
from contextlib import AsyncExitStack
from typing import Any, Callable

from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.tools import load_mcp_tools
from pydantic import ValidationError

from memento.graph.context import ConfigError

OPEN_TIMEOUT_S = 60.0
CALL_TIMEOUT_S = 300.0
IDLE_CLOSE_S = 900.0
SECRET_REFERENCE = re.compile(r"\$\{(\w+)\}")
REDACTED = "<redacted>"
# Keys of a server's settings that are ours, not langchain-mcp-adapters'.
OWN_KEYS = ("enabled", "tools")


class ToolServerError(RuntimeError):
    """The configured MCP servers could not be started or reached."""


def redact_secrets(servers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Server settings safe to store: `env` and `headers` values other than `${VAR}` references
    are replaced, so a key written straight into a config never lands in a checkpoint."""
    safe = {}
    for name, conn in servers.items():
        conn = dict(conn)
        for key in ("env", "headers"):
            if isinstance(conn.get(key), dict):
                conn[key] = {k: v if SECRET_REFERENCE.search(str(v)) else REDACTED for k, v in conn[key].items()}
        safe[name] = conn
    return safe


def _expand(name: str, key: str, value: Any) -> str:
    """`value` with every `${VAR}` replaced from the environment."""
    if value == REDACTED:
        raise ConfigError(f"mcp_servers.{name}.{key} was not stored with the run: write it as ${{VARIABLE}} "
                          "so it is read from the environment, and resume with that --config")

    def lookup(match: re.Match) -> str:
        if match.group(1) not in os.environ:
            raise ConfigError(f"mcp_servers.{name}.{key} refers to ${{{match.group(1)}}}, which is not set "
                              "in the environment")
        return os.environ[match.group(1)]

    return SECRET_REFERENCE.sub(lookup, str(value))


def _fill(value: str, workspace: str) -> str:
    return value.replace("{python}", sys.executable).replace("{workspace}", workspace)


def connections(servers: dict[str, dict[str, Any]], allowed_paths: list[str], workspace: str = "") -> dict[str, dict[str, Any]]:
    """Adapter connection settings: disabled servers dropped, `{python}` and `{workspace}` filled
    in, `${VAR}` references read from the environment, and the run's readable paths passed on."""
    out = {}
    for name, raw in servers.items():
        if raw.get("enabled", True) is False:
            continue
        conn = {k: v for k, v in raw.items() if k not in OWN_KEYS}
        transport = conn.setdefault("transport", "stdio")
        for key in ("env", "headers"):
            if isinstance(conn.get(key), dict):
                conn[key] = {var: _expand(name, f"{key}.{var}", value) for var, value in conn[key].items()}
        if conn.get("url"):
            conn["url"] = _expand(name, "url", conn["url"])
        if transport == "stdio":
            if not conn.get("command"):
                raise ConfigError(f"mcp_servers.{name} has no command: give the program that starts the server")
            conn["command"] = _fill(conn["command"], workspace)
            conn["args"] = [_expand(name, "args", _fill(str(arg), workspace)) for arg in conn.get("args", [])]
            # Stdio servers get the SDK's minimal environment (no secrets) plus what is set here.
            conn["env"] = {**conn.get("env", {}), "MEMENTO_ALLOWED_PATHS": json.dumps(allowed_paths)}
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


class _ServerSession:
    """One server's session, opened and held by a task of its own on the loop."""

    def __init__(self, name: str, connection: dict[str, Any], allowed_tools: list[str] | None) -> None:
        self.name = name
        self.connection = connection
        self.allowed_tools = allowed_tools
        self.tools: dict[str, BaseTool] = {}
        self.restarts = 0
        self.failed = False
        self._closing: asyncio.Event | None = None
        self._holder: asyncio.Task | None = None

    async def start(self) -> None:
        self._closing = asyncio.Event()
        opened: asyncio.Future = asyncio.get_running_loop().create_future()
        self._holder = asyncio.create_task(self._hold(opened, self._closing))
        try:
            await asyncio.wait_for(opened, OPEN_TIMEOUT_S)
        except TimeoutError:
            await self.stop()
            raise ToolServerError(f"MCP server {self.name!r} did not start within {OPEN_TIMEOUT_S:g} s: "
                                  f"check mcp_servers.{self.name}") from None

    async def _hold(self, opened: asyncio.Future, closing: asyncio.Event) -> None:
        client = MultiServerMCPClient({self.name: self.connection})
        try:
            async with AsyncExitStack() as stack:
                session = await stack.enter_async_context(client.session(self.name))
                tools = await load_mcp_tools(session, server_name=self.name)
                allowed = self.allowed_tools
                self.tools = {t.name: t for t in tools if allowed is None or t.name in allowed}
                opened.set_result(None)
                await closing.wait()
        except BaseException as exc:  # noqa: BLE001 - a dead server must not take the loop down
            if not opened.done():
                opened.set_exception(ToolServerError(
                    f"cannot start MCP server {self.name!r}: {type(exc).__name__}: {exc}: check mcp_servers.{self.name}"))
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def stop(self) -> None:
        if self._closing is not None:
            self._closing.set()
        if self._holder is not None:
            await asyncio.wait({self._holder}, timeout=OPEN_TIMEOUT_S)
            if not self._holder.done():
                self._holder.cancel()
        self._holder = self._closing = None

    async def restart(self) -> None:
        await self.stop()
        self.restarts += 1
        await self.start()


class Toolbox:
    """Sessions to the configured MCP servers for one run, and calls to their tools."""

    def __init__(self, servers: dict[str, dict[str, Any]], allowed_paths: list[str] | None = None,
                 workspace: str = "") -> None:
        conns = connections(servers, allowed_paths or [], workspace)
        self._servers = [_ServerSession(name, conn, servers[name].get("tools")) for name, conn in conns.items()]
        self._loop = _Loop.get()
        self._opened = False
        self.last_used = time.monotonic()

    def _run(self, coro: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=timeout)

    def open(self) -> "Toolbox":
        async def start_all() -> None:
            results = await asyncio.gather(*(s.start() for s in self._servers), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                await asyncio.gather(*(s.stop() for s in self._servers))
                raise errors[0]

        self._run(start_all(), OPEN_TIMEOUT_S + 5)
        self._opened = True
        seen: dict[str, str] = {}
        for server in self._servers:
            for tool in server.tools:
                if tool in seen:
                    self.close()
                    raise ConfigError(f"tool {tool!r} is offered by both mcp_servers.{seen[tool]} and "
                                      f"mcp_servers.{server.name}: list the one to keep in a server's `tools`")
                seen[tool] = server.name
        return self

    __enter__ = open

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._opened:
            return
        self._opened = False

        async def stop_all() -> None:
            await asyncio.gather(*(s.stop() for s in self._servers))

        self._run(stop_all(), OPEN_TIMEOUT_S + 5)

    @property
    def tools(self) -> list[BaseTool]:
        return [tool for server in self._servers for tool in server.tools.values()]

    def _server_of(self, name: str) -> _ServerSession | None:
        return next((s for s in self._servers if name in s.tools), None)

    def call(self, tool_call: dict[str, Any], max_chars: int) -> ToolMessage:
        """Run one tool call; failures come back as an error ToolMessage, never an exception."""
        self.last_used = time.monotonic()
        name, call_id = tool_call["name"], tool_call["id"]

        def failure(text: str) -> ToolMessage:
            return ToolMessage(content=text, tool_call_id=call_id, name=name, status="error")

        server = self._server_of(name)
        if server is None:
            return failure(f"unknown tool {name!r}")
        for attempt in range(2):
            if server.failed:
                return failure(f"tool {name} is unavailable: its server {server.name!r} crashed again after a restart")
            try:
                message = self._run(server.tools[name].ainvoke({**tool_call, "type": "tool_call"}), CALL_TIMEOUT_S)
                break
            except ValidationError as exc:
                return failure(f"invalid arguments for {name}: {' '.join(str(exc).split())[:500]}")
            except Exception as exc:  # the server died, hung or dropped the connection
                if attempt == 0 and server.restarts == 0:
                    try:
                        self._run(server.restart(), OPEN_TIMEOUT_S + 5)
                        continue
                    except Exception:  # noqa: BLE001 - reported below as a failed tool
                        pass
                server.failed = True
                return failure(f"tool {name} failed: its server {server.name!r} stopped answering "
                               f"({type(exc).__name__}); it was restarted once already")
        text = message.text if isinstance(message, ToolMessage) else str(message)
        if len(text) > max_chars:
            text = text[:max_chars] + f"\n[truncated: {len(text) - max_chars} more characters]"
        return ToolMessage(content=text, tool_call_id=call_id, name=name, status=getattr(message, "status", "success"))


class ToolboxPool:
    """Open toolboxes by run id: opened on a run's first subtask, closed when the run ends, or
    when idle for `idle_close_s` (a run that was killed or abandoned), or at exit."""

    def __init__(self, idle_close_s: float = IDLE_CLOSE_S) -> None:
        self.idle_close_s = idle_close_s
        self._boxes: dict[str, Toolbox] = {}
        self._opening: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._reaper: threading.Thread | None = None

    def acquire(self, run_id: str, make: Callable[[], Toolbox]) -> Toolbox:
        with self._lock:
            opening = self._opening.setdefault(run_id, threading.Lock())
        with opening:  # one run's toolbox is opened once, even if asked for twice at the same time
            with self._lock:
                box = self._boxes.get(run_id)
            if box is None:
                box = make().open()
                with self._lock:
                    self._boxes[run_id] = box
                    if self._reaper is None:
                        self._reaper = threading.Thread(target=self._reap, name="memento-mcp-reaper", daemon=True)
                        self._reaper.start()
        box.last_used = time.monotonic()
        return box

    def release(self, run_id: str | None) -> None:
        with self._lock:
            box = self._boxes.pop(run_id, None) if run_id else None
            self._opening.pop(run_id, None)
        if box is not None:
            box.close()

    def open_runs(self) -> list[str]:
        with self._lock:
            return list(self._boxes)

    def close_all(self) -> None:
        for run_id in self.open_runs():
            self.release(run_id)

    def _reap(self) -> None:
        while True:
            time.sleep(min(30.0, self.idle_close_s / 2))
            now = time.monotonic()
            with self._lock:
                if not self._boxes:
                    self._reaper = None  # decided under the lock, so `acquire` starts a new one
                    return
                idle = [run for run, box in self._boxes.items() if now - box.last_used > self.idle_close_s]
            for run_id in idle:
                self.release(run_id)


TOOLBOXES = ToolboxPool()
atexit.register(TOOLBOXES.close_all)
