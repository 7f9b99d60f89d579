"""The case bank: cases in a Chroma collection, embedded once, at write time.

Embeddings are the task texts encoded by the project's own encoder and stored with each
case; retrieval encodes only the query. Chroma's default embedding function is never used
(it downloads a model). One process owns a `PersistentClient` folder; several processes
share a bank through a Chroma server (`chroma_url`).
"""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import urlparse

import chromadb
from chromadb.config import Settings

from memento.memory.case import Case, RetrievedCase, utc_now
from memento.memory.encoder import TextEncoder

DEFAULT_COLLECTION = "memento_cases"
_clients: dict[str, chromadb.api.ClientAPI] = {}
_clients_lock = threading.Lock()


class CaseBankError(RuntimeError):
    """The case bank cannot be opened or used as configured."""


def _client(location: str) -> chromadb.api.ClientAPI:
    """One Chroma client per folder or URL per process (a folder must not have two)."""
    with _clients_lock:
        if location not in _clients:
            settings = Settings(anonymized_telemetry=False, allow_reset=False)
            if location.startswith(("http://", "https://")):
                url = urlparse(location)
                _clients[location] = chromadb.HttpClient(
                    host=url.hostname, port=url.port or (443 if url.scheme == "https" else 80),
                    ssl=url.scheme == "https", settings=settings,
                )
            else:
                Path(location).mkdir(parents=True, exist_ok=True)
                _clients[location] = chromadb.PersistentClient(path=location, settings=settings)
        return _clients[location]


class CaseBank:
    """Write, retrieve and curate cases."""

    def __init__(self, location: str | Path, encoder: TextEncoder,
                 collection: str = DEFAULT_COLLECTION) -> None:
        if len(collection) < 3:
            raise CaseBankError(f"collection name {collection!r} is too short: Chroma needs 3+ characters")
        self.location = str(location)
        self.encoder = encoder
        try:
            self._collection = _client(self.location).get_or_create_collection(
                collection, embedding_function=None,
                metadata={"hnsw:space": "cosine", "encoder": encoder.name},
            )
        except Exception as exc:
            raise CaseBankError(f"cannot open case bank at {self.location}: {exc}") from exc
        stored_encoder = (self._collection.metadata or {}).get("encoder")
        if stored_encoder and stored_encoder != encoder.name:
            raise CaseBankError(
                f"case bank at {self.location} was embedded with encoder {stored_encoder!r}, "
                f"not the configured {encoder.name!r}: set the encoder back or use another data dir"
            )

    def count(self) -> int:
        return self._collection.count()

    def write(self, case: Case) -> Case:
        """Insert or replace a case by id. Writing the same id twice leaves one case."""
        existing = self.get(case.id)
        stamped = case.model_copy(update={
            "created_at": existing.created_at if existing else case.created_at,
            "updated_at": utc_now(),
        })
        embedding = self.encoder.encode([stamped.task])[0]
        self._collection.upsert(
            ids=[stamped.id], embeddings=[embedding.tolist()], documents=[stamped.task],
            metadatas=[stamped.to_metadata()],
        )
        return stamped

    def retrieve(self, task: str, k: int) -> list[RetrievedCase]:
        """The k cases whose tasks are most similar to `task`, best first."""
        if k <= 0 or self.count() == 0:
            return []
        query = self.encoder.encode([task])[0]
        hits = self._collection.query(
            query_embeddings=[query.tolist()], n_results=k, include=["documents", "metadatas", "distances"],
        )
        cases = []
        for case_id, doc, meta, dist in zip(hits["ids"][0], hits["documents"][0],
                                             hits["metadatas"][0], hits["distances"][0]):
            base = Case.from_record(case_id, doc, meta)
            cases.append(RetrievedCase(**base.model_dump(), similarity=round(1.0 - float(dist), 4)))
        return cases

    def get(self, case_id: str) -> Case | None:
        got = self._collection.get(ids=[case_id], include=["documents", "metadatas"])
        if not got["ids"]:
            return None
        return Case.from_record(got["ids"][0], got["documents"][0], got["metadatas"][0])

    def list(self, limit: int | None = None, offset: int = 0) -> list[Case]:
        """Cases, oldest first."""
        got = self._collection.get(include=["documents", "metadatas"])
        cases = [Case.from_record(i, d, m) for i, d, m in zip(got["ids"], got["documents"], got["metadatas"])]
        cases.sort(key=lambda c: (c.created_at, c.id))
        end = None if limit is None else offset + limit
        return cases[offset:end]

    def delete(self, case_ids: list[str]) -> list[str]:
        """Delete the given ids; return those that existed."""
        found = self._collection.get(ids=list(case_ids), include=[])["ids"]
        if found:
            self._collection.delete(ids=found)
        return found
