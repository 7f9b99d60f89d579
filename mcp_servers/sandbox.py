"""Run a command with limits: wall-clock and CPU time, memory, processes, output and file size.

The child starts through a small launcher (`python -c LAUNCHER`) that sets its resource limits
and then `exec`s the command, so no `preexec_fn` runs in this (threaded) server. When the
server runs as root, the child runs as an unprivileged user (default `nobody`), because the
kernel does not apply the process limit to root. The child gets a scrubbed environment, its own
process group, and the whole group (and any descendant that left it) is killed at the end.
"""

from __future__ import annotations

import hashlib
import os
import pwd
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


def reachable_workspace(workspace: Path) -> Path:
    """A workspace the sandbox user can reach. Under a private folder (a root user's home, a
    0700 temp dir) the real folder goes to the system temp dir, and `workspace` becomes a link
    to it, so every server that was given the workspace path still finds the same files."""
    workspace.mkdir(parents=True, exist_ok=True)
    if _executable_by_others(workspace.parent):
        return workspace.resolve()
    base = Path(tempfile.gettempdir()) / "memento-sandbox"
    base.mkdir(exist_ok=True)
    base.chmod(0o711)  # others may enter a workspace they know, not list them
    real = base / hashlib.sha256(str(workspace.resolve()).encode()).hexdigest()[:20]
    real.mkdir(exist_ok=True)
    if not workspace.is_symlink():
        for item in workspace.iterdir():
            shutil.move(str(item), real / item.name)
        workspace.rmdir()
        workspace.symlink_to(real, target_is_directory=True)
    return real


class Sandbox:
    """Runs commands in one workspace folder under fixed limits."""

    def __init__(self, workspace: Path, limits: Limits, user: str | None = "nobody", python: str | None = None) -> None:
        if os.name != "posix":
            raise SandboxError("the code sandbox needs a POSIX system (Linux or macOS)")
        self.limits = limits
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
            os.chown(path, self.uid, self.gid)

    def _environment(self) -> dict[str, str]:
        # Nothing is inherited: no API keys, tokens or proxies reach the code.
        tmp = self.workspace / ".tmp"
        tmp.mkdir(exist_ok=True)
        self.own(tmp)
        return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.workspace), "TMPDIR": str(tmp),
                "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
                "MPLBACKEND": "Agg", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}

    def _process_allowance(self) -> int:
        # RLIMIT_NPROC counts every process of the user, so allow what it already runs plus ours.
        uid = self.uid if self.uid is not None else os.getuid()
        running = 0
        for proc in psutil.process_iter(["uids"]):
            try:
                running += proc.info["uids"].real == uid
            except (psutil.Error, TypeError, AttributeError):
                continue
        return running + self.limits.processes

    def run(self, argv: list[str], wall_s: float | None = None) -> RunResult:
        limits = self.limits
        wall = min(wall_s or limits.wall_s, limits.wall_s)
        launcher = [self.python, "-I", "-c", LAUNCHER, str(limits.cpu_s), str(limits.memory_mb * 2**20),
                    str(self._process_allowance()), str(limits.file_mb * 2**20), *argv]
        started = time.monotonic()
        proc = subprocess.Popen(launcher, cwd=self.workspace, env=self._environment(), stdin=subprocess.DEVNULL,
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

        readers = [threading.Thread(target=pump, args=(proc.stdout, "stdout"), daemon=True),
                   threading.Thread(target=pump, args=(proc.stderr, "stderr"), daemon=True)]
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
        """Kill the process group and every descendant, including any that started its own group."""
        try:
            family = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            family = []
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for child in family:
            try:
                child.kill()
            except psutil.Error:
                pass
        proc.wait()
        # Forks made while we were killing may still be alive in the group: sweep until none is.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.05)
