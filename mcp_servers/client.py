"""The executor's side of MCP: held sessions to the tool servers, shared by every run in a process.

One `SessionPool` per process holds one session per distinct server configuration. A run
leases the sessions it needs through a `Toolbox` and gives them back when it ends; the sessions
stay open for the next run, so a run costs tool calls, not server starts (about 3 s to start
the four built-in servers, 8 ms a call). What belongs to one run (the files it may read, its
code workspace) is not in the server's configuration but travels with every call, in the MCP
request's `_meta` under `memento/run`, which a model cannot set: so one documents server serves
every run, and each call of it sees only that run's files. A server whose configuration names
the run's `{workspace}` cannot be shared; it is started for its run and closed with it.

MCP tools are async while the nodes are sync (the same graph runs under `invoke`, `ainvoke` and
`langgraph dev`), so the sessions live on a private event loop in a daemon thread: one task per
server opens its session and holds it until closed, because anyio requires a session to be
closed by the task that opened it. A server that crashes is restarted once per run; if it fails
again its tools report failure for the rest of that run, and the next run tries again. Tool
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
from datetime import timedelta
from typing import Any, Callable

from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.tools import load_mcp_tools

from memento.graph.context import ConfigError
from memento.graph.errors import RunError
from memento.mcp_servers._run import RUN_SCOPE_KEY

OPEN_TIMEOUT_S = 60.0
CALL_TIMEOUT_S = 300.0
IDLE_CLOSE_S = 900.0
SECRET_REFERENCE = re.compile(r"\$\{(\w+)\}")
REDACTED = "<redacted>"
WORKSPACE = "{workspace}"
WORKSPACES = "{workspaces}"
# Keys of a server's settings that are ours, not langchain-mcp-adapters'.
OWN_KEYS = ("enabled", "tools")


class ToolServerError(RunError, RuntimeError):
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
    # `{workspaces}`: the folder of every run's workspace (DATA_DIR/workspaces), not one run's.
    workspaces = os.path.dirname(workspace) if workspace else ""
    return value.replace("{python}", sys.executable).replace(WORKSPACE, workspace).replace(WORKSPACES, workspaces)


def names_the_workspace(server: dict[str, Any]) -> bool:
    """Whether a server's settings use the run's `{workspace}`, which ties the server to one run."""
    return WORKSPACE in json.dumps(server)


def connections(servers: dict[str, dict[str, Any]], workspace: str = "") -> dict[str, dict[str, Any]]:
    """Adapter connection settings: disabled servers dropped, `{python}` and `{workspace}` filled
    in, and `${VAR}` references read from the environment."""
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
            conn["env"] = dict(conn.get("env") or {})  # the SDK's minimal environment (no secrets) plus these
        elif not conn.get("url"):
            raise ConfigError(f"mcp_servers.{name} uses {transport} but has no url")
        out[name] = conn
    return out


class _Loop:
    """One daemon thread running an event loop, shared by all sessions in the process."""

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


def _run(coro: Any, timeout: float) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, _Loop.get()).result(timeout=timeout)


def _text_of(result: Any) -> str:
    """The readable content of an MCP tool result."""
    parts = []
    for block in result.content or []:
        if getattr(block, "type", None) == "text":
            parts.append(block.text)
        elif getattr(block, "type", None) == "resource" and hasattr(block.resource, "text"):
            parts.append(block.resource.text)
        else:
            parts.append(f"[{getattr(block, 'type', 'unknown')} content not shown]")
    if not parts and getattr(result, "structuredContent", None) is not None:
        parts.append(json.dumps(result.structuredContent, ensure_ascii=False))
    return "\n".join(parts)


def _timed_out(exc: BaseException) -> bool:
    """Whether a failed call ran out of time (as opposed to losing its server)."""
    if isinstance(exc, TimeoutError):  # concurrent.futures.TimeoutError is TimeoutError since 3.11
        return True
    error = getattr(exc, "error", None)  # mcp's McpError carries the JSON-RPC error
    return getattr(error, "code", None) == 408 or "Timed out while waiting" in str(exc)


class ServerSession:
    """One server's session, opened and held by a task of its own on the loop."""

    def __init__(self, key: str, name: str, connection: dict[str, Any], allowed_tools: list[str] | None,
                 private: bool) -> None:
        self.key = key
        self.name = name
        self.connection = connection
        self.allowed_tools = allowed_tools
        self.private = private  # tied to one run (its settings name the workspace): closed with it
        self.tools: dict[str, BaseTool] = {}
        self.session: Any = None
        self.generation = 0  # counts (re)starts, so concurrent failures restart it once
        self.users = 0
        self.last_used = time.monotonic()
        self.starts = 0
        self._closing: asyncio.Event | None = None
        self._holder: asyncio.Task | None = None
        self._restart_lock: asyncio.Lock | None = None

    @property
    def alive(self) -> bool:
        return self._holder is not None and not self._holder.done() and self.session is not None

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
        self.generation += 1
        self.starts += 1

    async def _hold(self, opened: asyncio.Future, closing: asyncio.Event) -> None:
        client = MultiServerMCPClient({self.name: self.connection})
        try:
            async with AsyncExitStack() as stack:
                session = await stack.enter_async_context(client.session(self.name))
                tools = await load_mcp_tools(session, server_name=self.name)
                allowed = self.allowed_tools
                self.tools = {t.name: t for t in tools if allowed is None or t.name in allowed}
                self.session = session
                opened.set_result(None)
                await closing.wait()
        except BaseException as exc:  # noqa: BLE001 - a dead server must not take the loop down
            if not opened.done():
                opened.set_exception(ToolServerError(
                    f"cannot start MCP server {self.name!r}: {type(exc).__name__}: {exc}: check mcp_servers.{self.name}"))
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self.session = None

    async def stop(self) -> None:
        if self._closing is not None:
            self._closing.set()
        if self._holder is not None:
            await asyncio.wait({self._holder}, timeout=OPEN_TIMEOUT_S)
            if not self._holder.done():
                self._holder.cancel()
        self._holder = self._closing = None
        self.session = None

    async def ensure_started(self) -> None:
        if self._restart_lock is None:
            self._restart_lock = asyncio.Lock()
        async with self._restart_lock:
            if not self.alive:
                await self.stop()
                await self.start()

    async def restart(self, seen_generation: int) -> None:
        """Restart, unless another caller already did since `seen_generation`."""
        if self._restart_lock is None:
            self._restart_lock = asyncio.Lock()
        async with self._restart_lock:
            if self.generation != seen_generation and self.alive:
                return
            await self.stop()
            await self.start()

    async def call(self, name: str, args: dict[str, Any], meta: dict[str, Any]) -> Any:
        if self.session is None:
            raise ConnectionError(f"MCP server {self.name!r} is not running")
        return await self.session.call_tool(name, args, read_timeout_seconds=timedelta(seconds=CALL_TIMEOUT_S),
                                            meta=meta)


class SessionPool:
    """Held sessions by server configuration. Shared sessions stay open between runs and close
    when no run has used them for `idle_close_s`, or at exit; private ones close with their run."""

    def __init__(self, idle_close_s: float = IDLE_CLOSE_S) -> None:
        self.idle_close_s = idle_close_s
        self._sessions: dict[str, ServerSession] = {}
        self._lock = threading.Lock()
        self._reaper: threading.Thread | None = None

    def lease(self, servers: dict[str, dict[str, Any]], workspace: str) -> list[ServerSession]:
        """Sessions for the enabled servers, started (or restarted) as needed; each is counted as
        in use until `give_back`."""
        conns = connections(servers, workspace)
        leased = []
        with self._lock:
            for name, conn in conns.items():
                tools = servers[name].get("tools")
                private = names_the_workspace(servers[name])
                key = json.dumps([name, conn, tools, workspace if private else None], sort_keys=True)
                session = self._sessions.get(key)
                if session is None:
                    session = self._sessions[key] = ServerSession(key, name, conn, tools, private)
                session.users += 1
                session.last_used = time.monotonic()
                leased.append(session)
            self._start_reaper()

        async def start_all() -> None:
            results = await asyncio.gather(*(s.ensure_started() for s in leased), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]

        try:
            _run(start_all(), OPEN_TIMEOUT_S + 5)
        except BaseException:
            self.give_back(leased)
            raise
        return leased

    def give_back(self, sessions: list[ServerSession]) -> None:
        closing = []
        with self._lock:
            for session in sessions:
                session.users = max(0, session.users - 1)
                session.last_used = time.monotonic()
                if session.users == 0 and session.private:
                    self._sessions.pop(session.key, None)
                    closing.append(session)
        self._stop(closing)

    def open_sessions(self) -> list[ServerSession]:
        with self._lock:
            return [s for s in self._sessions.values() if s.alive]

    def close_all(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        self._stop(sessions)

    def close_unused(self, folder: str) -> int:
        """Close the sessions no run is using whose server was started for a data folder inside
        `folder` (its `{workspaces}`), when that folder is done with; returns how many."""
        inside = os.path.join(os.path.abspath(folder), "")
        with self._lock:
            done = [s for s in self._sessions.values() if s.users == 0 and any(
                os.path.abspath(str(arg)).startswith(inside) for arg in s.connection.get("args", []))]
            for session in done:
                self._sessions.pop(session.key, None)
        self._stop(done)
        return len(done)

    @staticmethod
    def _stop(sessions: list[ServerSession]) -> None:
        if not sessions:
            return

        async def stop_all() -> None:
            await asyncio.gather(*(s.stop() for s in sessions))

        try:
            _run(stop_all(), OPEN_TIMEOUT_S + 5)
        except (TimeoutError, RuntimeError):  # the loop is gone at interpreter exit: nothing left to stop
            pass

    def _start_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap, name="memento-mcp-sessions", daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        while True:
            time.sleep(min(30.0, self.idle_close_s / 2))
            now = time.monotonic()
            with self._lock:
                if not self._sessions:
                    self._reaper = None  # decided under the lock, so `lease` starts a new one
                    return
                idle = [s for s in self._sessions.values() if s.users == 0 and now - s.last_used > self.idle_close_s]
                for session in idle:
                    self._sessions.pop(session.key, None)
            self._stop(idle)


SESSIONS = SessionPool()
atexit.register(SESSIONS.close_all)


class Toolbox:
    """One run's tools: sessions leased from a pool, and the run's scope (readable files,
    workspace) sent with each call."""

    def __init__(self, servers: dict[str, dict[str, Any]], allowed_paths: list[str] | None = None,
                 workspace: str = "", pool: SessionPool | None = None) -> None:
        connections(servers, workspace)  # configuration errors surface here, before anything starts
        self._server_settings = servers
        self.workspace = workspace
        self.scope = {"allowed_paths": list(allowed_paths or []), "workspace": workspace}
        self._pool = pool or SESSIONS
        self._servers: list[ServerSession] = []
        self._restarted: set[str] = set()
        self._failed: set[str] = set()
        self.last_used = time.monotonic()

    def open(self) -> "Toolbox":
        if self._servers:
            return self
        self._servers = self._pool.lease(self._server_settings, self.workspace)
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
        servers, self._servers = self._servers, []
        if servers:
            self._pool.give_back(servers)

    @property
    def tools(self) -> list[BaseTool]:
        return [tool for server in self._servers for tool in server.tools.values()]

    def _server_of(self, name: str) -> ServerSession | None:
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
        args = tool_call.get("args") or {}
        if not isinstance(args, dict):
            return failure(f"invalid arguments for {name}: give an object of named arguments")
        meta = {RUN_SCOPE_KEY: self.scope}
        for attempt in range(2):
            if server.key in self._failed:
                return failure(f"tool {name} is unavailable: its server {server.name!r} crashed again after a restart")
            generation = server.generation
            try:
                result = _run(server.call(name, args, meta), CALL_TIMEOUT_S + 5)
                break
            except Exception as exc:  # the server died or dropped the connection, or the call took too long
                if _timed_out(exc) and server.alive:
                    # Slow is not dead: a shared server may be busy with other runs' calls, and a
                    # restart would cut those off. The run sees an error and can carry on.
                    return failure(f"tool {name} timed out after {CALL_TIMEOUT_S:g} s; its server {server.name!r} "
                                   "is still running")
                if attempt == 0 and server.key not in self._restarted:
                    if server.generation == generation:  # nobody restarted it since this call began
                        self._restarted.add(server.key)
                    try:
                        _run(server.restart(generation), OPEN_TIMEOUT_S + 5)
                        continue
                    except Exception:  # noqa: BLE001 - reported below as a failed tool
                        pass
                self._failed.add(server.key)
                return failure(f"tool {name} failed: its server {server.name!r} stopped answering "
                               f"({type(exc).__name__}); it was restarted once already")
        text = _text_of(result)
        if len(text) > max_chars:
            text = text[:max_chars] + f"\n[truncated: {len(text) - max_chars} more characters]"
        return ToolMessage(content=text, tool_call_id=call_id, name=name,
                           status="error" if result.isError else "success")


class ToolboxPool:
    """Open toolboxes by run id: opened on a run's first subtask, closed (their sessions given
    back to the pool) when the run ends, or when idle for `idle_close_s` (a run that was killed
    or abandoned), or at exit."""

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
atexit.register(TOOLBOXES.close_all)  # registered after SESSIONS: runs first, giving sessions back
