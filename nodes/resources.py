"""Process-wide resources the nodes share: the encoder and the case bank, built once per setting."""

from __future__ import annotations

import threading
from functools import lru_cache

from memento.graph.context import Context
from memento.memory.case_bank import CaseBank
from memento.memory.encoder import TextEncoder

_lock = threading.Lock()


@lru_cache(maxsize=8)
def shared_encoder(name: str, device: str) -> TextEncoder:
    return TextEncoder(name, device=device)


@lru_cache(maxsize=32)
def _case_bank(location: str, encoder: str, device: str, collection: str) -> CaseBank:
    return CaseBank(location, shared_encoder(encoder, device), collection=collection)


def case_bank_for(ctx: Context) -> CaseBank:
    """The case bank the settings point at (one object per bank per process)."""
    with _lock:
        return _case_bank(ctx.case_bank_location(), ctx.encoder, ctx.encoder_device, ctx.collection)
