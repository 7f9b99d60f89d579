"""Parametric retrieval inside the graph: two stages, online learning, persistence."""

import numpy as np

from memento.memory.case import Case
from memento.memory.q_retriever import QRetriever
from memento.memory.resources import case_bank_for, retriever_for
from tests.conftest import run


def _seed(bank, n):
    cases = [Case(id=f"c{i}", task=f"What is {i} * {i + 1} + {i % 7}?", plan=[f"Evaluate {i} * {i + 1} + {i % 7}"],
                  final_answer=str(i * (i + 1) + i % 7), reward=float(i % 3 != 0)) for i in range(n)]
    bank.write_many(cases)


def test_parametric_run_reranks_learns_online_and_persists(graph, ctx):
    ctx = ctx.replace(retrieval_mode="parametric", candidates=8, retriever_steps=5, retrieval_temperature=0)
    _seed(case_bank_for(ctx), 20)
    out = run(graph, ctx, "What is 6 * 7 + 1?", ground_truth="43")
    assert out["reward"] == 1.0 and len(out["cases_used"]) == 4
    assert all(0.0 < c["q"] < 1.0 for c in out["cases_used"])
    retriever = retriever_for(ctx)
    assert retriever.updates == 5 and retriever.buffer.size == 4
    # The checkpoint beside the case bank holds the same state for the next process.
    restarted = QRetriever.load(ctx.retriever_checkpoint(), ctx.encoder, "cpu")
    assert restarted.updates == 5 and restarted.buffer.size == 4
    assert ctx.retriever_checkpoint().parent == ctx.resolved_data_dir()

    second = run(graph, ctx, "What is 5 * 8 + 2?", thread="t2", ground_truth="42")
    qs = [c["q"] for c in second["cases_used"]]
    assert qs == sorted(qs, reverse=True)  # trained now: ranked by Q, best first
    assert retriever.updates == 10 and retriever.buffer.size == 8


def test_per_query_work_is_bounded_by_the_candidates(graph, ctx, monkeypatch):
    from memento.nodes.retrieve_cases import select_cases

    ctx = ctx.replace(retrieval_mode="parametric", candidates=16)
    bank = case_bank_for(ctx)
    _seed(bank, 120)
    scored = []
    original = QRetriever.q_values_pairs
    monkeypatch.setattr(QRetriever, "q_values_pairs",
                        lambda self, t, c, p: scored.append(len(c)) or original(self, t, c, p))
    before = bank.encoder.texts_encoded
    chosen = select_cases(ctx, "What is 3 * 4 + 3, for the bounded-work test?")  # a text no other test encodes
    assert len(chosen) == 4 and scored == [16]
    assert bank.encoder.texts_encoded - before == 1  # only the query


def test_retrieval_mode_none_skips_the_bank(graph, ctx):
    ctx = ctx.replace(retrieval_mode="none")
    _seed(case_bank_for(ctx), 5)
    out = run(graph, ctx, "What is 2 + 2?", ground_truth="4")
    assert out["cases_used"] == [] and out["reward"] == 1.0
    assert not ctx.retriever_checkpoint().exists()


def test_similarity_mode_also_trains_the_retriever_uniformly(graph, ctx):
    _seed(case_bank_for(ctx), 6)
    out = run(graph, ctx, "What is 2 + 2?", ground_truth="4")
    assert all(c["q"] is None for c in out["cases_used"])
    buffer = retriever_for(ctx).buffer
    assert buffer.size == 4 and np.all(buffer.arrays["weight"][:4] == 1.0)
