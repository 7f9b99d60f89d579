"""Who the online Q update credits: the planner's citations, or every shown case."""

import torch

from memento.memory.device import torch_threads
from memento.nodes.planner import citations_update
from memento.nodes.schemas import FinalAnswer, PlannerDecision
from memento.nodes.write_case import credit, hindsight

SHOWN = [{"id": "s1", "reward": 1.0}, {"id": "f1", "reward": 0.0}, {"id": "s2", "reward": 1.0}]


def test_without_citations_every_shown_case_carries_the_reward():
    assert credit(SHOWN, 1.0, [], []) == (["s1", "f1", "s2"], [1.0, 1.0, 1.0], False)


def test_cited_cases_carry_the_reward_abandoned_ones_zero_and_uncited_ones_nothing():
    ids, rewards, by_citation = credit(SHOWN, 1.0, ["f1"], ["s2"])
    assert by_citation and dict(zip(ids, rewards)) == {"f1": 1.0, "s2": 0.0}


def test_the_fallback_check_also_reads_the_successes_a_successful_run_passed_over():
    ids, rewards = hindsight(SHOWN, 1.0, ["f1"], ["s2"])
    assert dict(zip(ids, rewards)) == {"f1": 1.0, "s2": 0.0, "s1": 0.0}
    ids, rewards = hindsight(SHOWN, 0.0, ["s1"], [])  # a run that failed says nothing about the rest
    assert dict(zip(ids, rewards)) == {"s1": 0.0}
    assert hindsight(SHOWN, 1.0, [], []) == (["s1", "f1", "s2"], [1.0, 1.0, 1.0])  # no citations: the paper's rule


def test_a_replaced_plans_failures_get_no_label():
    ids, rewards, by_citation = credit(SHOWN, 1.0, ["s1"], ["s2", "f1"])
    assert by_citation and dict(zip(ids, rewards)) == {"s1": 1.0, "s2": 0.0}  # f1: avoided in a replaced plan


def test_a_new_plan_abandons_the_last_plans_citations():
    # The prompt numbers successes first (s1 -> 1, s2 -> 2), then failures (f1 -> 3).
    state = {"cases_used": SHOWN, "cited_cases": [], "abandoned_cases": []}
    state |= citations_update(state, PlannerDecision(subtasks=["a"], cases_used=[1]))
    assert state["cited_cases"] == ["s1"] and state["abandoned_cases"] == []
    state |= citations_update(state, PlannerDecision(subtasks=["b"], cases_used=[3, 9]))  # 9 names no case
    assert state["cited_cases"] == ["f1"] and state["abandoned_cases"] == ["s1"]
    state |= citations_update(state, PlannerDecision(subtasks=["c"], cases_used=[1]))  # cited again: not abandoned
    assert state["cited_cases"] == ["s1"] and state["abandoned_cases"] == ["f1"]
    state |= citations_update(state, FinalAnswer(final_answer="x"))
    assert state["cited_cases"] == ["s1"]


def test_torch_threads_are_set_for_the_block_and_given_back():
    original = torch.get_num_threads()
    torch.set_num_threads(2)
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
        with torch_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(0):
        assert torch.get_num_threads() == before
    torch.set_num_threads(original)
