"""Generic lexical features of a (task, case) pair, for the Q-retriever.

Two texts that differ in one word can sit at cosine 0.97 in embedding space, and whether that
word matters (a different customer segment) or not (a different month) is exactly what a
similarity ranking cannot know and a learner can. The feature is the symmetric difference of the
two texts' word sets, each word hashed into one of `BUCKETS` buckets: the network learns a weight
per bucket, so a mismatch on a word that has been seen to mislead lowers a case's value, and a
mismatch on a word that has not costs nothing.

Words are hashed together with the case's outcome (success or failure): a look-alike's success
misleads (its plan is followed), while its failure may help (what it did is avoided), so the
same mismatch has two weights. One more id per pair, the outcome alone, is a learned bias per
outcome. Nothing here knows any vocabulary: words are lower-cased `\\w+` runs, hashed with a
fixed hash (the same ids in every process and version).
"""

from __future__ import annotations

import re
import zlib

import numpy as np

BUCKETS = 1 << 14
WIDTH = 64  # ids per pair: the outcome, the difference (the smallest hashes, when more), then plan pairs in the room left
PAD = BUCKETS  # the index of the all-zero padding row
_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> frozenset[str]:
    return frozenset(w.casefold() for w in _WORD.findall(text))


def _bucket(word: str, success: bool = True) -> int:
    return zlib.crc32(f"{'+' if success else '-'}{word}".encode("utf-8")) % BUCKETS


OUTCOME = "\x00outcome"  # not a word (\\w+ never yields a NUL): the per-outcome bias


PAIR = "\x01"  # joins a task word and a plan word into one feature (\\w+ never yields it)


def mismatch_ids(task: str | frozenset[str], case: str | frozenset[str], success: bool = True,
                 plan: str | frozenset[str] | None = None) -> np.ndarray:
    """The outcome's bias id, then the hashed words in one text and not the other (with the
    case's outcome), then, given the case's `plan`, the hashed pairs (a word of the task, a word of
    the plan the task does not hold), as WIDTH int32 ids padded with PAD.

    The pairs are what carries over between wordings: "tasks that say w succeeded (or failed) with
    plans that say v". Two tasks of one kind worded differently differ in their words as
    look-alikes do, so the difference alone cannot tell them apart; which plan worked for which
    words can, and an irrelevant word pairs with every plan alike. When there are more pairs than
    room (what the difference leaves of WIDTH), those with the smallest hashes are kept (the same
    pairs for every case). The room is the release's WIDTH, so the replay buffer and every row of
    the learning log stay as small as they were while the pairs are off (their default)."""
    a = words(task) if isinstance(task, str) else task
    b = words(case) if isinstance(case, str) else case
    ids = [_bucket(OUTCOME, success)] + sorted({_bucket(w, success) for w in a ^ b})[:WIDTH - 1]
    if plan is not None:
        steps = (words(plan) if isinstance(plan, str) else plan) - a
        ids += sorted({_bucket(f"{w}{PAIR}{v}", success) for w in a for v in steps})[:WIDTH - len(ids)]
    out = np.full(WIDTH, PAD, np.int32)
    out[:len(ids)] = ids
    return out


def mismatch_matrix(task: str, cases: list[str], successes: list[bool] | None = None,
                    plans: list[str] | None = None) -> np.ndarray:
    """`mismatch_ids` of one task against each case (successes by default; with `plans`, the
    task-word and plan-word pairs too): shape (len(cases), WIDTH)."""
    if not cases:
        return np.full((0, WIDTH), PAD, np.int32)
    mine = words(task)
    outcomes = successes if successes is not None else [True] * len(cases)
    steps = plans if plans is not None else [None] * len(cases)
    return np.stack([mismatch_ids(mine, case, ok, plan) for case, ok, plan in zip(cases, outcomes, steps)])

