"""Choosing the shown cases: one per source task, MemRL's utility rule, the lexical feature."""

import numpy as np
import pytest

from memento.memory.case import Case
from memento.memory.lexical import PAD, WIDTH, mismatch_ids, mismatch_matrix
from memento.memory.retrieval import INITIAL_UTILITY, distinct_sources, moved_utility, utility_order, zscore


def case(i, task, reward, created):
    return Case(id=f"c{i}", task=task, reward=reward, created_at=created)


def test_one_case_per_source_task_its_latest_success_else_its_latest_attempt():
    cases = [
        case(0, "What is the total?", 0.0, "2026-01-03"),
        case(1, "Another task", 0.0, "2026-01-01"),
        case(2, "what is  the TOTAL?", 1.0, "2026-01-01"),  # the same task, whitespace and case aside
        case(3, "What is the total?", 1.0, "2026-01-02"),
        case(4, "Another task", 0.0, "2026-01-05"),
        case(5, "A third", 1.0, "2026-01-01"),
    ]
    assert distinct_sources(cases) == [3, 4, 5]  # in the order the tasks first appear
    assert distinct_sources([]) == []


def test_utility_order_mixes_z_scores_of_similarity_and_utility():
    similarity = np.array([0.9, 0.8, 0.7])
    assert list(utility_order(similarity, np.full(3, INITIAL_UTILITY))) == [0, 1, 2]  # no utility yet: similarity
    close = np.array([0.9, 0.85, 0.84])
    order = utility_order(close, np.array([0.0, 0.5, 1.0]))  # a useful case a little further away comes first
    score = 0.5 * zscore(close) + 0.5 * zscore(np.array([0.0, 0.5, 1.0]))
    assert list(order) == list(np.argsort(-score)) == [2, 0, 1]
    assert list(zscore(np.array([]))) == []


def test_utility_is_an_exponential_moving_average_from_one_half():
    assert moved_utility(None, 1.0, 0.3) == pytest.approx(0.65)
    assert moved_utility(0.65, 0.0, 0.3) == pytest.approx(0.455)


def test_mismatch_ids_are_the_hashed_words_in_one_task_only_with_the_cases_outcome():
    same = mismatch_ids("What is the total cost for March?", "what is the TOTAL cost for march")
    assert (same != PAD).sum() == 1 and same.shape == (WIDTH,)  # only the outcome's own id
    one = mismatch_ids("total retail cost in March", "total wholesale cost in March")
    other = mismatch_ids("total wholesale cost in June", "total retail cost in June")
    assert (one != PAD).sum() == 3 and set(one) == set(other)  # symmetric, and blind to the rest
    failed = mismatch_ids("total retail cost in March", "total wholesale cost in March", success=False)
    assert set(failed[failed != PAD]).isdisjoint(one[one != PAD])  # a failed case's mismatch weighs apart
    matrix = mismatch_matrix("a b", ["a c", "a b"], [True, False])
    assert matrix.shape == (2, WIDTH) and (matrix[1] != PAD).sum() == 1 and matrix[1][0] == failed[0]
    long = mismatch_ids(" ".join(f"w{i}" for i in range(2 * WIDTH)), "x")
    assert (long != PAD).all()  # at most WIDTH ids
