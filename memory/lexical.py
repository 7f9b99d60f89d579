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
WIDTH = 256  # ids per pair: the outcome, the difference, then the word pairs in the room left (smallest hashes first)
PAD = BUCKETS  # the index of the all-zero padding row
_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> frozenset[str]:
    return frozenset(w.casefold() for w in _WORD.findall(text))


def _bucket(word: str, success: bool = True) -> int:
    return zlib.crc32(f"{'+' if success else '-'}{word}".encode("utf-8")) % BUCKETS


OUTCOME = "\x00outcome"  # not a word (\\w+ never yields a NUL): the per-outcome bias


PAIR = "\x01"  # joins two words into one feature (\\w+ never yields it)


def mismatch_ids(task: str | frozenset[str], case: str | frozenset[str], success: bool = True,
                 pairs: bool = False) -> np.ndarray:
    """The outcome's bias id, then the hashed words in one text and not the other (with the
    case's outcome), then, with `pairs`, the hashed pairs (a word only the task says, a word only
    the case says), as WIDTH int32 ids padded with PAD.

    The pairs are what carries over between wordings. Two tasks of one kind worded differently
    ("in-store" and "shop floor") differ in their words as look-alikes ("in-store" and
    "wholesale") do, so the difference alone gives both the same cost; the pair of words says which
    was said against which, and its weight learns that one swap is harmless and the other is not.
    A pair is unordered (the same id from either side) and an irrelevant word pairs with every
    case alike. When there are more pairs than room (what the difference leaves of WIDTH), those
    with the smallest hashes are kept (the same choice for every case)."""
    a = words(task) if isinstance(task, str) else task
    b = words(case) if isinstance(case, str) else case
    ids = [_bucket(OUTCOME, success)] + sorted({_bucket(w, success) for w in a ^ b})[:WIDTH - 1]
    if pairs:
        mine, theirs = a - b, b - a
        # `_bucket(PAIR.join(sorted((u, v))), success)`, without building each pair's string: the
        # CRC of the first word's prefix is taken once and continued over the second word's bytes.
        sign = "+" if success else "-"
        head = {w: zlib.crc32(f"{sign}{w}{PAIR}".encode("utf-8")) for w in mine | theirs}
        tail = {w: w.encode("utf-8") for w in mine | theirs}
        ids += sorted({zlib.crc32(tail[v], head[u]) % BUCKETS if u < v else zlib.crc32(tail[u], head[v]) % BUCKETS
                       for u in mine for v in theirs})[:WIDTH - len(ids)]
    out = np.full(WIDTH, PAD, np.int32)
    out[:len(ids)] = ids
    return out


def mismatch_matrix(task: str, cases: list[str], successes: list[bool] | None = None,
                    pairs: bool = False) -> np.ndarray:
    """`mismatch_ids` of one task against each case (successes by default): shape (len(cases), WIDTH)."""
    if not cases:
        return np.full((0, WIDTH), PAD, np.int32)
    mine = words(task)
    outcomes = successes if successes is not None else [True] * len(cases)
    return np.stack([mismatch_ids(mine, case, ok, pairs) for case, ok in zip(cases, outcomes)])


def trimmed(matrix: np.ndarray) -> list[list[int]]:
    """The ids of each row without their padding: how rows are written to the learning log."""
    return [[int(v) for v in row if v != PAD] for row in np.asarray(matrix)]


def padded(rows: list[list[int]]) -> np.ndarray:
    """Rows of at most WIDTH ids (trimmed, or padded at another width) as a (len(rows), WIDTH) matrix."""
    out = np.full((len(rows), WIDTH), PAD, np.int32)
    for i, row in enumerate(rows):
        ids = [v for v in row if v != PAD]
        out[i, :len(ids)] = ids
    return out
