"""Choosing the K cases a planner sees from the nearest candidates: one per source task, then
ranked by similarity, by the Q-retriever, or by similarity and utility (MemRL's rule).

Every function here is pure: candidates and scores in, indices out.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from memento.memory.case import Case

INITIAL_UTILITY = 0.5  # MemRL's q_init: a case no run has credited yet is neither good nor bad


def source_key(task: str) -> str:
    """Which source task a case is an attempt at: its task text, whitespace and case folded."""
    return " ".join(task.split()).casefold()


def distinct_sources(cases: Sequence[Case]) -> list[int]:
    """Indices of one case per source task, in the order the tasks first appear.

    A task attempted several times (a benchmark's replays, a user asking again) is represented by
    its latest successful attempt if it ever succeeded, since what worked is the lesson to follow;
    otherwise by its latest attempt, the most recent evidence of what fails."""
    chosen: dict[str, int] = {}  # source task -> its representative; dicts keep first-seen order
    for i, case in enumerate(cases):
        key = source_key(case.task)
        best = cases[chosen[key]] if key in chosen else None
        if best is None or (case.success, case.created_at) > (best.success, best.created_at):
            chosen[key] = i
    return list(chosen.values())


def zscore(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return values
    spread = values.std()
    return np.zeros_like(values) if spread < 1e-12 else (values - values.mean()) / spread


def utility_order(similarities: np.ndarray, utilities: np.ndarray) -> np.ndarray:
    """Candidates ordered by 0.5 z(similarity) + 0.5 z(utility), best first (ties: nearer first)."""
    score = 0.5 * zscore(similarities) + 0.5 * zscore(utilities)
    return np.argsort(-score, kind="stable")


def moved_utility(current: float | None, reward: float, rate: float) -> float:
    """One step of the exponential moving average `U <- (1 - a) U + a r`."""
    start = INITIAL_UTILITY if current is None else float(current)
    return (1.0 - rate) * start + rate * float(reward)
