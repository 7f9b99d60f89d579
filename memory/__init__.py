"""Case memory: the case schema, the Chroma case bank, the text encoder and answer scoring."""

from memento.memory.case import Case, RetrievedCase
from memento.memory.case_bank import CaseBank, CaseBankError
from memento.memory.encoder import EncoderError, TextEncoder
from memento.memory.scoring import Score, score_answer

__all__ = [
    "Case",
    "CaseBank",
    "CaseBankError",
    "EncoderError",
    "RetrievedCase",
    "Score",
    "TextEncoder",
    "score_answer",
]
