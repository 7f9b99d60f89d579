"""Process-wide resources the nodes share: the encoder and the case bank, built once per setting."""

from __future__ import annotations

import threading
import weakref
from functools import lru_cache
from typing import TYPE_CHECKING

from memento.graph.context import Context
from memento.memory.case_bank import CaseBank, ServerAccess
from memento.memory.encoder import TextEncoder

if TYPE_CHECKING:
    from langgraph.store.base import BaseStore

    from memento.memory.learner import Version
    from memento.memory.q_retriever import QRetriever
    from memento.memory.store import CaseVectors, StoreCaseBank

_lock = threading.Lock()


@lru_cache(maxsize=8)
def shared_encoder(name: str, device: str) -> TextEncoder:
    return TextEncoder(name, device=device)


@lru_cache(maxsize=32)
def _case_bank(location: str, encoder: str, device: str, collection: str, access: ServerAccess) -> CaseBank:
    return CaseBank(location, shared_encoder(encoder, device), collection=collection, access=access)


def server_access(ctx: Context) -> ServerAccess:
    return ServerAccess(tenant=ctx.chroma_tenant, database=ctx.chroma_database, token_env=ctx.chroma_token_env)


# Per store (dropped with it), per encoder: the case embeddings a StoreCaseBank computed.
_store_vectors: "weakref.WeakKeyDictionary[BaseStore, dict[tuple[str, str], CaseVectors]]" = \
    weakref.WeakKeyDictionary()


def case_bank_for(ctx: Context, store: "BaseStore | None" = None) -> "CaseBank | StoreCaseBank":
    """The case bank the settings point at (one object per bank per process); given a LangGraph
    `store`, the cases in that store instead (`StoreCaseBank`), with one cache of case embeddings
    per store and encoder, dropped with the store."""
    if store is None:
        with _lock:
            return _case_bank(ctx.case_bank_location(), ctx.encoder, ctx.encoder_device, ctx.collection,
                              server_access(ctx))
    from memento.memory.store import CaseVectors, StoreCaseBank

    with _lock:
        try:
            per_store = _store_vectors.setdefault(store, {})
        except TypeError:  # a store that cannot be weakly referenced or hashed: no cache kept
            per_store = {}
        vectors = per_store.setdefault((ctx.encoder, ctx.encoder_device), CaseVectors())
    return StoreCaseBank(store, shared_encoder(ctx.encoder, ctx.encoder_device), vectors=vectors)


def release_case_banks() -> None:
    """Close this process's embedded banks, so another process may open their folders."""
    from memento.memory.case_bank import _held_locks, release_folder

    with _lock:
        _case_bank.cache_clear()
    for location in list(_held_locks):
        release_folder(location)


_retrievers: dict[str, "QRetriever"] = {}


def retriever_for(ctx: Context) -> "QRetriever":
    """The Q-retriever at the configured checkpoint: loaded if it exists, else a new network.

    One object per checkpoint per process, so every run in the process learns into the same one."""
    from memento.memory.q_retriever import QRetriever  # torch: only when retrieval needs it

    path = ctx.retriever_checkpoint()
    key = str(path.resolve())
    with _lock:
        if key not in _retrievers:
            encoder = shared_encoder(ctx.encoder, ctx.encoder_device)
            if path.exists():
                _retrievers[key] = QRetriever.load(path, ctx.encoder, ctx.retriever_device)
            else:
                _retrievers[key] = QRetriever(encoder.dim, ctx.encoder, ctx.retriever_device)
        return _retrievers[key]


def current_retriever(ctx: Context, bank: CaseBank | None = None) -> "QRetriever":
    """`retriever_for`, brought up to the newest version another worker published to the learning
    log, if there is a newer one (one small query per call; the weights come in the same read)."""
    from memento.memory.learner import learning_log

    retriever = retriever_for(ctx)
    newest = learning_log(ctx, bank).newest(retriever.version)
    if newest is not None:
        retriever = adopt_version(ctx, newest[1], newest[0])
    return retriever


def adopt_version(ctx: Context, weights: bytes, version: "Version") -> "QRetriever":
    """Make the given published weights this process's retriever for these settings."""
    from memento.memory.q_retriever import QRetriever

    retriever = QRetriever.from_bytes(weights, ctx.encoder, ctx.retriever_device, f"version {version.version}")
    retriever.version, retriever.learned_seq, retriever.published_at = (version.version, version.learned_seq,
                                                                         version.created_at)
    with _lock:
        _retrievers[str(ctx.retriever_checkpoint().resolve())] = retriever
    return retriever


def forget_retriever(ctx: Context) -> None:
    """Drop the cached retriever (after its checkpoint was replaced by offline training)."""
    with _lock:
        _retrievers.pop(str(ctx.retriever_checkpoint().resolve()), None)


def encoder_loading(ctx: Context) -> str | None:
    """What to tell the user while the encoder loads, or None when it is already loaded."""
    if shared_encoder(ctx.encoder, ctx.encoder_device).loaded:
        return None
    return f"loading the encoder {ctx.encoder}"
