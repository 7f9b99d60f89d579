"""One learner for many workers: transitions in a durable log, versioned weights beside them.

Each finished run records its (task, case, reward) transitions as one row of a log, once per run
(a resumed or replayed run records nothing more). Learning then takes the log's lock, loads the
newest published weights if another worker published them, trains on every run recorded since
those weights were made, in the order they were recorded, and publishes the result as the next
version. Workers that retrieve check the newest version number (one small query) and load the
weights when a newer version exists. So N workers on one log learn exactly what one process
would have learned from the same runs in that order: no transition is lost (the log is the
record, not a process's memory), none is learned twice (a version says how far into the log it
has learned), and the weights never fork (versions are made one at a time, under the lock).

The log lives where the runs are checkpointed: in the checkpointer's PostgreSQL database when
`checkpointer` is a `postgresql://` URL (workers on several machines), else in the SQLite file
`learning.sqlite` beside the checkpoints (workers on one machine sharing a data folder). The
retriever file (`retriever_path`) stays the local copy of the newest version this process
published, and the starting point of a log that has no version yet (say, offline training).
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from memento.graph.errors import RunError
from memento.graph.persistence import quoted, redact_url

if TYPE_CHECKING:
    from memento.graph.context import Context

LOCK_KEY = 0x6D656D6F  # pg_advisory lock class of the learners ("memo"); the second key is the bank's
KEEP_VERSIONS = 3  # older weights are dropped once newer ones exist
BUSY_TIMEOUT_S = 120.0
MAX_ROW_IDS = 1000  # case ids one log row may name
MAX_ROW_STEPS = 1000  # gradient steps one log row may ask for
_log = logging.getLogger("memento.learner")


class LearnerError(RunError, ConnectionError):
    """The learning log cannot be reached or used."""


@dataclass(frozen=True)
class Version:
    version: int
    learned_seq: int  # the last log row these weights have learned
    learned: int  # transitions learned, in all
    created_at: float


@dataclass(frozen=True)
class Recorded:
    seq: int
    episode: str
    payload: dict[str, Any]
    problem: str | None = None  # why the row cannot be learned from (it is skipped, and reported)

    @property
    def trusted(self) -> bool:
        """Whether the operator trusts the run's reward (rows recorded before this was kept were
        the operator's own runs)."""
        return self.payload.get("trusted", True) is True

    @property
    def author(self) -> str:
        return str(self.payload.get("author") or "operator")

    def removal(self) -> str:
        return f"DELETE FROM memento_transitions WHERE seq = {self.seq}"


def _finite(values: Any, low: float, high: float) -> bool:
    return isinstance(values, list) and all(
        not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and low <= v <= high for v in values)


def _ids(values: Any) -> bool:
    return isinstance(values, list) and len(values) <= MAX_ROW_IDS and all(
        isinstance(v, str) and 0 < len(v) <= 512 for v in values)


def row_problem(payload: Any) -> str | None:
    """Why a learning-log row's payload cannot be learned from, or None. The log is a database other
    processes write to: a row is checked like any input before it trains anything."""
    from memento.memory.lexical import BUCKETS, WIDTH

    if not isinstance(payload, dict):
        return "its payload is not a JSON object"
    if not isinstance(payload.get("task_id"), str) or not payload["task_id"]:
        return "task_id is not a case id"
    ids = payload.get("ids")
    if not _ids(ids):
        return f"ids is not a list of at most {MAX_ROW_IDS} case ids"
    if not _finite(payload.get("rewards"), 0.0, 1.0) or len(payload["rewards"]) != len(ids):
        return "rewards is not one number from 0 to 1 per id"
    weights = payload.get("weights")
    if weights is not None and (not _finite(weights, 0.0, 1e6) or len(weights) != len(ids)):
        return "weights is not one finite number >= 0 per id"
    mismatch = payload.get("mismatch")
    if mismatch is not None and (not isinstance(mismatch, list) or len(mismatch) != len(ids) or not all(
            _finite(row, 0, BUCKETS) and len(row) <= WIDTH and all(isinstance(v, int) for v in row) for row in mismatch)):
        return f"mismatch is not one list of at most {WIDTH} word ids per id"
    steps = payload.get("steps", 0)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= MAX_ROW_STEPS:
        return f"steps is not a whole number from 0 to {MAX_ROW_STEPS}"
    if payload.get("shown") is not None and not _ids(payload["shown"]):
        return "shown is not a list of case ids"
    if payload.get("utility_ids") is not None and not _ids(payload["utility_ids"]):
        return "utility_ids is not a list of case ids"
    if not isinstance(payload.get("trusted", True), bool) or not isinstance(payload.get("author", ""), str):
        return "trusted or author has the wrong type"
    check = payload.get("check")
    if check is not None:
        problem = row_problem({"task_id": payload["task_id"], **check}) if isinstance(check, dict) else "not an object"
        if problem:
            return f"check: {problem}"
    return None


def _parsed(seq: Any, episode: Any, payload: Any) -> Recorded:
    try:
        data = json.loads(payload)
    except (TypeError, ValueError) as exc:
        return Recorded(int(seq), str(episode), {}, f"its payload is not JSON ({str(exc)[:80]})")
    problem = row_problem(data)
    return Recorded(int(seq), str(episode), data if problem is None else {}, problem)


class _Sql:
    """The few statements the log needs, on SQLite or PostgreSQL."""

    def __init__(self, target: str, postgres: bool) -> None:
        self.target, self.postgres = target, postgres
        self._conn: Any = None
        self.lock = threading.RLock()

    def where(self) -> str:
        return redact_url(self.target) if self.postgres else self.target

    def connect(self) -> Any:
        if self._conn is not None:
            return self._conn
        try:
            if self.postgres:
                import psycopg

                self._conn = psycopg.connect(self.target, autocommit=True, connect_timeout=30)
            else:
                Path(self.target).parent.mkdir(parents=True, exist_ok=True)
                self._conn = sqlite3.connect(self.target, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                             check_same_thread=False)
                self._conn.execute("PRAGMA journal_mode=WAL")
        except Exception as exc:  # noqa: BLE001 - psycopg or sqlite3, told apart by the message
            raise LearnerError(f"cannot open the learning log at {self.where()}: {quoted(exc)}: start the database, "
                               "or fix the checkpointer setting (what is recorded there is kept)") from None
        self._create()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def execute(self, sql: str, params: tuple = ()) -> Any:
        sql = sql.replace("?", "%s") if self.postgres else sql
        return self.connect().execute(sql, params)

    def _create(self) -> None:
        serial = "BIGSERIAL PRIMARY KEY" if self.postgres else "INTEGER PRIMARY KEY AUTOINCREMENT"
        blob = "BYTEA" if self.postgres else "BLOB"
        with self.transaction():
            self.execute(f"CREATE TABLE IF NOT EXISTS memento_transitions (seq {serial}, bank TEXT NOT NULL, "
                         "episode TEXT NOT NULL, n INTEGER NOT NULL, payload TEXT NOT NULL, "
                         "recorded_at DOUBLE PRECISION NOT NULL, UNIQUE (bank, episode))")
            self.execute(f"CREATE TABLE IF NOT EXISTS memento_retriever (bank TEXT NOT NULL, version INTEGER NOT NULL, "
                         f"learned_seq BIGINT NOT NULL, learned BIGINT NOT NULL, created_at DOUBLE PRECISION NOT NULL, "
                         f"weights {blob} NOT NULL, PRIMARY KEY (bank, version))")

    @contextmanager
    def transaction(self, bank: str = "") -> Iterator[None]:
        """One transaction that holds the learner's lock of `bank`: across processes, one at a time."""
        with self.lock:
            conn = self.connect()
            if self.postgres:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_KEY, zlib.crc32(bank.encode()) - 2**31))
                    yield
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")  # the shared connection must not stay in a transaction
                raise


class LearningLog:
    """The transitions of every run and the published versions of the Q-retriever's weights."""

    def __init__(self, target: str, postgres: bool, bank: str = "") -> None:
        self._sql = _Sql(target, postgres)
        self.bank = bank
        self.location = self._sql.where()

    def exists(self) -> bool:
        return self._sql.postgres or Path(self._sql.target).exists()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except LearnerError:
            raise
        except (sqlite3.Error, OSError) as exc:
            raise LearnerError(f"the learning log at {self.location} failed: {exc}") from exc
        except Exception as exc:
            if type(exc).__module__.startswith("psycopg"):
                with self._sql.lock:  # never under another thread's transaction: it holds this lock
                    self._sql.close()  # a broken connection is opened again on the next call
                raise LearnerError(f"the learning log at {self.location} failed: {quoted(exc)}") from exc
            raise

    def record(self, episode: str, payload: dict[str, Any], n: int) -> int | None:
        """Record one run's transitions; returns n, or None when the run was recorded before."""
        with self._guard(), self._sql.transaction(self.bank):
            done = self._sql.execute("INSERT INTO memento_transitions (bank, episode, n, payload, recorded_at) "
                                     "VALUES (?, ?, ?, ?, ?) ON CONFLICT (bank, episode) DO NOTHING",
                                     (self.bank, episode, n, json.dumps(payload), time.time()))
            return n if done.rowcount == 1 else None

    def newest(self, after: int) -> tuple[Version, bytes] | None:
        """The newest published version and its weights, read in one statement, if it is newer
        than `after`; else None."""
        if not self.exists():
            return None
        with self._guard(), self._sql.lock:
            row = self._sql.execute("SELECT version, learned_seq, learned, created_at, weights FROM memento_retriever "
                                    "WHERE bank = ? AND version > ? ORDER BY version DESC LIMIT 1",
                                    (self.bank, after)).fetchone()
        return (Version(*row[:4]), bytes(row[4])) if row else None

    def latest(self) -> Version | None:
        """The newest published version (without its weights), or None."""
        if not self.exists():
            return None
        with self._guard(), self._sql.lock:
            return LearningSession(self._sql, self.bank).latest()

    def status(self) -> dict[str, Any]:
        latest = self.latest()
        if not self.exists():
            return {"version": 0, "transitions": 0, "runs": 0, "learned": 0, "pending": 0, "log": self.location}
        with self._guard(), self._sql.lock:
            runs, total = self._sql.execute("SELECT count(*), coalesce(sum(n), 0) FROM memento_transitions WHERE bank = ?",
                                            (self.bank,)).fetchone()
        learned = latest.learned if latest else 0
        return {"version": latest.version if latest else 0, "transitions": int(total), "runs": int(runs),
                "learned": int(learned), "pending": int(total) - int(learned), "log": self.location}

    @contextmanager
    def learning(self) -> Iterator["LearningSession"]:
        """The learner's turn: the lock is held until the block ends (and a version is published)."""
        with self._guard(), self._sql.transaction(self.bank):
            yield LearningSession(self._sql, self.bank)


class LearningSession:
    def __init__(self, sql: _Sql, bank: str) -> None:
        self._sql, self.bank = sql, bank

    def latest(self) -> Version | None:
        row = self._sql.execute("SELECT version, learned_seq, learned, created_at FROM memento_retriever "
                                "WHERE bank = ? ORDER BY version DESC LIMIT 1", (self.bank,)).fetchone()
        return Version(*row) if row else None

    def weights(self, version: int) -> bytes:
        return bytes(self._sql.execute("SELECT weights FROM memento_retriever WHERE bank = ? AND version = ?",
                                       (self.bank, version)).fetchone()[0])

    def pending(self, after_seq: int) -> list[Recorded]:
        """The rows after `after_seq`, in order, each checked (`Recorded.problem`)."""
        rows = self._sql.execute("SELECT seq, episode, payload FROM memento_transitions WHERE bank = ? AND seq > ? "
                                 "ORDER BY seq", (self.bank, after_seq)).fetchall()
        return [_parsed(seq, episode, payload) for seq, episode, payload in rows]

    def forget(self, seqs: list[int]) -> None:
        for start in range(0, len(seqs), 500):
            chunk = seqs[start:start + 500]
            self._sql.execute(f"DELETE FROM memento_transitions WHERE bank = ? AND seq IN ({', '.join('?' * len(chunk))})",
                              (self.bank, *chunk))

    def recorded(self) -> tuple[int, int]:
        """(the last row's seq, transitions in all) of this bank's log."""
        row = self._sql.execute("SELECT coalesce(max(seq), 0), coalesce(sum(n), 0) FROM memento_transitions "
                                "WHERE bank = ?", (self.bank,)).fetchone()
        return int(row[0]), int(row[1])

    def publish(self, learned_seq: int, learned: int, weights: bytes) -> Version:
        latest = self.latest()
        version = Version((latest.version if latest else 0) + 1, learned_seq, learned, time.time())
        self._sql.execute("INSERT INTO memento_retriever (bank, version, learned_seq, learned, created_at, weights) "
                          "VALUES (?, ?, ?, ?, ?, ?)", (self.bank, version.version, version.learned_seq, version.learned,
                                                        version.created_at, weights))
        self._sql.execute("DELETE FROM memento_retriever WHERE bank = ? AND version <= ?",
                          (self.bank, version.version - KEEP_VERSIONS))
        return version


def _apply(retriever: Any, bank: Any, row: Recorded, drop: frozenset[str] = frozenset()) -> int:
    """Train on one recorded run: its transitions into the replay buffer, then its gradient steps.
    Embeddings come from the bank (stored when the cases were written); a case deleted since is
    left out. Returns the transitions learned."""
    import numpy as np

    from memento.memory.lexical import padded

    p = row.payload
    if drop:  # cases left out of what is learned (`unlearn`): their transitions are not there
        keep_at = [k for k, i in enumerate(p["ids"]) if i not in drop]
        p = {**p, **{key: [p[key][k] for k in keep_at] for key in ("ids", "rewards", "weights", "mismatch")
                     if p.get(key) is not None}}
    found, tasks, _ = bank.embeddings([p["task_id"]])
    if not found:
        return 0  # the run's own case is gone: nothing to learn from
    ids, case_tasks, case_plans = bank.embeddings(p["ids"])
    keep = [p["ids"].index(i) for i in ids]
    pick = lambda values: None if values is None else np.asarray([values[k] for k in keep])  # noqa: E731
    shown = bank.embeddings(p["shown"])[1:] if p.get("shown") else None
    mismatch = padded([p["mismatch"][k] for k in keep]) if keep and p.get("mismatch") is not None else None
    with retriever.lock:
        if row.episode not in retriever.episodes:  # the held-out check, before the run is learned
            # Rows the previous release wrote carry the check's own labels; rows written now are
            # checked on the labels they train (the hindsight labels), below.
            check = p.get("check") or {}
            ids_c, tasks_c, plans_c = bank.embeddings(check.get("ids") or [])
            if len(ids_c) > 1:
                at = [check["ids"].index(i) for i in ids_c]
                retriever.check_ranking(tasks[0], tasks_c, plans_c, np.asarray([check["rewards"][k] for k in at]),
                                        None if check.get("mismatch") is None else
                                        padded([check["mismatch"][k] for k in at]))
            elif keep:
                retriever.check_ranking(tasks[0], case_tasks, case_plans, pick(p["rewards"]), mismatch)
        stored = retriever.observe(tasks[0], case_tasks, case_plans, pick(p["rewards"]) if keep else np.zeros(0),
                                   pick(p["weights"]), episode=row.episode, shown=shown, mismatch=mismatch)
        if stored:
            retriever.update(int(p.get("steps", retriever.settings.steps_per_update)))
    return stored


def learn_pending(ctx: "Context", bank: Any, utilities: dict[str, float] | None = None) -> dict[str, Any] | None:
    """The learner's turn: under the log's lock, move the given cases' utilities, catch up with
    the newest published version, train on every run recorded after it, publish the next version
    and save it as the local retriever file. Returns what was learned, or None when nothing was
    pending."""
    from memento.memory.resources import adopt_version, forget_retriever, retriever_for

    log = learning_log(ctx, bank)
    try:
        with log.learning() as session:
            moved = bank.update_utilities(utilities, ctx.utility_rate) if utilities else {}
            latest = session.latest()
            retriever = retriever_for(ctx)
            if latest is not None and (latest.version, latest.created_at) != (retriever.version, retriever.published_at):
                retriever = adopt_version(ctx, session.weights(latest.version), latest)
            rows = session.pending(latest.learned_seq if latest else 0)
            if not rows:
                return {"utilities": len(moved)} if moved else None
            learned = latest.learned if latest else 0
            skipped = skipped_rows(rows, log.location)
            for row in rows:
                if row.problem is None and row.trusted:  # an untrusted caller's rewards train no shared learner
                    learned += _apply(retriever, bank, row)
            version = session.publish(rows[-1].seq, learned, retriever.to_bytes())
    except BaseException:
        # The weights in memory may hold steps the log does not (the turn was rolled back): drop
        # them, so the next turn starts again from the newest published version.
        forget_retriever(ctx)
        raise
    retriever.version, retriever.learned_seq, retriever.published_at = (version.version, version.learned_seq,
                                                                         version.created_at)
    retriever.save(ctx.retriever_checkpoint())  # the local copy, once the version is committed
    return {"version": version.version, "runs": len(rows), "learned": learned, "updates": retriever.updates,
            "utilities": len(moved), **({"skipped_rows": skipped} if skipped else {})}


def skipped_rows(rows: list[Recorded], location: str) -> list[str]:
    """One line per row that cannot be learned from, saying why and how to remove it; logged too. The
    learner goes past them (they never block a turn or a run)."""
    lines = [f"learning log row {row.seq} (run {row.episode[:80]!r}) skipped: {row.problem}; remove it with "
             f"{row.removal()}" for row in rows if row.problem is not None]
    for line in lines:
        _log.warning("%s (in %s)", line, location)
    return lines


def unlearn(ctx: "Context", bank: Any, author: str) -> dict[str, Any]:
    """Rebuild the learner and the utilities without `author`: under the log's lock, the author's runs
    leave the log, a new Q-retriever (the current one's settings, fresh weights) trains on every
    trusted run left, in the order they were recorded, leaving out the transitions to the author's
    cases, and is published as the next version; every case's utility is replayed the same way from
    0.5. The author's cases themselves stay (quarantine or delete them with `memento cases`).
    Offline-trained weights are not replayed: train again afterwards if they were in use."""
    from memento.memory.q_retriever import QRetriever
    from memento.memory.resources import adopt_version, forget_retriever, retriever_for

    log = learning_log(ctx, bank)
    theirs = frozenset(bank.select(author=author))
    try:
        with log.learning() as session:
            rows = session.pending(0)
            gone = [row.seq for row in rows if row.problem is None and row.author == author]
            session.forget(gone)
            kept = [row for row in rows if row.problem is None and row.author != author]
            current = retriever_for(ctx)
            fresh = QRetriever(current.dim, ctx.encoder, ctx.retriever_device, current.settings)
            learned = sum(_apply(fresh, bank, row, theirs) for row in kept if row.trusted)
            bank.reset_utilities()
            for row in kept:
                ids = row.payload.get("utility_ids")
                reward = dict(zip(row.payload["ids"], row.payload["rewards"]))
                moved = {i: reward[i] for i in (row.payload["ids"] if ids is None else ids) if i in reward and i not in theirs}
                if moved:
                    bank.update_utilities(moved, ctx.utility_rate)
            last = session.recorded()[0]
            version = session.publish(last, session.recorded()[1], fresh.to_bytes())
    except BaseException:
        forget_retriever(ctx)
        raise
    adopted = adopt_version(ctx, fresh.to_bytes(), version)
    adopted.save(ctx.retriever_checkpoint())
    return {"author": author, "runs_removed": len(gone), "runs_kept": len(kept), "learned": learned,
            "cases_left_out": len(theirs), "version": version.version}


def log_position(log: LearningLog) -> tuple[int, int]:
    """(the last recorded row, transitions in all): where offline training starts from."""
    with log.learning() as session:
        return session.recorded()


def publish_offline(log: LearningLog, retriever: Any, position: tuple[int, int]) -> int:
    """Publish offline-trained weights as the next version, so that every worker takes them up.
    They start after the runs logged when the training began (`position`, from `log_position`):
    those count as learned, the offline training having replaced what they taught; runs recorded
    while it trained are learned on the next turn."""
    with log.learning() as session:
        version = session.publish(position[0], position[1], retriever.to_bytes())
    retriever.version, retriever.learned_seq, retriever.published_at = (version.version, version.learned_seq,
                                                                         version.created_at)
    return version.version


_logs: dict[str, LearningLog] = {}
_logs_lock = threading.Lock()


def log_target(ctx: "Context") -> tuple[str, bool]:
    if ctx.uses_postgres():
        return ctx.checkpointer, True
    return str(ctx.checkpoint_path().parent / "learning.sqlite"), False


def bank_key(ctx: "Context", bank: Any = None) -> str:
    """Which learner a run belongs to: the one of its case bank. A Chroma bank is named by its
    collection's id, the same for every worker that reaches the server, whatever address each
    uses; so workers that share a bank share a learner, and two banks in one database never mix
    their transitions or weights. A bank over a LangGraph store has a learner of its own."""
    from memento.memory.resources import case_bank_for

    bank = bank if bank is not None else case_bank_for(ctx)
    collection_id = getattr(bank, "collection_id", None)
    return f"chroma:{collection_id}" if collection_id else f"store:{ctx.collection}"


def learning_log(ctx: "Context", bank: Any = None) -> LearningLog:
    """The learning log of these settings and this bank (one object per log and bank per process)."""
    target, postgres = log_target(ctx)
    name = bank_key(ctx, bank)
    key = f"{target}\n{name}"
    with _logs_lock:
        if key not in _logs:
            _logs[key] = LearningLog(target, postgres, name)
        return _logs[key]
