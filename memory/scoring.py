"""Answer scoring against ground truth: normalised exact match and token F1.

Ground truth may hold several accepted answers joined by `<|answer_split|>` (the original
Memento data format); an answer scores its best match.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass

ANSWER_SPLIT = "<|answer_split|>"
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(answer: str, truth: str) -> float:
    return float(normalize_answer(answer) == normalize_answer(truth))


def token_f1(answer: str, truth: str) -> float:
    pred, gold = normalize_answer(answer).split(), normalize_answer(truth).split()
    if not pred or not gold:
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class Score:
    reward: float
    exact_match: float | None
    f1: float | None
    scored_by: str
    reason: str = ""


def score_answer(answer: str, ground_truth: str, f1_threshold: float = 0.8) -> Score:
    """Binary reward: 1 when the answer matches exactly or its token F1 reaches the threshold."""
    truths = [t.strip() for t in ground_truth.split(ANSWER_SPLIT) if t.strip()] or [""]
    em = max(exact_match(answer, t) for t in truths)
    f1 = max(token_f1(answer, t) for t in truths)
    reward = 1.0 if em == 1.0 or f1 >= f1_threshold else 0.0
    return Score(reward=reward, exact_match=em, f1=round(f1, 4), scored_by="ground_truth")
