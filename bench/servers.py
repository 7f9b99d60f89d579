"""Throwaway local servers for tests and benchmarks: PostgreSQL and `chroma run`, each on a free
loopback port in a temporary folder, stopped and removed on exit.

`local_postgres()` finds the server's programs on PATH or in Debian's `/usr/lib/postgresql/N/bin`
(`make test` installs the `postgresql` package where it is missing and the machine lets it). As
root it runs the server as the `postgres` user (PostgreSQL refuses to run as root). The database
has one user, `memento`, with a password, so that tests can check the password goes nowhere.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


class ServerUnavailable(RuntimeError):
    """The server's programs are not installed here (the reason is the message)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode} before it listened on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:.0f} s")


def stop_group(process: subprocess.Popen, sig: signal.Signals, timeout: float) -> None:
    """Stop a server started in a session of its own: `sig` to its process group, then SIGKILL
    if it has not exited within `timeout` seconds."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


@dataclass
class Postgres:
    url: str  # with the password: what a worker is given
    password: str
    port: int


@contextmanager
def local_postgres() -> Iterator[Postgres]:
    bindir = postgres_bin()
    if bindir is None:
        raise ServerUnavailable("PostgreSQL is not installed (initdb not found): `make test` installs it with apt "
                                "where the machine allows")
    run_as: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            owner = pwd.getpwnam("nobody")
        run_as = ["runuser", "-u", owner.pw_name, "--"]
    root = Path(tempfile.mkdtemp(prefix="memento-pg-"))
    password = secrets.token_urlsafe(12)
    port = free_port()
    process = None
    try:
        (root / "pw").write_text(password, encoding="utf-8")
        if owner is not None:
            for path in (root, root / "pw"):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(root / "db"), "-U", "memento",
                        "--auth=scram-sha-256", f"--pwfile={root / 'pw'}", "-E", "UTF8", "--locale=C"],
                       check=True, capture_output=True, timeout=180)
        process = subprocess.Popen(
            [*run_as, str(bindir / "postgres"), "-D", str(root / "db"), "-p", str(port), "-k", str(root),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=100"],
            stdout=subprocess.DEVNULL, stderr=open(root / "log", "wb"), start_new_session=True)
        _wait_for_port(port, process, "postgres")
        url = f"postgresql://memento:{password}@127.0.0.1:{port}/postgres"
        _wait_for_login(url, process)
        yield Postgres(url=url, password=password, port=port)
    finally:
        if process is not None:
            stop_group(process, signal.SIGINT, 30)  # PostgreSQL's fast shutdown
        shutil.rmtree(root, ignore_errors=True)


def _wait_for_login(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(url, connect_timeout=5):
                return
        except psycopg.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@dataclass
class ChromaServer:
    url: str
    port: int
    path: Path
    process: subprocess.Popen


def chroma_program() -> str | None:
    beside = Path(sys.executable).parent / "chroma"
    return str(beside) if beside.exists() else shutil.which("chroma")


@contextmanager
def local_chroma(path: str | Path | None = None) -> Iterator[ChromaServer]:
    """`chroma run` on a free loopback port, its data in `path` (a temporary folder by default)."""
    program = chroma_program()
    if program is None:
        raise ServerUnavailable("the `chroma` command is not installed (it comes with the chromadb package)")
    owned = path is None
    folder = Path(tempfile.mkdtemp(prefix="memento-chroma-")) if owned else Path(path)
    port = free_port()
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
    process = subprocess.Popen([program, "run", "--path", str(folder), "--host", "127.0.0.1", "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                               start_new_session=True)
    try:
        _wait_for_port(port, process, "chroma run")
        yield ChromaServer(url=f"http://127.0.0.1:{port}", port=port, path=folder, process=process)
    finally:
        stop_group(process, signal.SIGTERM, 20)
        if owned:
            shutil.rmtree(folder, ignore_errors=True)
