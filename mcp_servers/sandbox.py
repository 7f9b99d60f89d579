"""Run a command with limits: wall-clock and CPU time, memory, processes, output and file size.

Two backends. **bwrap** (the default on Linux where bubblewrap can start): the command runs in
new mount, PID, IPC, UTS, user and network namespaces; the host's system folders are mounted
read-only, the run's workspace is the only writable host folder, and `/tmp` and `/dev/shm` are
private size-capped tmpfs mounts that vanish with the run; no network unless the server is given
one. **rlimit** (the fallback): the same limits, as resource limits on an ordinary child process.

Either way the child starts through a small launcher (`python -c LAUNCHER`) that sets its
resource limits and then `exec`s the command (bwrap, or the command itself), so no `preexec_fn`
runs in this (threaded) server. When the server runs as root, the child runs as an unprivileged
user (default `nobody`), because the kernel does not apply the process limit to root. Where the
server may create a memory cgroup (root, cgroup v1 or a delegated v2 tree), the whole process
tree of a run is held in one, with the memory limit on the tree; elsewhere the tree's resident
memory is polled and the run stopped when it goes over. The child gets a scrubbed environment
and its own process group. On Linux the server is a child subreaper, so every process a run
starts, even one that left its group with `setsid` and outlived its parent, stays a descendant
of the server, and all of them are killed when the run ends.

The server touches workspace files that the sandboxed code may have replaced with symlinks,
so it never follows one there: ownership changes use `follow_symlinks=False` and files are
opened with `O_NOFOLLOW`.
"""

from __future__ import annotations

import hashlib
import hmac
import math
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
cpu, mem, nproc, fsize, ready = (int(v) for v in sys.argv[1:6])
if ready >= 0:  # wait until the server has put this process in the run's memory cgroup
    os.read(ready, 1)
    os.close(ready)
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
os.execvp(sys.argv[6], sys.argv[6:])
"""

BACKENDS = ("auto", "bwrap", "rlimit")


@dataclass(frozen=True)
class Limits:
    wall_s: float = 30.0
    cpu_s: int = 20
    memory_mb: int = 1024  # the whole run: every process it starts, together
    processes: int = 32
    output_bytes: int = 64_000
    file_mb: int = 100
    tmp_mb: int = 64  # each of the private /tmp and /dev/shm (bwrap)
    disk_mb: int = 1024  # what the workspace may hold after a run's writes


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
            # shutil.move moves (or copies) a link as a link; a name already in the folder
            # (perhaps a link a run planted there) is never moved into or over.
            if os.path.lexists(real / item.name):
                raise SandboxError(f"cannot move {item} into the sandbox folder: {item.name} is already there")
            shutil.move(str(item), real / item.name)
        workspace.rmdir()
        workspace.symlink_to(real, target_is_directory=True)
    return real


# Read-only views of the host that programs commonly need; nothing that holds secrets or state.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = ("/etc/alternatives", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
             "/etc/mime.types", "/etc/ssl", "/etc/ca-certificates", "/etc/pki", "/etc/fonts", "/etc/matplotlibrc")
NETWORK_ETC = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/gai.conf", "/etc/host.conf")


def bwrap_options() -> frozenset[str]:
    """The options this bwrap knows (older releases lack `--disable-userns` and `--size`)."""
    binary = shutil.which("bwrap")
    if binary is None:
        return frozenset()
    if binary not in _BWRAP_OPTIONS:
        try:
            done = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=10)
            text = done.stdout + done.stderr
        except (OSError, subprocess.SubprocessError):
            text = ""
        _BWRAP_OPTIONS[binary] = frozenset(word for word in text.split() if word.startswith("--"))
    return _BWRAP_OPTIONS[binary]


_BWRAP_OPTIONS: dict[str, frozenset[str]] = {}


def bwrap_arguments(workspace: Path, extra_ro: list[str], limits: Limits, network: bool) -> list[str]:
    """bubblewrap's arguments for a run in `workspace` (mounted at the same path, the only writable
    host folder), up to the command."""
    known = bwrap_options()
    args = ["--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--hostname", "sandbox"]
    if "--disable-userns" in known:  # no user namespaces inside (bwrap 0.8+)
        args.append("--disable-userns")
    if network:
        args.append("--share-net")
    for path in SYSTEM_DIRS:
        if os.path.islink(path):  # merged /usr: /bin -> usr/bin
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in (*ETC_FILES, *(NETWORK_ETC if network else ())):
        args += ["--ro-bind-try", path, path]
    for path in extra_ro:
        args += ["--ro-bind", path, path]
    # Private /tmp and /dev/shm, capped where bwrap can size a tmpfs (0.7+); their pages count
    # against the run's memory cgroup either way.
    size = ["--size", str(limits.tmp_mb * 2**20)] if "--size" in known else []
    args += ["--proc", "/proc", "--dev", "/dev", *size, "--tmpfs", "/tmp", *size, "--tmpfs", "/dev/shm",
             "--bind", str(workspace), str(workspace), "--chdir", str(workspace),
             "--remount-ro", "/"]  # the sandbox's own root (an uncapped tmpfs) read-only, last
    return args


def _python_roots(python: str, uid: int | None, gid: int | None) -> list[str]:
    """The folders outside the system ones that `python` needs (a virtual environment, a
    pyenv or conda install), asked of the interpreter itself as the sandbox user."""
    probe = "import sys; print(sys.prefix); print(sys.base_prefix); print(sys.executable)"
    try:
        done = subprocess.run([python, "-I", "-c", probe], capture_output=True, text=True, timeout=30, user=uid,
                              group=gid, extra_groups=[] if uid is not None else None, env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.SubprocessError) as exc:
        raise SandboxError(f"cannot run the sandbox Python {python}: {exc}: pass --python PATH") from None
    roots: set[str] = set()
    for line in [*done.stdout.splitlines(), python]:
        if not line.strip():
            continue
        real = os.path.realpath(line.strip())
        folder = real if os.path.isdir(real) else os.path.dirname(os.path.dirname(real))
        if not any(folder == d or folder.startswith(d + "/") for d in SYSTEM_DIRS):
            roots.add(folder)
    # Bound as they are found; a root inside another is covered by it.
    return sorted(r for r in roots if not any(r != o and r.startswith(o + "/") for o in roots))


def bwrap_problem(user: int | None, group: int | None) -> str | None:
    """Why bubblewrap cannot run sandboxes here (as the sandbox user), or None when it can."""
    binary = shutil.which("bwrap")
    if binary is None:
        return "bubblewrap (bwrap) is not installed"
    with tempfile.TemporaryDirectory(prefix="memento-bwrap-probe-") as folder:
        os.chmod(folder, 0o755)
        args = [binary, *bwrap_arguments(Path(folder), [], Limits(), network=False), "/bin/sh", "-c", "exit 0"]
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=30, user=user, group=group,
                                  extra_groups=[] if user is not None else None, cwd="/")
        except (OSError, subprocess.SubprocessError) as exc:
            return f"bwrap cannot start: {exc}"
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["exit code " + str(done.returncode)])[-1]
        return f"bwrap cannot start a sandbox here ({reason}); user namespaces may be off"
    return None


def describe_backend(backend: str, network: bool, memory: str) -> str:
    """One line for the log: what the active backend isolates and what it does not."""
    if backend == "bwrap":
        net = "host network (opted in)" if network else "no network"
        return (f"bwrap: own mount, PID, IPC, UTS and user namespaces; {net}; system folders read-only, the "
                f"workspace the only writable host folder; private /tmp and /dev/shm; memory {memory}")
    return (f"rlimit: resource limits and a scrubbed environment only; code sees the host's files its user "
            f"may read, its network and its processes; memory {memory}")


def _cgroup_mounts() -> dict[str, str]:
    """Mount points of the cgroup v2 tree ('unified') and the v1 memory controller ('memory')."""
    found: dict[str, str] = {}
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        if tail[0] == "cgroup2":
            found.setdefault("unified", fields[4])
        elif tail[0] == "cgroup" and "memory" in tail[2].split(","):
            found.setdefault("memory", fields[4])
    return found


def _own_cgroups() -> dict[str, str]:
    own: dict[str, str] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return own
    for line in lines:
        number, controllers, path = line.split(":", 2)
        if number == "0" and controllers == "":
            own["unified"] = path
        elif "memory" in controllers.split(","):
            own["memory"] = path
    return own


class MemoryGroup:
    """A memory cgroup made for one run: its processes share one limit, and the kernel kills
    in it, not elsewhere, when the limit is reached."""

    def __init__(self, path: Path, version: int) -> None:
        self.path = path
        self.version = version

    @classmethod
    def parent(cls) -> tuple[Path, int] | None:
        """Where this process may make memory cgroups, or None (not root, no controller, no
        delegation)."""
        mounts, own = _cgroup_mounts(), _own_cgroups()
        if "memory" in mounts and "memory" in own:
            base = Path(mounts["memory"]) / own["memory"].lstrip("/")
            if os.access(base, os.W_OK) and (base / "memory.limit_in_bytes").exists():
                return base, 1
        if "unified" in mounts and "unified" in own:
            base = Path(mounts["unified"]) / own["unified"].lstrip("/")
            try:
                if "memory" in (base / "cgroup.subtree_control").read_text().split() and os.access(base, os.W_OK):
                    return base, 2
            except OSError:
                pass
        return None

    @classmethod
    def create(cls, parent: tuple[Path, int], limit_bytes: int) -> MemoryGroup:
        base, version = parent
        path = base / f"memento-run-{os.getpid()}-{secrets.token_hex(4)}"
        path.mkdir()
        group = cls(path, version)
        try:
            if version == 1:
                (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
                if (path / "memory.memsw.limit_in_bytes").exists():  # swap counted too, where accounted
                    (path / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))
            else:
                (path / "memory.max").write_text(str(limit_bytes))
                (path / "memory.swap.max").write_text("0")
        except OSError:
            group.remove()
            raise
        return group

    def enter(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def oom_kills(self) -> int:
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        try:
            for line in (self.path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def remove(self) -> None:
        deadline = time.monotonic() + 2
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    return  # left for the system; it holds no processes worth keeping
                for pid in self.pids():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                time.sleep(0.02)


def tree_memory(root: int) -> int:
    """Resident bytes of a process and all its descendants (0 for those already gone). The
    server passes its own pid: runs are serialised and, as a subreaper, it inherits the orphans
    a run leaves (`setsid`, double forks), which the launcher's own tree would miss."""
    try:
        top = psutil.Process(root)
        family = top.children(recursive=True) if root == os.getpid() else [top, *top.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in family:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


def wall_seconds(asked: object, limit: float) -> float:
    """The wall-clock limit of one run: what the call asked for, at most the server's `limit`.

    The value comes from a model: anything but a finite number of seconds above 0 (NaN, an
    infinity, a negative, a string) is refused, since `min(nan, limit)` is NaN, which no timer
    ever reaches."""
    if asked is None:
        return limit
    if isinstance(asked, bool) or not isinstance(asked, (int, float)) or not math.isfinite(asked) or asked <= 0:
        raise ValueError(f"timeout_s must be a finite number of seconds above 0 (at most {limit:g}), got {asked!r}")
    return min(float(asked), limit)


def folder_bytes(root: Path, timeout_s: float = 10.0) -> int | None:
    """Bytes a folder holds on disk, measured by `du` (which walks any depth and never follows
    links); None when it cannot be measured (no `du`, an error, or too slow)."""
    du = shutil.which("du")
    if du is None:
        return None
    try:
        done = subprocess.run([du, "-s", "-x", "-B1", "--", str(root)], capture_output=True, text=True,
                              timeout=timeout_s, env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"})
        return int(done.stdout.split()[0]) if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class Isolation:
    """How a server isolates runs: chosen once, at start, and said in its log."""

    backend: str  # "bwrap" or "rlimit"
    network: bool = False
    memory_parent: tuple[Path, int] | None = None  # where run cgroups go; None: the tree is polled
    reason: str = ""  # why the fallback was taken, if it was

    @classmethod
    def choose(cls, requested: str = "auto", user: str | None = "nobody", network: bool = False) -> Isolation:
        if requested not in BACKENDS:
            raise SandboxError(f"unknown sandbox backend {requested!r}: use one of {', '.join(BACKENDS)}")
        uid, gid = _sandbox_ids(user)
        problem = None
        if requested != "rlimit":
            problem = bwrap_problem(uid, gid) if sys.platform.startswith("linux") else "bwrap needs Linux"
            if problem and requested == "bwrap":
                raise SandboxError(f"{problem}: install bubblewrap (apt install bubblewrap) or use --isolation rlimit")
        backend = "rlimit" if requested == "rlimit" or problem else "bwrap"
        return cls(backend, network, MemoryGroup.parent(), problem or "")

    def describe(self) -> str:
        memory = "limit on the run's whole process tree (cgroup)" if self.memory_parent else \
            "limit per process, the tree's total polled"
        line = describe_backend(self.backend, self.network, memory)
        return f"{line} [bwrap not used: {self.reason}]" if self.reason else line


def _sandbox_ids(user: str | None) -> tuple[int | None, int | None]:
    if os.geteuid() != 0 or not user:
        return None, None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise SandboxError(f"sandbox user {user!r} does not exist: create it or pass --sandbox-user") from None
    return entry.pw_uid, entry.pw_gid


_ROOTS: dict[tuple[str, int | None], list[str]] = {}


class Sandbox:
    """Runs commands in one workspace folder under fixed limits."""

    def __init__(self, workspace: Path, limits: Limits, user: str | None = "nobody", python: str | None = None,
                 run_lock: threading.Lock | None = None, isolation: Isolation | None = None) -> None:
        if os.name != "posix":
            raise SandboxError("the code sandbox needs a POSIX system (Linux or macOS)")
        self.limits = limits
        self._run_lock = run_lock or threading.Lock()
        self.uid, self.gid = _sandbox_ids(user)
        self.isolation = isolation or Isolation.choose("auto", user)
        self.python = python or self._default_python()
        self.workspace = reachable_workspace(workspace) if self.uid is not None else workspace.resolve()
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.own(self.workspace)
        self.python_roots: list[str] = []
        if self.isolation.backend == "bwrap":
            key = (self.python, self.uid)
            if key not in _ROOTS:
                _ROOTS[key] = _python_roots(self.python, self.uid, self.gid)
            self.python_roots = _ROOTS[key]

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
        tmp = "/tmp" if self.isolation.backend == "bwrap" else str(self.workspace)  # private there
        return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.workspace), "TMPDIR": tmp,
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
        # Checked before the lock: a refused value never holds up other runs.
        wall = wall_seconds(wall_s, self.limits.wall_s)
        # One run at a time (a lock shared by every sandbox of a server): the end-of-run sweep
        # kills every descendant of the server.
        with self._run_lock:
            return self._run(argv, wall, stdin)

    def _command(self, argv: list[str]) -> list[str]:
        if self.isolation.backend != "bwrap":
            return argv
        bwrap = shutil.which("bwrap") or "bwrap"
        return [bwrap, *bwrap_arguments(self.workspace, self.python_roots, self.limits, self.isolation.network),
                "--", *argv]

    def _over_disk(self) -> str | None:
        """Why the workspace is over its disk limit, or None. Where `du` is missing the limit is
        not kept; where it fails (a tree too large to measure in time) the workspace counts as full."""
        if shutil.which("du") is None:
            return None
        held = folder_bytes(self.workspace)
        if held is None:
            return f"disk limit of {self.limits.disk_mb} MB for the workspace reached (it cannot be measured)"
        if held > self.limits.disk_mb * 2**20:
            return f"disk limit of {self.limits.disk_mb} MB for the workspace reached"
        return None

    def _run(self, argv: list[str], wall_s: float | None, stdin: bytes | None) -> RunResult:
        limits = self.limits
        full = self._over_disk()
        if full:  # nothing runs in a full workspace: its files must be removed first
            return RunResult(None, "", "", 0.0, f"{full}; remove files from it before running code")
        wall = wall_seconds(wall_s, limits.wall_s)
        memory_limit = limits.memory_mb * 2**20
        group = MemoryGroup.create(self.isolation.memory_parent, memory_limit) if self.isolation.memory_parent else None
        ready, go = os.pipe() if group else (-1, -1)
        launcher = [self.python, "-I", "-c", LAUNCHER, str(limits.cpu_s), str(memory_limit),
                    str(self._process_allowance()), str(limits.file_mb * 2**20), str(ready), *self._command(argv)]
        started = time.monotonic()
        try:
            proc = subprocess.Popen(launcher, cwd=self.workspace, env=self._environment(),
                                    stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0,
                                    pass_fds=(ready,) if group else (), user=self.uid, group=self.gid,
                                    extra_groups=[] if self.uid is not None else None)
        except BaseException:
            if group:
                os.close(ready)
                os.close(go)
                group.remove()
            raise
        if group:
            os.close(ready)
            try:
                group.enter(proc.pid)  # before the launcher goes on, so every process it starts is inside
            except OSError as exc:
                os.close(go)
                self._kill_all(proc)
                group.remove()
                raise SandboxError(f"cannot put the run in its memory cgroup: {exc}") from None
            os.write(go, b"1")
            os.close(go)
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
        polled = disk_checked = 0.0
        while proc.poll() is None:
            now = time.monotonic()
            if overflow.is_set():
                stopped = f"output limit of {limits.output_bytes} bytes reached"
                break
            if now - started > wall:
                stopped = f"wall-clock limit of {wall:g} s reached"
                break
            if group is None and now - polled >= 0.1:
                polled = now
                if tree_memory(os.getpid()) > memory_limit:
                    stopped = f"memory limit of {limits.memory_mb} MB reached by the run's processes together"
                    break
            if now - disk_checked >= 0.5:
                disk_checked = now
                stopped = self._over_disk()
                if stopped:
                    break
            time.sleep(0.02)
        self._kill_all(proc)
        if group:
            oom = group.oom_kills()
            group.remove()
            if oom and stopped is None:
                stopped = f"memory limit of {limits.memory_mb} MB reached by the run's processes together"
        for reader in readers:
            reader.join(timeout=5)
        if overflow.is_set() and stopped is None:
            stopped = f"output limit of {limits.output_bytes} bytes reached"
        if stopped is None:
            stopped = self._over_disk()
        result = RunResult(proc.returncode, outputs["stdout"].decode("utf-8", "replace"),
                           outputs["stderr"].decode("utf-8", "replace"), time.monotonic() - started, stopped)
        if result.stopped is None:
            result.stopped = self._limit_hit(result)
        return result

    def _limit_hit(self, result: RunResult) -> str | None:
        code = result.returncode
        if self.isolation.backend == "bwrap" and code is not None and code > 128:
            code = -(code - 128)  # bwrap reports a command killed by signal N as 128 + N
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
