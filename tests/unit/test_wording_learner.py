"""What lets the learner carry over between wordings, and its fallback to similarity."""

import numpy as np

from memento.memory.lexical import PAD, WIDTH, mismatch_ids, mismatch_matrix, padded, trimmed
from memento.memory.q_retriever import GATE_DECAY, GATE_MARGIN, QRetriever

DIM = 16


def ids(row):
    return {int(i) for i in row if i != PAD}


def test_word_pairs_say_which_word_was_said_against_which():
    task, reworded, lookalike = ("total cost of in-store sales in March", "total cost of shop floor sales in May",
                                 "total cost of wholesale sales in May")
    plain = ids(mismatch_ids(task, reworded, True))
    paired = ids(mismatch_ids(task, reworded, True, pairs=True))
    assert plain < paired  # the difference, and the pairs beside it
    # one pair per (word only the task says, word only the case says): {store, march} x {shop, floor, may}
    assert len(paired - plain) == 6
    assert paired == ids(mismatch_ids(reworded, task, True, pairs=True))  # unordered
    other = ids(mismatch_ids(task, lookalike, True, pairs=True))
    assert (paired - plain) & other  # (march, may) is in both
    assert (paired - plain) - other  # (store, shop) is not
    assert ids(mismatch_ids(task, reworded, False, pairs=True)).isdisjoint(paired)  # the outcome is part of each id
    long = mismatch_ids(" ".join(f"a{i}" for i in range(40)), " ".join(f"b{i}" for i in range(40)), pairs=True)
    assert len(ids(long)) == WIDTH  # 80 words and 1,600 pairs: the room is full, and no more
    assert mismatch_matrix("a b", ["a c", "a d"], [True, False], pairs=True).shape == (2, WIDTH)


def test_learning_log_rows_are_written_without_their_padding_and_read_back_at_any_width():
    matrix = mismatch_matrix("total cost of in-store sales", ["total cost of shop floor sales", "total cost"],
                             [True, False], pairs=True)
    rows = trimmed(matrix)
    assert [len(r) for r in rows] == [len(ids(m)) for m in matrix] and PAD not in rows[0]
    assert (padded(rows) == matrix).all()
    old = [list(matrix[0][:3]) + [PAD] * 61]  # a row of the release's width, padded
    assert (padded(old)[0][:3] == matrix[0][:3]).all() and (padded(old)[0][3:] == PAD).all()


def test_the_pairs_learn_a_swap_that_is_harmless_for_one_wording_and_misleading_for_another():
    """One kind of task is said "in-store" or "shop floor", its look-alike "wholesale" or "bulk".
    All four texts sit at the same point in embedding space, and each case word is right for one
    task and wrong for the other: no weight of a single word can rank both tasks' cases; weights
    of pairs can, and for a task they have not seen (another month)."""
    def learner(pairs):
        retriever = QRetriever(DIM, "enc", "cpu")
        v = unit(np.ones(DIM))
        cases = np.stack([v, v])
        for episode in range(40):
            month = ["March", "April", "June", "July"][episode % 4]
            for task, good in ((f"cost of in-store sales in {month}", 0), (f"cost of wholesale sales in {month}", 1)):
                shown = ["cost of shop floor sales in May", "cost of bulk sales in May"]
                rewards = np.array([1.0, 0.0] if good == 0 else [0.0, 1.0])
                retriever.observe(v, cases, cases, rewards, episode=f"{episode}{good}",
                                  mismatch=mismatch_matrix(task, shown, [True, True], pairs))
                retriever.update(4)

        def order(task):
            shown = ["cost of shop floor sales in May", "cost of bulk sales in May"]
            q = retriever.q_values(v, cases, cases, mismatch_matrix(task, shown, [True, True], pairs))
            return q[0] - q[1]
        return order("cost of in-store sales in October"), order("cost of wholesale sales in October")
    store, wholesale = learner(pairs=True)
    assert store > 0 > wholesale
    store, wholesale = learner(pairs=False)
    assert not (store > 0.05 and wholesale < -0.05)  # the difference alone cannot tell the two apart


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
                            [True, True], pairs=True)
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


def test_a_checkpoint_of_the_release_loads_its_narrower_word_ids_and_retired_setting():
    retriever = QRetriever(DIM, "enc", "cpu")
    v = unit(np.ones(DIM))
    retriever.observe(v, np.stack([v]), np.stack([v]), np.array([1.0]), episode="e0",
                      mismatch=mismatch_matrix("a b", ["a c"], [True]))
    state = retriever.state()
    import torch

    state["settings"] = {**state["settings"], "plan_pairs": False}
    state["settings"].pop("word_pairs")
    state["buffer"]["arrays"]["mismatch"] = state["buffer"]["arrays"]["mismatch"][:, :64].to(torch.int32)
    again = QRetriever.from_state(state, "enc", "cpu", "the release's")
    row = again.buffer.arrays["mismatch"][0]
    assert row.shape == (WIDTH,) and ids(row) == ids(retriever.buffer.arrays["mismatch"][0])
    assert again.settings.word_pairs  # the pairs start empty and learn from the next run on


def test_a_word_pairs_id_is_the_bucket_of_its_two_words_joined_in_order():
    from memento.memory.lexical import PAIR, _bucket

    for success in (True, False):
        got = ids(mismatch_ids("alpha zulu common", "mike bravo common", success, pairs=True))
        joined = {_bucket(PAIR.join(sorted((u, v))), success) for u in ("alpha", "zulu") for v in ("mike", "bravo")}
        assert joined <= got and len(got - joined) == 5  # the outcome's id and the four words of the difference
