"""Parametric retrieval inside the graph: two stages, online learning, persistence."""

import numpy as np
import pytest

from memento.memory.case import Case
from memento.memory.q_retriever import GATE_MARGIN, QRetriever
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

    # Trained, but not yet ahead of similarity on runs it had not learned from: similarity's order.
    second = run(graph, ctx, "What is 5 * 8 + 2?", thread="t2", ground_truth="42")
    assert second["ranking"] == "similarity" and not retriever.ahead
    sims = [c["similarity"] for c in second["cases_used"]]
    assert sims == sorted(sims, reverse=True)
    assert retriever.updates == 10 and retriever.buffer.size == 8
    retriever.gate = [GATE_MARGIN, 0.0]  # as if it had won that many held-out disagreements
    third = run(graph, ctx, "What is 4 * 9 + 3?", thread="t3", ground_truth="39")
    qs = [c["q"] for c in third["cases_used"]]
    assert third["ranking"] == "learned" and qs == sorted(qs, reverse=True)  # ranked by Q, best first


def test_per_query_work_is_bounded_by_the_candidates(graph, ctx, monkeypatch):
    from memento.nodes.retrieve_cases import select_cases

    ctx = ctx.replace(retrieval_mode="parametric", candidates=16)
    bank = case_bank_for(ctx)
    _seed(bank, 120)
    scored = []
    original = QRetriever.q_values_pairs
    monkeypatch.setattr(QRetriever, "q_values_pairs",
                        lambda self, t, c, p, *rest: scored.append(len(c)) or original(self, t, c, p, *rest))
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


def test_utility_moves_only_for_the_cases_a_run_credits(graph, ctx):
    from memento.memory.case import RetrievedCase
    from memento.nodes.write_case import learn_from_run

    ctx = ctx.replace(retrieval_mode="utility")
    bank = case_bank_for(ctx)
    _seed(bank, 6)
    shown = [RetrievedCase(**bank.get(f"c{i}").model_dump(), similarity=0.9).model_dump() for i in (1, 2, 3, 4)]
    run_case = Case(id="run-1", task="What is 6 * 7 + 1?", plan=["Evaluate 6 * 7 + 1"], final_answer="43", reward=1.0)
    bank.write(run_case)
    # c1 cited for the final plan (the run's reward, 1); c2, a success cited only for a replaced plan (0);
    # c3 and c4 shown and not cited: their utilities do not move. c4, a success the run passed over
    # while it succeeded, trains the learner at 0 (the hindsight label); c3, a failure, gets no label.
    learned = learn_from_run(ctx, bank, run_case, shown, cited=["c1"], abandoned=["c2"])
    assert learned["utilities"] == 2 and learned["transitions"] == 3
    utilities = {c.id: c.utility for c in bank.candidates(bank.encoder.encode(["What is 6 * 7 + 1?"])[0], 10).cases}
    assert utilities["c1"] == pytest.approx(0.65) and utilities["c2"] == pytest.approx(0.35)  # 0.3 of the way to 1, to 0
    assert all(utilities[i] is None for i in ("c0", "c3", "c4", "c5", "run-1"))
    assert learn_from_run(ctx, bank, run_case, shown, cited=["c1"], abandoned=["c2"]) is None  # a replay: learned once
    # A rewrite of a case keeps its utility; the utility mode ranks by it.
    bank.write(bank.get("c1"))
    assert {c.id: c.utility for c in bank.candidates(bank.encoder.encode(["x"])[0], 10).cases}["c1"] == utilities["c1"]
    out = run(graph, ctx, "What is 2 * 3 + 2?", ground_truth="8")
    assert len(out["cases_used"]) == 4 and any(c["utility"] is not None for c in out["cases_used"])
