"""Parse untrusted documents in worker processes, each under memory, CPU and wall-clock limits.

A document is hostile content: an Office file is a ZIP whose XML can unpack to hundreds of
megabytes that a parser then holds several times over, and a PDF or a page can be built to spin
a parser. So the server never parses in its own process: a small pool of worker processes does,
each with an address-space limit (`RLIMIT_AS`), a CPU-time limit per document (`RLIMIT_CPU`,
moved up before each one) and a wall-clock limit the server enforces by killing the worker. A
document that hits a limit costs one worker, which is replaced; the server's event loop, and the
other workers, answer other runs' calls meanwhile.
"""

from __future__ import annotations

import multiprocessing
import resource
import signal
import threading
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class ParseLimits:
    memory_mb: int = 2048  # address space of a worker, the parser's own imports included
    cpu_s: int = 30  # CPU seconds for one document
    wall_s: float = 60.0  # seconds one document may take, waiting included
    workers: int = 2  # documents parsed at once; more calls wait for a free worker
    documents_per_worker: int = 200  # a worker is replaced after this many (memory fragments)


CUT = "\n\n[cut by the parser: {} characters in all]"
MAX_TEXT = 1_000_000  # characters a worker sends back; the tools cap far lower
NEAR_LIMIT = 0.6  # a failure after the worker's peak resident memory passed this share of its limit is a memory one


class ParseError(ValueError):
    """A document could not be parsed within the limits (or at all); the message says which."""


def _serve(conn: Any, memory_bytes: int, parse: Callable[[str, bytes], str]) -> None:
    """The worker: one document at a time from `conn`, a CPU limit moved up before each."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server's Ctrl-C is the server's to handle
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        name, data, cpu_s, max_chars = message
        usage = resource.getrusage(resource.RUSAGE_SELF)
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = int(usage.ru_utime + usage.ru_stime) + cpu_s
        resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
        try:
            text = parse(name, data)
            # Cut here, in the worker: a document that parses to hundreds of megabytes of text must
            # not cost the server that memory to receive it.
            conn.send(("ok", text if len(text) <= max_chars else text[:max_chars] + CUT.format(len(text))))
        except MemoryError:
            conn.send(("memory", ""))
            return  # a worker that ran out of memory is not trusted with the next document
        except Exception as exc:  # noqa: BLE001 - the document's fault: said, and the worker goes on
            # A C library out of memory often says something else (libxml2: "unknown error"): a
            # worker that has come near its limit is taken to have run out.
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            if peak >= NEAR_LIMIT * memory_bytes:
                conn.send(("memory", ""))
                return
            conn.send(("error", f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)))


class _Worker:
    def __init__(self, limits: ParseLimits, parse: Callable[[str, bytes], str]) -> None:
        context = multiprocessing.get_context("spawn")  # nothing of the server's state is inherited
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, limits.memory_mb * 2**20, parse),
                                       name="memento-parser", daemon=True)
        self.process.start()
        child.close()
        self.done = 0

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


class ParserPool:
    """Parses documents in worker processes; `parse` blocks the calling thread, never the server's loop."""

    def __init__(self, parse: Callable[[str, bytes], str], limits: ParseLimits | None = None) -> None:
        self.limits = limits or ParseLimits()
        self._parse = parse
        self._free = threading.Semaphore(self.limits.workers)
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()

    def parse(self, name: str, data: bytes) -> str:
        limits = self.limits
        if not self._free.acquire(timeout=limits.wall_s):
            raise ParseError(f"{name}: every parser is busy with other documents; try again shortly")
        try:
            return self._parse_on_a_worker(name, data)
        finally:
            self._free.release()

    def _parse_on_a_worker(self, name: str, data: bytes) -> str:
        limits = self.limits
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        worker = worker or _Worker(limits, self._parse)
        keep = False
        try:
            try:
                worker.conn.send((name, data, limits.cpu_s, MAX_TEXT))
                ready = worker.conn.poll(limits.wall_s)
                outcome = worker.conn.recv() if ready else None
            except (EOFError, OSError):
                outcome = ("lost", "")
            if outcome is None:
                raise ParseError(f"{name}: parsing took longer than {limits.wall_s:g} s and was stopped")
            kind, text = outcome
            if kind == "ok":
                keep = True
                return text
            if kind == "error":
                keep = True
                raise ParseError(text)
            if kind == "memory":
                raise ParseError(f"{name}: parsing needs more memory than the {limits.memory_mb} MB this server "
                                 "allows a document")
            worker.process.join(timeout=5)
            raise ParseError(self._why_lost(name, worker.process.exitcode))
        finally:
            worker.done += 1
            if keep and worker.process.is_alive() and worker.done < limits.documents_per_worker:
                with self._lock:
                    self._idle.append(worker)
            else:
                worker.kill()

    def _why_lost(self, name: str, exitcode: int | None) -> str:
        if exitcode == -signal.SIGXCPU:
            return f"{name}: parsing used more than the {self.limits.cpu_s} s of CPU this server allows a document"
        return (f"{name}: the parser stopped (exit {exitcode}), most likely at the {self.limits.memory_mb} MB memory "
                "limit this server allows a document")

    def close(self) -> None:
        with self._lock:
            workers, self._idle = self._idle, []
        for worker in workers:
            try:
                worker.conn.send(None)
            except OSError:
                pass
            worker.kill()
