"""Running many tasks at once through one compiled graph.

A run spends nearly all its time waiting for a model server, so N runs at once take about the
time of one: `run_lanes` gives each lane (a benchmark's arm, or the one lane of a task file) up to
`concurrency` worker threads, which take that lane's jobs in order. Everything a run shares is
safe under threads: the encoder (a lock), the case bank (Chroma's client), the learner (the
learning log's lock), the MCP session pool (calls of different runs interleave on its event loop),
the checkpointer (SqliteSaver and PostgresSaver serialise their connection).

`done(job, result)` runs under one lock, in the order runs finish, so whoever records results
(an append to a JSONL file) needs no locking of its own. Ctrl-C (or SIGTERM, raised as
KeyboardInterrupt in the main thread) stops new runs from starting; the runs in flight finish and
are recorded, and then the interrupt goes on. A run that raises stops the others the same way,
and its exception is raised.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable, Hashable, Iterable, TypeVar

J = TypeVar("J")


def run_lanes(jobs: Iterable[J], lane: Callable[[J], Hashable], work: Callable[[J], Any],
              done: Callable[[J, Any], None], concurrency: int) -> int:
    """Run `work(job)` for every job, at most `concurrency` at once per lane, and `done` for each
    result; returns how many finished."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    queues: dict[Hashable, deque[J]] = {}
    for job in jobs:
        queues.setdefault(lane(job), deque()).append(job)
    lock = threading.Lock()
    stop = threading.Event()
    failures: list[BaseException] = []
    finished = 0

    def worker(key: Hashable) -> None:
        nonlocal finished
        while not stop.is_set():
            with lock:
                if not queues[key]:
                    return
                job = queues[key].popleft()
            try:
                result = work(job)
                with lock:
                    done(job, result)
                    finished += 1
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                with lock:
                    failures.append(exc)
                stop.set()
                return

    threads = [threading.Thread(target=worker, args=(key,), name=f"memento-run-{n}", daemon=True)
               for key in queues for n in range(min(concurrency, len(queues[key])))]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.2)  # a timed join: Ctrl-C reaches this thread at once
    except BaseException:
        stop.set()  # no new runs; those in flight finish and are recorded
        for thread in threads:
            while thread.is_alive():
                try:
                    thread.join(timeout=0.2)
                except KeyboardInterrupt:
                    continue  # a second Ctrl-C while the runs in flight finish
        raise
    if failures:
        raise failures[0]
    return finished
