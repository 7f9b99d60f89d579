"""The case bank: cases in Chroma, embedded once, at write time.

Two collections share the case ids: `<name>` holds each case's task embedding (the document is
the task, the metadata the rest of the case), `<name>_plans` its plan embedding, which the
parametric retriever reads. Both are computed by the project's own encoder when a case is
written; retrieval encodes only the query. Chroma's default embedding function is never used (it
downloads a model). One process owns a `PersistentClient` folder (it holds a lock on it, and a second process is
refused with a line saying how to share it); several processes share a bank through a Chroma server
(`chroma_url`, with `chroma_tenant`, `chroma_database` and a token from `chroma_token_env`).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar
from urllib.parse import urlparse

import chromadb
import numpy as np
from chromadb.config import Settings

from memento.graph.errors import RunError
from memento.memory.case import Case, RetrievedCase, utc_now
from memento.memory.encoder import TextEncoder
from memento.memory.provenance import OPERATOR, SHARED_SCOPE, MemoryAccess
from memento.memory.retrieval import distinct_sources, moved_utility

UTILITY_KEY = "utility"
PROVENANCE_KEY, PROVENANCE_VERSION = "provenance", 1  # collection metadata: every case has author and scope
MIGRATE_PAGE = 5000
DEFAULT_COLLECTION = "memento_cases"
WRITE_BATCH = 256
_clients: dict[tuple[str, "ServerAccess"], chromadb.api.ClientAPI] = {}
T = TypeVar("T")
_clients_lock = threading.Lock()


class CaseBankError(RunError, RuntimeError):
    """The case bank cannot be opened or used as configured."""


@dataclass
class Candidates:
    """Nearest-neighbour candidates with their stored embeddings, best first."""

    cases: list[RetrievedCase]
    task_embeddings: np.ndarray  # (n, dim)
    plan_embeddings: np.ndarray  # (n, dim)


def _utility(metadata: dict | None) -> float | None:
    value = (metadata or {}).get(UTILITY_KEY)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class ServerAccess:
    """How to reach a Chroma server: its tenant and database, and the variable holding its token."""

    tenant: str = "default_tenant"
    database: str = "default_database"
    token_env: str = ""

    def headers(self) -> dict[str, str]:
        token = os.environ.get(self.token_env, "") if self.token_env else ""
        return {"Authorization": f"Bearer {token}"} if token else {}


def is_server(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def _check_url(location: str) -> tuple[str, int, bool]:
    try:
        url = urlparse(location)
        port = url.port
    except ValueError as exc:
        raise CaseBankError(f"chroma_url {location!r} is malformed ({exc}): give http://HOST:PORT") from None
    if not url.hostname or url.path not in ("", "/") or url.query:
        raise CaseBankError(f"chroma_url {location!r} is malformed: give http://HOST:PORT (no path)")
    return url.hostname, port or (443 if url.scheme == "https" else 80), url.scheme == "https"


def _server_problem(location: str, exc: BaseException, access: ServerAccess) -> str:
    """One line for a Chroma server that could not be used: down, refused the token, or other."""
    text = " ".join(str(exc).split())[:200]
    lowered = text.lower()
    if any(w in lowered for w in ("401", "403", "unauthorized", "forbidden", "permission")):
        sent = (f"the token in ${access.token_env}" if access.headers() else
                f"no token (${access.token_env} is not set)" if access.token_env else "no token")
        return (f"the Chroma server at {location} refused {sent}: set {access.token_env or 'chroma_token_env'} to a "
                f"token it accepts ({text})")
    if any(w in lowered for w in ("could not connect", "connection refused", "connecterror", "connect call failed",
                                  "name or service not known", "timed out", "all connection attempts failed")):
        return (f"cannot reach the Chroma server at {location}: start it (`chroma run --path DIR --port PORT`) or fix "
                "chroma_url; the cases stored there are kept")
    return f"the Chroma server at {location} failed: {type(exc).__name__}: {text}"


_held_locks: dict[str, int] = {}


def _hold_folder(location: str) -> None:
    """Claim an embedded bank's folder for this process, or refuse: Chroma's embedded client keeps
    its index in memory and is not safe across processes (writes can be missed, or the folder
    damaged), so a second process is told to share the bank through a Chroma server instead."""
    if location in _held_locks:
        return
    folder = Path(location)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".memento-lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise CaseBankError(
            f"the case bank in {location} is open in another process (pid {holder}); an embedded bank serves one "
            f"process at a time: to share it, serve it with `chroma run --path {location} --port 8000` and set "
            "chroma_url = \"http://localhost:8000\" in every process") from None
    except BaseException:
        os.close(fd)
        raise
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
    except OSError:
        pass  # the pid is a courtesy for the message; the lock is what counts
    _held_locks[location] = fd


def release_folder(location: str) -> None:
    """Close this process's client of an embedded bank and let another process open the folder."""
    with _clients_lock:
        _clients.pop((str(location), ServerAccess()), None)
        fd = _held_locks.pop(str(location), None)
    if fd is not None:
        os.close(fd)


def _client(location: str, access: ServerAccess) -> chromadb.api.ClientAPI:
    """One Chroma client per folder, or per server and access, per process (a folder must not have two)."""
    key = (location, access if is_server(location) else ServerAccess())
    with _clients_lock:
        if key not in _clients:
            settings = Settings(anonymized_telemetry=False, allow_reset=False)
            if is_server(location):
                host, port, ssl = _check_url(location)
                try:
                    _clients[key] = chromadb.HttpClient(host=host, port=port, ssl=ssl, headers=access.headers(),
                                                        tenant=access.tenant, database=access.database,
                                                        settings=settings)
                except Exception as exc:  # noqa: BLE001 - chromadb raises plain ValueError and friends
                    raise CaseBankError(_server_problem(location, exc, access)) from None
            else:
                _hold_folder(location)
                try:
                    _clients[key] = chromadb.PersistentClient(path=location, settings=settings)
                except BaseException:
                    os.close(_held_locks.pop(location))
                    raise
        return _clients[key]


def _transient(exc: BaseException) -> bool:
    import httpx

    return isinstance(exc, (httpx.TransportError, ConnectionError, TimeoutError))


def retrying(call: Callable[[], T], attempts: int = 3, pause: float = 0.5) -> T:
    """`call`, tried again after a dropped connection or a timeout (at most `attempts` times, with
    growing pauses); any other failure at once. Only for idempotent calls: reads and upserts."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:
            if not _transient(exc) or attempt == attempts - 1:
                raise
            time.sleep(pause * (2 ** attempt))
    raise AssertionError("unreachable")


class _Guarded:
    """A Chroma collection whose calls (all idempotent: reads, upserts, updates, deletes by id) are
    tried again after a dropped connection or a timeout, and whose failures on a server become one
    line naming the server. A call that failed raised: nothing is reported as written that was not."""

    _CALLS = frozenset({"get", "query", "count", "upsert", "update", "delete"})

    def __init__(self, collection: Any, location: str, access: ServerAccess) -> None:
        self._collection, self._location, self._access = collection, location, access

    @property
    def name(self) -> str:
        return self._collection.name

    @property
    def metadata(self) -> dict | None:
        return self._collection.metadata

    def __getattr__(self, attr: str) -> Any:
        method = getattr(self._collection, attr)
        if attr not in self._CALLS:
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return retrying(lambda: method(*args, **kwargs))
            except Exception as exc:
                if is_server(self._location):
                    raise CaseBankError(_server_problem(self._location, exc, self._access)) from exc
                raise
        return call


class CaseBank:
    """Write, retrieve and curate cases."""

    def __init__(self, location: str | Path, encoder: TextEncoder,
                 collection: str = DEFAULT_COLLECTION, access: ServerAccess | None = None) -> None:
        if len(collection) < 3:
            raise CaseBankError(f"collection name {collection!r} is too short: Chroma needs 3+ characters")
        self.location = str(location)
        self.encoder = encoder
        self.access = access or ServerAccess()
        metadata = {"hnsw:space": "cosine", "encoder": encoder.name}
        client = _client(self.location, self.access)
        try:
            self._cases = _Guarded(retrying(lambda: client.get_or_create_collection(
                collection, embedding_function=None, metadata=metadata)), self.location, self.access)
            self._plans = _Guarded(retrying(lambda: client.get_or_create_collection(
                f"{collection}_plans", embedding_function=None, metadata=metadata)), self.location, self.access)
        except Exception as exc:
            if is_server(self.location):
                raise CaseBankError(_server_problem(self.location, exc, self.access)) from None
            raise CaseBankError(f"cannot open case bank at {self.location}: {exc}") from exc
        stored_encoder = (self._cases.metadata or {}).get("encoder")
        if stored_encoder and stored_encoder != encoder.name:
            elsewhere = "another collection" if is_server(self.location) else "another data dir"
            raise CaseBankError(
                f"case bank at {self.location} (collection {collection}) was embedded with encoder {stored_encoder!r}, "
                f"not the configured {encoder.name!r}: set the encoder back or use {elsewhere}"
            )
        if (self._cases.metadata or {}).get(PROVENANCE_KEY) != PROVENANCE_VERSION:
            self._record_provenance()

    def _record_provenance(self) -> None:
        """Give the cases stored before provenance was recorded their author and scope (the operator's,
        shared, not quarantined), once per bank: retrieval filters on these keys, and Chroma's filters
        cannot match a missing key. The collection is then marked, so this is not read again."""
        offset = 0
        while True:
            got = self._cases.get(include=["metadatas"], limit=MIGRATE_PAGE, offset=offset)
            old = [i for i, m in zip(got["ids"], got["metadatas"]) if "scope" not in (m or {})]
            if old:
                self._cases.update(ids=old, metadatas=[{"author": OPERATOR, "scope": SHARED_SCOPE, "quarantined": False}
                                                       for _ in old])
            if len(got["ids"]) < MIGRATE_PAGE:
                break
            offset += MIGRATE_PAGE
        kept = {k: v for k, v in (self._cases.metadata or {}).items() if not k.startswith("hnsw:")}
        self._cases._collection.modify(metadata={**kept, PROVENANCE_KEY: PROVENANCE_VERSION})

    @property
    def collection_id(self) -> str:
        """The id Chroma gave the case collection: the same for every client of one bank."""
        return str(self._cases._collection.id)

    def count(self) -> int:
        return self._cases.count()

    def write(self, case: Case) -> Case:
        """Insert or replace a case by id. Writing the same id twice leaves one case."""
        existing = self.get(case.id)
        stamped = case.model_copy(update={
            "created_at": existing.created_at if existing else case.created_at, "updated_at": utc_now()})
        return self.write_many([stamped])[0]

    def write_many(self, cases: list[Case]) -> list[Case]:
        """Embed and upsert cases in batches (task and plan texts in one encoder call per batch)."""
        for start in range(0, len(cases), WRITE_BATCH):
            batch = cases[start:start + WRITE_BATCH]
            vectors = self.encoder.encode([c.task for c in batch] + [c.plan_text() for c in batch])
            self.put_embedded(batch, vectors[:len(batch)], vectors[len(batch):])
        return cases

    def write_all(self, cases: list[Case]) -> list[Case]:
        """`write_many`, all or nothing: every text is encoded before anything is written, and if a
        write fails part-way, the cases it added are removed and those it replaced are put back."""
        if not cases:
            return cases
        ids = [c.id for c in cases]
        kept_cases = self._cases.get(ids=ids, include=["documents", "metadatas", "embeddings"])
        kept_plans = (self._plans.get(ids=kept_cases["ids"], include=["embeddings"]) if kept_cases["ids"]
                      else {"ids": []})
        vectors = self.encoder.encode([c.task for c in cases] + [c.plan_text() for c in cases])
        tasks, plans = vectors[:len(cases)], vectors[len(cases):]
        try:
            for start in range(0, len(cases), WRITE_BATCH):
                end = start + WRITE_BATCH
                self.put_embedded(cases[start:end], tasks[start:end], plans[start:end])
        except Exception:
            added = sorted(set(ids) - set(kept_cases["ids"]))
            if added:
                self._cases.delete(ids=added)
                self._plans.delete(ids=added)
            if kept_cases["ids"]:
                self._cases.upsert(ids=kept_cases["ids"], embeddings=kept_cases["embeddings"],
                                   documents=kept_cases["documents"], metadatas=kept_cases["metadatas"])
            if kept_plans["ids"]:
                self._plans.upsert(ids=kept_plans["ids"], embeddings=kept_plans["embeddings"])
            raise
        return cases

    def put_embedded(self, cases: list[Case], task_embeddings: np.ndarray, plan_embeddings: np.ndarray) -> None:
        """Upsert cases whose embeddings are already computed (bulk loads, benchmarks)."""
        ids = [c.id for c in cases]
        # Plans first: a case is visible to retrieval only once both of its vectors exist.
        self._plans.upsert(ids=ids, embeddings=np.asarray(plan_embeddings, dtype=np.float32))
        self._cases.upsert(ids=ids, embeddings=np.asarray(task_embeddings, dtype=np.float32),
                           documents=[c.task for c in cases], metadatas=[c.to_metadata() for c in cases])

    def candidates(self, query_embedding: np.ndarray, n: int, query_text: str | None = None,
                   vectors: bool = True, access: MemoryAccess | None = None) -> Candidates:
        """The n cases nearest to the query embedding (fewer when the bank holds fewer), best
        first: one HNSW query, no count. With `vectors`, their stored task and plan embeddings too
        (what the Q-retriever reads); without, those arrays are empty and nothing more is fetched
        than the ranking and the prompt need (documents, metadata, distances).
        `query_text` (the query's text) is not needed here; a bank over a LangGraph store
        (`memento.memory.store.StoreCaseBank`) searches by it. `access`: only the cases of the scopes
        it may read, none quarantined (Chroma applies the filter inside the index search)."""
        dim = int(np.asarray(query_embedding).shape[-1])
        empty = np.zeros((0, dim), np.float32)
        if n <= 0:
            return Candidates([], empty, empty)
        include = ["documents", "metadatas", "distances"] + (["embeddings"] if vectors else [])
        hits = self._cases.query(query_embeddings=[np.asarray(query_embedding, dtype=np.float32)], n_results=n,
                                 include=include, where=access.where() if access else None)
        ids = hits["ids"][0]
        cases = [RetrievedCase(**Case.from_record(i, d, m).model_dump(), similarity=round(1.0 - float(dist), 4),
                               utility=_utility(m))
                 for i, d, m, dist in zip(ids, hits["documents"][0], hits["metadatas"][0], hits["distances"][0])]
        if not vectors or not cases:
            return Candidates(cases, empty, empty)
        return Candidates(cases, np.asarray(hits["embeddings"][0], dtype=np.float32), self._plan_embeddings(cases))

    def nearest(self, query_embedding: np.ndarray, k: int, n: int, distinct: bool = True,
                access: MemoryAccess | None = None) -> list[RetrievedCase]:
        """The k cases nearest to the query embedding, among its n nearest, one per source task
        when `distinct` (`retrieval.distinct_sources`), best first: what similarity and utility
        retrieval show, for close to the cost of the HNSW query itself. The query returns ids and
        distances only; documents and metadata are read for the prefix that decides the k. Replays
        of one task share its text, so its embedding and its distance (up to the encoder's
        arithmetic: `TextEncoder.same_text_distance`): the prefix runs to the end of the k-th chain
        of distances within that of each other, so every attempt at a source task in it is read
        with it, and the pick is the one reading every candidate makes. Only when the source tasks
        of the prefix turn out fewer than k is the rest read. (With an encoder that tells case
        apart, texts differing only in case have different vectors; the pick among such attempts
        then looks at those in the prefix.)"""
        if k <= 0 or n <= 0:
            return []
        hits = self._cases.query(query_embeddings=[np.asarray(query_embedding, dtype=np.float32)],
                                 n_results=max(n, k), include=["distances"], where=access.where() if access else None)
        ids, distances = hits["ids"][0], hits["distances"][0]
        end, groups = 0, 0
        same = self.encoder.same_text_distance()
        while end < len(ids):
            if end == 0 or distances[end] - distances[end - 1] > same:
                groups += 1
                if groups > k:
                    break
            end += 1
        if not distinct:
            end = min(k, len(ids))
        cases = self._read(ids[:end], distances[:end])
        keep = distinct_sources(cases) if distinct else list(range(len(cases)))
        if distinct and len(keep) < k and end < len(ids):
            cases += self._read(ids[end:], distances[end:])
            keep = distinct_sources(cases)
        return [cases[i] for i in keep[:k]]

    def _read(self, ids: list[str], distances: list[float]) -> list[RetrievedCase]:
        if not ids:
            return []
        got = self._cases.get(ids=ids, include=["documents", "metadatas"])
        rows = {i: (d, m) for i, d, m in zip(got["ids"], got["documents"], got["metadatas"])}
        return [RetrievedCase(**Case.from_record(i, *rows[i]).model_dump(), similarity=round(1.0 - float(dist), 4),
                              utility=_utility(rows[i][1]))
                for i, dist in zip(ids, distances) if i in rows]  # a case deleted in between is left out

    def _plan_embeddings(self, cases: list[Case]) -> np.ndarray:
        got = self._plans.get(ids=[c.id for c in cases], include=["embeddings"])
        found = dict(zip(got["ids"], got["embeddings"]))
        missing = [c for c in cases if c.id not in found]
        if missing:  # a bank written before plan embeddings existed: fill in once, then stored
            vectors = self.encoder.encode([c.plan_text() for c in missing])
            self._plans.upsert(ids=[c.id for c in missing], embeddings=vectors)
            found.update({c.id: v for c, v in zip(missing, vectors)})
        return np.asarray([found[c.id] for c in cases], dtype=np.float32)

    def embeddings(self, case_ids: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Stored (ids found, task embeddings, plan embeddings) for the given ids, in their order."""
        if not case_ids:
            empty = np.zeros((0, self.encoder.dim), np.float32)
            return [], empty, empty
        got = self._cases.get(ids=list(case_ids), include=["documents", "metadatas", "embeddings"])
        by_id = {i: (e, Case.from_record(i, d, m)) for i, d, m, e in
                 zip(got["ids"], got["documents"], got["metadatas"], got["embeddings"])}
        ids = [i for i in case_ids if i in by_id]
        if not ids:
            empty = np.zeros((0, self.encoder.dim), np.float32)
            return [], empty, empty
        tasks = np.asarray([by_id[i][0] for i in ids], dtype=np.float32)
        return ids, tasks, self._plan_embeddings([by_id[i][1] for i in ids])

    def retrieve(self, task: str, k: int) -> list[RetrievedCase]:
        """The k cases whose tasks are most similar to `task`, best first."""
        if k <= 0 or self.count() == 0:
            return []  # an empty bank: not even the query is encoded
        return self.candidates(self.encoder.encode([task])[0], k, vectors=False).cases

    def copy_to(self, location: str | Path) -> "CaseBank":
        """Every case, its stored vectors and its metadata (utility included) copied into a new bank
        at `location`, without encoding anything; the copy is returned and this bank is untouched."""
        cases = self._cases.get(include=["documents", "metadatas", "embeddings"])
        plans = self._plans.get(include=["embeddings"])
        copy = CaseBank(location, self.encoder, collection=self._cases.name, access=self.access)
        if copy.count():
            raise CaseBankError(f"cannot copy the case bank into {location}: it already holds cases")
        for start in range(0, len(plans["ids"]), WRITE_BATCH):
            end = start + WRITE_BATCH
            copy._plans.upsert(ids=plans["ids"][start:end], embeddings=plans["embeddings"][start:end])
        for start in range(0, len(cases["ids"]), WRITE_BATCH):
            end = start + WRITE_BATCH
            copy._cases.upsert(ids=cases["ids"][start:end], embeddings=cases["embeddings"][start:end],
                               documents=cases["documents"][start:end], metadatas=cases["metadatas"][start:end])
        return copy

    def update_utilities(self, rewards: dict[str, float], rate: float) -> dict[str, float]:
        """Move each given case's utility one step toward the reward it was credited with
        (`U <- (1 - rate) U + rate r`, from 0.5); cases no longer in the bank are skipped. The
        utility lives in the case's metadata, so a copy of the bank carries it and a rewrite of
        the case keeps it. Returns the new values."""
        if not rewards:
            return {}
        got = self._cases.get(ids=list(rewards), include=["metadatas"])
        moved = {i: moved_utility(_utility(m), rewards[i], rate) for i, m in zip(got["ids"], got["metadatas"])}
        if moved:
            self._cases.update(ids=list(moved), metadatas=[{UTILITY_KEY: v} for v in moved.values()])
        return moved

    def utilities(self, case_ids: list[str]) -> dict[str, float]:
        """The stored utility of each given case that has one (cases no run credited have none)."""
        if not case_ids:
            return {}
        got = self._cases.get(ids=list(case_ids), include=["metadatas"])
        return {i: u for i, m in zip(got["ids"], got["metadatas"]) if (u := _utility(m)) is not None}

    def select(self, author: str | None = None, scope: str | None = None) -> list[str]:
        """The ids of the cases by `author` and in `scope` (either may be None: any)."""
        where = [{"author": author}] if author else []
        where += [{"scope": scope}] if scope else []
        if not where:
            return self._cases.get(include=[])["ids"]
        return self._cases.get(where=where[0] if len(where) == 1 else {"$and": where}, include=[])["ids"]

    def set_provenance(self, case_ids: list[str], **fields: Any) -> list[str]:
        """Set provenance fields (`scope`, `promoted_by`, `quarantined`) of the given cases, keeping the
        rest of each case; returns the ids that existed."""
        allowed = {"scope", "promoted_by", "quarantined"}
        if set(fields) - allowed:
            raise ValueError(f"only {', '.join(sorted(allowed))} can be changed")
        found = self._cases.get(ids=list(case_ids), include=[])["ids"] if case_ids else []
        if found:
            self._cases.update(ids=found, metadatas=[{**fields, "updated_at": utc_now()} for _ in found])
        return found

    def reset_utilities(self) -> int:
        """Forget every case's utility (before utilities are replayed from the learning log)."""
        got = self._cases.get(where={UTILITY_KEY: {"$gte": 0.0}}, include=[])["ids"]
        for start in range(0, len(got), WRITE_BATCH):
            batch = got[start:start + WRITE_BATCH]
            self._cases.update(ids=batch, metadatas=[{UTILITY_KEY: None} for _ in batch])
        return len(got)

    def get(self, case_id: str) -> Case | None:
        got = self._cases.get(ids=[case_id], include=["documents", "metadatas"])
        if not got["ids"]:
            return None
        return Case.from_record(got["ids"][0], got["documents"][0], got["metadatas"][0])

    def list(self, limit: int | None = None, offset: int = 0) -> list[Case]:
        """Cases, oldest first."""
        got = self._cases.get(include=["documents", "metadatas"])
        cases = [Case.from_record(i, d, m) for i, d, m in zip(got["ids"], got["documents"], got["metadatas"])]
        cases.sort(key=lambda c: (c.created_at, c.id))
        end = None if limit is None else offset + limit
        return cases[offset:end]

    def delete(self, case_ids: list[str]) -> list[str]:
        """Delete the given ids; return those that existed."""
        found = self._cases.get(ids=list(case_ids), include=[])["ids"]
        if found:
            self._cases.delete(ids=found)
            self._plans.delete(ids=found)
        return found
