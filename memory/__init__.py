"""Case memory: the case schema, the Chroma case bank, the text encoder and answer scoring.

The names below load on first use, so `import memento.memory.case` does not import Chroma."""

from importlib import import_module
from typing import Any

_WHERE = {
    "Case": "case", "RetrievedCase": "case", "CaseBank": "case_bank", "CaseBankError": "case_bank",
    "EncoderError": "encoder", "TextEncoder": "encoder", "Score": "scoring", "score_answer": "scoring",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"memento.memory.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
