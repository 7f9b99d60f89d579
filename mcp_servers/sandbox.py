"""Run a command with limits: wall-clock and CPU time, memory, processes, output and file size.

The child starts through a small launcher (`python -c LAUNCHER`) that sets its resource limits
and then `exec`s the command, so no `preexec_fn` runs in this (threaded) server. When the
server runs as root, the child runs as an unprivileged user (default `nobody`), because the
kernel does not apply the process limit to root. The child gets a scrubbed environment and its
own process group. On Linux the server is a child subreaper, so every process a run starts,
even one that left its group with `setsid` and outlived its parent, stays a descendant of the
server, and all of them are killed when the run ends.

The server touches workspace files that the sandboxed code may have replaced with symlinks,
so it never follows one there: ownership changes use `follow_symlinks=False` and files are
opened with `O_NOFOLLOW`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

LAUNCHER = """
import os, resource, sys
cpu, mem, nproc, fsize = (int(v) for v in sys.argv[1:5])
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
os.execvp(sys.argv[5], sys.argv[5:])
"""


@dataclass(frozen=True)
class Limits:
    wall_s: float = 30.0
    cpu_s: int = 20
    memory_mb: int = 1024
    processes: int = 32
    output_bytes: int = 64_000
    file_mb: int = 100


@dataclass
class RunResult:
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    stopped: str | None  # why the run was stopped early, if it was


class SandboxError(RuntimeError):
    pass


def _executable_by_others(path: str | Path) -> bool:
    """Whether a user who is neither owner nor group may reach (and run) `path`."""
    real = Path(os.path.realpath(path))
    if not real.stat().st_mode & stat.S_IXOTH:
        return False
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in real.parents)


def _naming_key(base: Path) -> bytes:
    """The secret that names workspaces under `base`: made once, readable by root only."""
    path = base / ".naming-key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))
    except FileExistsError:
        pass
    for _ in range(50):  # another server may have made it a moment ago and still be writing it
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if info.st_uid != os.geteuid() or info.st_mode & 0o077 or not stat.S_ISREG(info.st_mode):
                raise SandboxError(f"{path} is not a private file of this user: remove it")
            key = handle.read(64)
        if len(key) >= 32:
            return key
        time.sleep(0.02)
    raise SandboxError(f"{path} is damaged: remove it")


def reachable_workspace(workspace: Path) -> Path:
    """A workspace the sandbox user can reach. Under a private folder (a root user's home, a
    0700 temp dir) the real folder goes to the system temp dir, and `workspace` becomes a link
    to it, so every server that was given the workspace path still finds the same files."""
    workspace.mkdir(parents=True, exist_ok=True)
    if _executable_by_others(workspace.parent):
        return workspace.resolve()
    base = Path(tempfile.gettempdir()) / "memento-sandbox"
    try:
        base.mkdir(mode=0o711)  # others may enter a workspace they know, not list them
    except FileExistsError:
        info = base.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
            raise SandboxError(f"{base} exists but is not a folder owned by root and writable only by it: "
                               "remove it, or give the workspace a folder others may traverse") from None
    # The name is a keyed hash of the workspace path as given (not as a link resolves it): the
    # same workspace finds the same folder after a restart or a resume, and code that knows
    # another run's path cannot work out its folder's name without the root-only key.
    real = base / hmac.new(_naming_key(base), str(workspace.absolute()).encode(), hashlib.sha256).hexdigest()[:32]
    real.mkdir(mode=0o755, exist_ok=True)
    if real.is_symlink():
        raise SandboxError(f"{real} is a symlink: refusing to use it as a workspace")
    if not workspace.is_symlink():
        for item in workspace.iterdir():
            shutil.move(str(item), real / item.name)
        workspace.rmdir()
        workspace.symlink_to(real, target_is_directory=True)
    return real


class Sandbox:
    """Runs commands in one workspace folder under fixed limits."""

    def __init__(self, workspace: Path, limits: Limits, user: str | None = "nobody", python: str | None = None,
                 run_lock: threading.Lock | None = None) -> None:
        if os.name != "posix":
            raise SandboxError("the code sandbox needs a POSIX system (Linux or macOS)")
        self.limits = limits
        self._run_lock = run_lock or threading.Lock()
        self.uid = self.gid = None
        if os.geteuid() == 0 and user:
            try:
                entry = pwd.getpwnam(user)
            except KeyError:
                raise SandboxError(f"sandbox user {user!r} does not exist: create it or pass --sandbox-user") from None
            self.uid, self.gid = entry.pw_uid, entry.pw_gid
        self.python = python or self._default_python()
        self.workspace = reachable_workspace(workspace) if self.uid is not None else workspace.resolve()
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.own(self.workspace)

    def remove_if_empty(self, link: Path) -> None:
        """At exit: drop a workspace the run left empty (and the link to it, if it was moved)."""
        try:
            self.workspace.rmdir()  # fails, and keeps everything, unless the folder is empty
        except OSError:
            return
        if link.is_symlink():
            link.unlink()

    def _default_python(self) -> str:
        if self.uid is None or _executable_by_others(sys.executable):
            return sys.executable
        for candidate in ("/usr/bin/python3", "/usr/local/bin/python3", shutil.which("python3")):
            if candidate and os.path.exists(candidate) and _executable_by_others(candidate):
                return candidate
        raise SandboxError("no Python the sandbox user may run: pass --python PATH")

    def own(self, path: Path) -> None:
        """Give a workspace path to the sandbox user, so code can change what the tools wrote."""
        if self.uid is not None:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)

    def _environment(self) -> dict[str, str]:
        # Nothing is inherited: no API keys, tokens or proxies reach the code.
        return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.workspace), "TMPDIR": str(self.workspace),
                "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
                "MPLBACKEND": "Agg", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}

    def _process_allowance(self) -> int:
        # RLIMIT_NPROC counts every thread of every process of the user (memento's own, when it
        # is not root), so allow what the user already runs plus the run's share.
        uid = self.uid if self.uid is not None else os.getuid()
        running = 0
        for proc in psutil.process_iter(["uids", "num_threads"]):
            try:
                if proc.info["uids"].real == uid:
                    running += proc.info["num_threads"] or 1
            except (psutil.Error, TypeError, AttributeError):
                continue
        return running + self.limits.processes

    def run(self, argv: list[str], wall_s: float | None = None, stdin: bytes | None = None) -> RunResult:
        # One run at a time (a lock shared by every sandbox of a server): the end-of-run sweep
        # kills every descendant of the server.
        with self._run_lock:
            return self._run(argv, wall_s, stdin)

    def _run(self, argv: list[str], wall_s: float | None, stdin: bytes | None) -> RunResult:
        limits = self.limits
        wall = min(wall_s or limits.wall_s, limits.wall_s)
        launcher = [self.python, "-I", "-c", LAUNCHER, str(limits.cpu_s), str(limits.memory_mb * 2**20),
                    str(self._process_allowance()), str(limits.file_mb * 2**20), *argv]
        started = time.monotonic()
        proc = subprocess.Popen(launcher, cwd=self.workspace, env=self._environment(),
                                stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0,
                                user=self.uid, group=self.gid, extra_groups=[] if self.uid is not None else None)
        outputs = {"stdout": bytearray(), "stderr": bytearray()}
        total = [0]
        overflow = threading.Event()
        lock = threading.Lock()

        def pump(stream, name: str) -> None:
            while chunk := stream.read1(65536):
                with lock:
                    room = limits.output_bytes - total[0]
                    if room > 0:
                        outputs[name] += chunk[:room]
                    total[0] += len(chunk)
                    if total[0] > limits.output_bytes:
                        overflow.set()
                        break
            stream.close()

        def feed() -> None:
            try:
                proc.stdin.write(stdin)
                proc.stdin.close()
            except OSError:  # the program ended or closed its input first
                pass

        readers = [threading.Thread(target=pump, args=(proc.stdout, "stdout"), daemon=True),
                   threading.Thread(target=pump, args=(proc.stderr, "stderr"), daemon=True)]
        if stdin is not None:
            readers.append(threading.Thread(target=feed, daemon=True))
        for reader in readers:
            reader.start()
        stopped = None
        while proc.poll() is None:
            if overflow.is_set():
                stopped = f"output limit of {limits.output_bytes} bytes reached"
                break
            if time.monotonic() - started > wall:
                stopped = f"wall-clock limit of {wall:g} s reached"
                break
            time.sleep(0.02)
        self._kill_all(proc)
        for reader in readers:
            reader.join(timeout=5)
        if overflow.is_set() and stopped is None:
            stopped = f"output limit of {limits.output_bytes} bytes reached"
        result = RunResult(proc.returncode, outputs["stdout"].decode("utf-8", "replace"),
                           outputs["stderr"].decode("utf-8", "replace"), time.monotonic() - started, stopped)
        if result.stopped is None:
            result.stopped = self._limit_hit(result)
        return result

    def _limit_hit(self, result: RunResult) -> str | None:
        code = result.returncode
        if code == -signal.SIGXCPU or (code == -signal.SIGKILL and result.wall_s >= self.limits.cpu_s):
            return f"CPU-time limit of {self.limits.cpu_s} s reached"
        if "MemoryError" in result.stderr or "Cannot allocate memory" in result.stderr:
            return f"memory limit of {self.limits.memory_mb} MB reached"
        if code == -signal.SIGXFSZ:
            return f"file-size limit of {self.limits.file_mb} MB reached"
        return None

    @staticmethod
    def _kill_all(proc: subprocess.Popen) -> None:
        """Kill the run's process group and every other descendant of this server."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
        # With the subreaper set, orphans (`setsid`, double forks) are our children: sweep them
        # until none is left. The server starts no processes but runs, so all of them are the run's.
        me = psutil.Process()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            family = [p for p in me.children(recursive=True) if p.pid != proc.pid]
            if not family:
                break
            for child in family:
                try:
                    child.kill()
                except psutil.Error:
                    pass
            for child in family:
                try:
                    os.waitpid(child.pid, os.WNOHANG)
                except (ChildProcessError, OSError):
                    pass
            time.sleep(0.02)


def become_subreaper() -> bool:
    """Make orphaned descendants children of this process (Linux); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    pr_set_child_subreaper = 36
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) == 0
