"""Moved to `memento.memory.resources` (the encoder, case bank and retriever a process shares);
kept so that existing imports work."""

from memento.memory.resources import case_bank_for, forget_retriever, retriever_for, shared_encoder

__all__ = ["case_bank_for", "forget_retriever", "retriever_for", "shared_encoder"]
