"""What lets the learner carry over between wordings, and its fallback to similarity."""

import numpy as np

from memento.memory.lexical import PAD, WIDTH, mismatch_ids, mismatch_matrix
from memento.memory.q_retriever import GATE_DECAY, GATE_MARGIN, QRetriever

DIM = 16
PLAN_RIGHT = "Read the file. Take the column net_cost. Compute the total."
PLAN_WRONG = "Read the file. Take the column list_cost. Compute the total."


def ids(row):
    return {int(i) for i in row if i != PAD}


def test_plan_pairs_tie_a_tasks_words_to_what_the_plan_did():
    in_store = mismatch_ids("total cost of in-store sales in March", "total cost of shop floor sales in May", True,
                            PLAN_RIGHT)
    shop_floor = mismatch_ids("total cost of shop floor sales in June", "total cost of retail sales in May", True,
                              PLAN_RIGHT)
    no_plan = mismatch_ids("total cost of in-store sales in March", "total cost of shop floor sales in May", True)
    assert ids(no_plan) < ids(in_store)  # the difference, and pairs beside it
    assert len(ids(in_store) - ids(no_plan)) > 10
    # Both tasks say "cost", "total", "sales": the pairs of those words with this plan's own words are shared.
    assert len((ids(in_store) - ids(no_plan)) & ids(shop_floor)) >= 3
    wrong = mismatch_ids("total cost of in-store sales in March", "total cost of shop floor sales in May", True,
                         PLAN_WRONG)
    assert ids(wrong) != ids(in_store)
    assert mismatch_matrix("a b", ["a c", "a d"], [True, False], [PLAN_RIGHT, PLAN_WRONG]).shape == (2, WIDTH)


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def test_the_learned_order_is_used_only_once_it_beats_similarity_on_runs_not_yet_learned():
    retriever = QRetriever(DIM, "enc", "cpu")
    rng = np.random.default_rng(0)
    task = unit(rng.normal(size=DIM))
    near, far = unit(task + 0.1 * rng.normal(size=DIM)), unit(task + 0.8 * rng.normal(size=DIM))
    cases, plans = np.stack([near, far]), np.stack([unit(rng.normal(size=DIM)) for _ in range(2)])
    words = mismatch_matrix("total cost of in-store sales", ["total cost of retail sales", "total cost of shop sales"],
                            [True, True], [PLAN_WRONG, PLAN_RIGHT])
    assert retriever.check_ranking(task, cases, plans, [0.0, 1.0], words) == (0, 0)  # untrained: no evidence
    assert not retriever.ahead
    # Train it to prefer the far case (its plan worked); similarity prefers the near one.
    for episode in range(6):
        retriever.observe(task, cases, plans, np.array([0.0, 1.0]), episode=f"e{episode}", mismatch=words)
        retriever.update(20)
    q = retriever.q_values(task, cases, plans, words)
    assert q[1] > q[0] and not retriever.ahead  # trained, but it has not shown it yet
    won = retriever.check_ranking(task, cases, plans, [0.0, 1.0], words)
    assert won == (1, 0)
    for _ in range(3):
        retriever.check_ranking(task, cases, plans, [0.0, 1.0], words)
    assert retriever.gate[0] >= GATE_MARGIN and retriever.ahead
    # Evidence against it: the near case was the right one after all, again and again.
    for _ in range(12):
        retriever.check_ranking(task, cases, plans, [1.0, 0.0], words)
    assert not retriever.ahead and retriever.gate[1] > retriever.gate[0]
    assert 0 < GATE_DECAY < 1


def test_the_gate_travels_with_the_weights():
    retriever = QRetriever(DIM, "enc", "cpu")
    retriever.gate = [3.5, 1.0]
    again = QRetriever.from_bytes(retriever.to_bytes(), "enc", "cpu")
    assert again.gate == [3.5, 1.0]
    state = retriever.state()
    del state["gate"]  # a checkpoint from before the check: its ranking is used, as it was
    assert QRetriever.from_state(state, "enc", "cpu", "old").gate == [GATE_MARGIN, 0.0]
