"""Run Python and shell commands in a per-run workspace, and manage its files, over MCP.

The workspace is the calling run's, sent by memento's client with each call (`memento/run` in the
request's `_meta`), so one server serves every run in a process and each run works in its own
folder; without it (a standalone server), `--workspace` or a new temporary folder. Runs are
serialised: the end-of-run sweep kills every process the server started.

Limits (wall-clock, CPU time, memory, processes, output size, file size) apply to every run;
the environment is scrubbed of secrets; file paths are confined to the workspace. A run that
hits a limit ends with a tool error saying which, and the server keeps answering.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import tempfile
import threading
from pathlib import Path

import anyio
from mcp.server.fastmcp import Context, FastMCP

from memento.mcp_servers._run import add_transport_options, client_identity, over_http, run_scope, run_server
from memento.mcp_servers.sandbox import BACKENDS, Isolation, Limits, RunResult, Sandbox, SandboxError, become_subreaper
from memento.mcp_servers.workspace import list_beneath, open_beneath, read_beneath, relative_parts, workspace_owner

MAX_READ_CHARS = 50_000
MAX_WRITE_BYTES = 5_000_000
MAX_LISTED = 500
MAX_LIST_DEPTH = 32
MAX_SANDBOXES = 64  # workspaces a server keeps ready; an older one is dropped (if empty, removed)

server = FastMCP("memento-code", log_level="WARNING",
                 instructions="Run Python or shell commands in a workspace folder, and read or write its files.")


class Settings:
    """The server's sandbox settings, and one sandbox per workspace it has been asked to use."""

    limits = Limits()
    user: str | None = "nobody"
    python: str | None = None
    isolation: Isolation | None = None  # chosen at start (or at the first call, used as a library)
    default_workspace: Path | None = None
    default_is_temporary = False  # a folder this server made, empty, at its start: no one else's files
    workspace_roots: list[str] = []  # where workspaces named by calls may be
    owners: dict[str, str] = {}  # over HTTP: workspace -> its owner, as recorded beside it (`workspace_owner`)
    sandboxes: dict[str, Sandbox] = {}
    lock = threading.Lock()


def sandbox(ctx: Context | None = None) -> Sandbox:
    """The calling run's sandbox (its workspace from the request), else the server's default.

    Over HTTP a workspace belongs to the client (token holder) that first used it: another
    client's call naming it is refused, so no one runs code or writes files in someone else's.
    The owner is recorded on disk beside the workspace, so a restart does not free it; a
    workspace that holds files but has no record is refused to every client."""
    requested = run_scope(ctx).get("workspace") if ctx is not None else None
    remote = ctx is not None and over_http(ctx)
    with Settings.lock:
        if isinstance(requested, str) and requested:
            workspace = allowed_workspace(requested)
        else:
            if Settings.default_workspace is None:  # used as a library or under a bare `mcp` runner
                Settings.default_workspace = Path(tempfile.mkdtemp(prefix="memento-workspace-"))
                Settings.default_is_temporary = True
            workspace = Settings.default_workspace
        key = str(workspace)
        if remote:
            client = client_identity(ctx) or "(no identity)"
            owner = Settings.owners.get(key)
            if owner is None:
                owner = Settings.owners[key] = recorded_owner(workspace, client)
            if owner != client:
                raise PermissionError(f"workspace {requested or key} belongs to another client of this server")
        if Settings.isolation is None:
            Settings.isolation = Isolation.choose("auto", Settings.user)
        if key not in Settings.sandboxes:
            Settings.sandboxes[key] = Sandbox(workspace, Settings.limits, user=Settings.user, python=Settings.python,
                                              run_lock=_RUN_LOCK, isolation=Settings.isolation)
        Settings.sandboxes[key] = Settings.sandboxes.pop(key)  # most recently used last
        while len(Settings.sandboxes) > MAX_SANDBOXES:  # a long-lived server serves many runs
            old, box = next(iter(Settings.sandboxes.items()))
            del Settings.sandboxes[old]
            box.remove_if_empty(Path(old))
        return Settings.sandboxes[key]


def recorded_owner(workspace: Path, client: str) -> str:
    """The owner of `workspace` from its record beside it (ROOT/.memento-owners/NAME), or
    `client`, recorded now, for a workspace that holds nothing yet."""
    if Settings.default_is_temporary and workspace == Settings.default_workspace:
        return client  # made empty by this process at its start: its first client is its owner
    workspace = Path(os.path.abspath(workspace))
    return workspace_owner(workspace.parent, workspace.name, client)


def allowed_workspace(requested: str) -> Path:
    """A workspace named by a call, accepted only as a folder directly inside a `--workspace-root`
    (or as the server's own `--workspace`): the server, perhaps root, makes the folder and gives it
    to the sandbox user, so a caller must not be able to name any other folder of the host."""
    path = Path(requested)
    if Settings.default_workspace is not None and path == Settings.default_workspace:
        return path
    lexical = os.path.normpath(requested)
    if (path.is_absolute() and lexical == requested and path.name not in ("", ".", "..")
            and any(os.path.normpath(root) == os.path.dirname(lexical) for root in Settings.workspace_roots)):
        if path.name.startswith("."):
            # The server's own names there (its owner records) begin with '.'; a run id never does.
            raise PermissionError(f"workspace {requested} refused: a workspace's name may not begin with '.'")
        return path
    if not Settings.workspace_roots:
        raise PermissionError(f"workspace {requested} refused: this server takes no workspace from calls "
                              "(start it with --workspace-root DIR)")
    raise PermissionError(f"workspace {requested} refused: a workspace must be a folder directly inside "
                          f"{' or '.join(Settings.workspace_roots)}")


# One run at a time across all workspaces: a run's end sweeps every descendant of the server.
_RUN_LOCK = threading.Lock()


def remove_empty_workspaces() -> None:
    """At exit: drop the workspaces that runs left empty (and the links to them, if moved)."""
    with Settings.lock:
        for requested, box in Settings.sandboxes.items():
            box.remove_if_empty(Path(requested))


def _report(result: RunResult) -> str:
    parts = [f"exit code: {result.returncode}", f"stdout:\n{result.stdout}" if result.stdout else "stdout: (empty)"]
    if result.stderr:
        parts.append(f"stderr:\n{result.stderr}")
    text = "\n".join(parts)
    if result.stopped:
        # A tool error, so the executor sees the run failed and why; partial output is kept.
        raise RuntimeError(f"run stopped: {result.stopped}.\n{text}")
    return text


@server.tool()
async def run_python(code: str, timeout_s: float | None = None, ctx: Context | None = None) -> str:
    """Run Python code in the workspace (the working directory). Returns exit code, stdout and stderr."""
    box = sandbox(ctx)
    # The code goes in on standard input, never through a file the sandboxed code could swap.
    return _report(await anyio.to_thread.run_sync(box.run, [box.python, "-I", "-"], timeout_s, code.encode("utf-8")))


@server.tool()
async def run_shell(command: str, timeout_s: float | None = None, ctx: Context | None = None) -> str:
    """Run a shell command (/bin/sh -c) in the workspace. Returns exit code, stdout and stderr."""
    box = sandbox(ctx)
    return _report(await anyio.to_thread.run_sync(box.run, ["/bin/sh", "-c", command], timeout_s))


@server.tool()
def list_files(path: str = ".", ctx: Context | None = None) -> str:
    """List the files and folders under a workspace folder (folders end with /)."""
    entries, cut = list_beneath(sandbox(ctx).workspace, path, MAX_LISTED, max_depth=MAX_LIST_DEPTH)
    if cut:
        entries.append(f"[listing stopped: at most {MAX_LISTED} entries, {MAX_LIST_DEPTH} folders deep]")
    return "\n".join(entries) or "(empty)"


@server.tool()
def read_file(path: str, max_chars: int = MAX_READ_CHARS, ctx: Context | None = None) -> str:
    """Read a text file from the workspace; output is capped at max_chars and truncation is stated."""
    limit = max(1, min(max_chars, MAX_READ_CHARS))
    # Text is at most 4 bytes a character; the walk refuses links, FIFOs and devices on the way.
    data = read_beneath(sandbox(ctx).workspace, relative_parts(path), 4 * limit)
    text = data.decode("utf-8", errors="replace")
    return text if len(text) <= limit else text[:limit] + f"\n[truncated at {limit} characters]"


@server.tool()
def write_file(path: str, content: str, ctx: Context | None = None) -> str:
    """Write a text file in the workspace, creating folders as needed."""
    box = sandbox(ctx)
    parts = relative_parts(path)
    data = content.encode("utf-8")
    if len(data) > MAX_WRITE_BYTES:
        raise ValueError(f"content is {len(data)} bytes; at most {MAX_WRITE_BYTES} may be written")

    def own_folder(folder: int, name: str) -> None:
        if box.uid is not None:
            os.chown(name, box.uid, box.gid, dir_fd=folder, follow_symlinks=False)

    fd = open_beneath(box.workspace, parts, os.O_WRONLY | os.O_CREAT, 0o644, make_folders=own_folder)
    with os.fdopen(fd, "wb") as handle:
        os.ftruncate(fd, 0)
        handle.write(data)
        if box.uid is not None:
            os.fchown(fd, box.uid, box.gid)
    return f"wrote {len(data)} bytes to {'/'.join(parts)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workspace", help="the workspace for calls that name none (default: a new temporary folder)")
    parser.add_argument("--workspace-root", action="append", default=[], metavar="DIR",
                        help="accept a workspace named by a call only as a folder directly inside DIR (repeatable); "
                             "memento passes DATA_DIR/workspaces")
    defaults = Limits()
    parser.add_argument("--timeout", type=float, default=defaults.wall_s, help="wall-clock seconds per run")
    parser.add_argument("--cpu", type=int, default=defaults.cpu_s, help="CPU seconds per process of a run")
    parser.add_argument("--memory-mb", type=int, default=defaults.memory_mb,
                        help="memory for a run's processes together (and address space per process)")
    parser.add_argument("--processes", type=int, default=defaults.processes, help="processes a run may start")
    parser.add_argument("--max-output", type=int, default=defaults.output_bytes, help="stdout+stderr bytes kept")
    parser.add_argument("--file-mb", type=int, default=defaults.file_mb, help="largest file a run may write")
    parser.add_argument("--tmp-mb", type=int, default=defaults.tmp_mb, help="size of the private /tmp and /dev/shm")
    parser.add_argument("--disk-mb", type=int, default=defaults.disk_mb, help="what the workspace may hold")
    parser.add_argument("--isolation", choices=BACKENDS, default="auto",
                        help="bwrap (namespaces), rlimit (resource limits only), or auto: bwrap where it can start")
    parser.add_argument("--network", action="store_true", help="give code the host's network (bwrap; off by default)")
    parser.add_argument("--sandbox-user", default="nobody",
                        help="when run as root, run code as this user ('' to keep root: no process limit)")
    parser.add_argument("--python", help="interpreter for run_python (default: one the sandbox user may run)")
    add_transport_options(parser)
    args = parser.parse_args()
    Settings.limits = Limits(wall_s=args.timeout, cpu_s=args.cpu, memory_mb=args.memory_mb, processes=args.processes,
                             output_bytes=args.max_output, file_mb=args.file_mb, tmp_mb=args.tmp_mb,
                             disk_mb=args.disk_mb)
    Settings.user, Settings.python = args.sandbox_user or None, args.python
    try:
        Settings.isolation = Isolation.choose(args.isolation, Settings.user, network=args.network)
    except SandboxError as exc:
        parser.exit(2, f"memento-code: {exc}\n")
    # On standard error, which memento passes through: the log says how code is isolated.
    print(f"memento-code: sandbox {Settings.isolation.describe()}", file=sys.stderr, flush=True)
    Settings.default_workspace = Path(args.workspace) if args.workspace else None
    Settings.workspace_roots = [os.path.abspath(root) for root in args.workspace_root if root]
    if Settings.default_workspace is not None:
        sandbox()  # checks the settings (user, interpreter) before the first call
    become_subreaper()
    atexit.register(remove_empty_workspaces)
    try:
        run_server(server, args)
    finally:
        remove_empty_workspaces()


if __name__ == "__main__":
    main()
