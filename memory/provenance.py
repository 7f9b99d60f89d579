"""Who wrote a case, where its reward came from, and which runs may read it (memory scopes).

Memento's memory is shared and it learns, so whoever writes to it can steer whoever reads it. Every
case therefore records its provenance (`Case.author`, `Case.scope`, `Case.reward_source`,
`Case.reviewer`, `Case.promoted_by`), and a run reads only the scopes it may:

- The **operator** (the CLI, the bench, library use, imports) writes to and reads the `shared`
  scope: one scope, as a single-user Memento always had.
- A **caller** of the served graph (its identity comes from the server's authentication, never from
  the caller's input) writes to and reads its own scope, `caller:<identity>`. It reads the shared
  scope too only when the operator lists it in `shared_readers` ("*": every caller).
- A case enters the shared scope only in ways the operator controls: written by the operator,
  written by a caller the operator lists in `trusted_writers`, or promoted (`memento cases promote`,
  which can record a reviewer who is not the case's author).

Rewards follow the same line: a run by the operator or a trusted writer is *trusted*. Only trusted
runs train the shared Q-retriever and move the utility of shared cases; an untrusted caller's
rewards (its own ground truth, its own approval) move only the utilities of its own cases. A
quarantined case is kept but never retrieved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memento.graph.context import Context
    from memento.memory.case import Case

OPERATOR = "operator"
SHARED_SCOPE = "shared"
CALLER_PREFIX = "caller:"
EVERY_CALLER = "*"
# Where a case's reward came from.
REWARD_SOURCES = ("operator_ground_truth", "caller_ground_truth", "judge", "operator_review", "caller_review",
                  "import", "")
MAX_IDENTITY_CHARS = 200


def caller_author(identity: str) -> str:
    """The author name of a served caller: `caller:` and the identity the server's auth gave it."""
    return f"{CALLER_PREFIX}{identity}"


def author_name(text: str) -> str:
    """An author as an operator types it: `operator`, `caller:alice`, or plain `alice` for a caller."""
    text = text.strip()
    return text if text == OPERATOR or text.startswith(CALLER_PREFIX) else caller_author(text)


def is_author(value: Any) -> bool:
    return isinstance(value, str) and (value == OPERATOR or (
        value.startswith(CALLER_PREFIX) and 0 < len(value) - len(CALLER_PREFIX) <= MAX_IDENTITY_CHARS
        and value.isprintable()))


@dataclass(frozen=True)
class MemoryAccess:
    """What one run may do with the case bank."""

    author: str
    write_scope: str
    read_scopes: tuple[str, ...]
    trusted: bool

    @property
    def is_operator(self) -> bool:
        return self.author == OPERATOR

    def where(self) -> dict[str, Any]:
        """A Chroma metadata filter: the readable scopes, quarantined cases left out."""
        scopes: dict[str, Any] = ({"scope": self.read_scopes[0]} if len(self.read_scopes) == 1
                                  else {"scope": {"$in": list(self.read_scopes)}})
        return {"$and": [scopes, {"quarantined": False}]}

    def may_read(self, case: "Case") -> bool:
        return case.scope in self.read_scopes and not case.quarantined

    def may_credit(self, case: dict[str, Any] | "Case") -> bool:
        """Whether this run's reward may move the case's utility: a trusted run's may move any case it
        read; an untrusted caller's only those of its own scope."""
        scope = case.get("scope", SHARED_SCOPE) if isinstance(case, dict) else case.scope
        return self.trusted or scope == self.write_scope


def _listed(identity: str, names: list[str]) -> bool:
    return EVERY_CALLER in names or identity in names or caller_author(identity) in names


def memory_access(ctx: "Context") -> MemoryAccess:
    """The scopes the run with these settings reads and writes, and whether its rewards are trusted."""
    if ctx.author == OPERATOR:
        return MemoryAccess(OPERATOR, SHARED_SCOPE, (SHARED_SCOPE,), True)
    identity = ctx.author[len(CALLER_PREFIX):]
    trusted = _listed(identity, ctx.trusted_writers)
    own = ctx.author
    reads = (own, SHARED_SCOPE) if trusted or _listed(identity, ctx.shared_readers) else (own,)
    return MemoryAccess(ctx.author, SHARED_SCOPE if trusted else own, reads, trusted)


def reward_source(access: MemoryAccess, scored_by: str) -> str:
    """Where a run's reward came from, from how it was scored and who ran it."""
    if scored_by == "ground_truth":
        return "operator_ground_truth" if access.is_operator else "caller_ground_truth"
    if scored_by == "human":
        return "operator_review" if access.is_operator else "caller_review"
    if scored_by.startswith("judge"):
        return "judge"
    return ""
