"""Process-wide resources the nodes share: the encoder and the case bank, built once per setting."""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import TYPE_CHECKING

from memento.graph.context import Context
from memento.memory.case_bank import CaseBank, ServerAccess
from memento.memory.encoder import TextEncoder

if TYPE_CHECKING:
    from memento.memory.q_retriever import QRetriever

_lock = threading.Lock()


@lru_cache(maxsize=8)
def shared_encoder(name: str, device: str) -> TextEncoder:
    return TextEncoder(name, device=device)


@lru_cache(maxsize=32)
def _case_bank(location: str, encoder: str, device: str, collection: str, access: ServerAccess) -> CaseBank:
    return CaseBank(location, shared_encoder(encoder, device), collection=collection, access=access)


def server_access(ctx: Context) -> ServerAccess:
    return ServerAccess(tenant=ctx.chroma_tenant, database=ctx.chroma_database, token_env=ctx.chroma_token_env)


def case_bank_for(ctx: Context) -> CaseBank:
    """The case bank the settings point at (one object per bank per process)."""
    with _lock:
        return _case_bank(ctx.case_bank_location(), ctx.encoder, ctx.encoder_device, ctx.collection,
                          server_access(ctx))


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


def forget_retriever(ctx: Context) -> None:
    """Drop the cached retriever (after its checkpoint was replaced by offline training)."""
    with _lock:
        _retrievers.pop(str(ctx.retriever_checkpoint().resolve()), None)


def encoder_loading(ctx: Context) -> str | None:
    """What to tell the user while the encoder loads, or None when it is already loaded."""
    if shared_encoder(ctx.encoder, ctx.encoder_device).loaded:
        return None
    return f"loading the encoder {ctx.encoder}"
