"""The case bank as a LangGraph store (`CaseStore`), and a LangGraph store as the case bank
(`build_graph(store=...)`): real Chroma, the real encoder, the simulated model."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, TypedDict

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.config import get_store
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.store.memory import InMemoryStore

from memento.graph import build_graph
from memento.memory.case import Case
from memento.memory.resources import case_bank_for, retriever_for, shared_encoder
from memento.memory.store import NAMESPACE, CaseStore, StoreCaseBank
from tests.conftest import run

ARITHMETIC = "What is 17 * 23 + 4?"
HAMLET = "Who wrote the play Hamlet?"


class Lookup(TypedDict, total=False):
    query: str
    key: str
    filter: dict[str, Any] | None
    found: list[tuple[str, float]]
    got: dict[str, Any] | None


def _look(state: Lookup, runtime: Runtime) -> dict[str, Any]:
    hits = runtime.store.search(("memento",), query=state["query"], filter=state.get("filter"), limit=5)
    item = get_store().get(NAMESPACE, state["key"])
    return {"found": [(hit.key, hit.score) for hit in hits], "got": item.value if item else None}


async def _alook(state: Lookup, runtime: Runtime) -> dict[str, Any]:
    hits = await runtime.store.asearch(("memento", "cases"), query=state["query"], filter=state.get("filter"))
    item = await runtime.store.aget(NAMESPACE, state["key"])
    return {"found": [(hit.key, hit.score) for hit in hits], "got": item.value if item else None}


def _agent(node, store):
    """Another LangGraph agent, with nothing of Memento's but the store it is compiled with."""
    builder = StateGraph(Lookup)
    builder.add_node("look", node)
    builder.add_edge(START, "look")
    builder.add_edge("look", END)
    return builder.compile(store=store)


def _embedding_store(ctx) -> InMemoryStore:
    encoder = shared_encoder(ctx.encoder, ctx.encoder_device)
    return InMemoryStore(index={"dims": 384, "embed": lambda texts: encoder.encode(list(texts)).tolist()})


def test_another_agent_finds_the_cases_memento_wrote(graph, ctx):
    first = run(graph, ctx, ARITHMETIC, ground_truth="395")
    second = run(graph, ctx, HAMLET, thread="t2")  # judged wrong by the simulated judge: reward 0
    assert (first["reward"], second["reward"]) == (1.0, 0.0)
    store = CaseStore.from_context(ctx)
    agent = _agent(_look, store)

    out = agent.invoke({"query": "multiply 17 by 23 and add 4", "key": second["case_id"]})
    assert [key for key, _ in out["found"]] == [first["case_id"], second["case_id"]]
    scores = [score for _, score in out["found"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.6 and scores[0] - scores[1] > 0.3
    assert out["got"]["task"] == HAMLET and out["got"]["reward"] == 0.0 and out["got"]["id"] == second["case_id"]
    assert out["got"]["plan"] == second["plans"][-1]

    failures = agent.invoke({"query": "multiply 17 by 23", "key": first["case_id"], "filter": {"reward": 0.0}})
    assert [key for key, _ in failures["found"]] == [second["case_id"]]
    assert failures["got"]["final_answer"] == "395"
    ranged = store.search(NAMESPACE, query="Hamlet", filter={"reward": {"$gte": 0.5, "$lte": 1.0}})
    assert [hit.key for hit in ranged] == [first["case_id"]]
    assert store.search(NAMESPACE, query="Hamlet", filter={"scored_by": {"$ne": "ground_truth"}})[0].key \
        == second["case_id"]
    with pytest.raises(ValueError, match=r"unsupported operator '\$in'"):
        store.search(NAMESPACE, filter={"reward": {"$in": [1.0]}})

    # Without a query: every case, oldest first (times are to the second: a tie goes by id), unscored;
    # offset and limit page through them.
    listed = store.search(("memento",))
    assert {hit.key for hit in listed} == {first["case_id"], second["case_id"]} and listed[0].score is None
    assert [(hit.created_at, hit.key) for hit in listed] == sorted((hit.created_at, hit.key) for hit in listed)
    assert [hit.key for hit in store.search(("memento",), limit=1, offset=1)] == [listed[1].key]
    assert store.list_namespaces() == [NAMESPACE]
    assert store.list_namespaces(prefix=("memento",), max_depth=1) == [("memento",)]
    assert store.list_namespaces(suffix=("cases",)) == [NAMESPACE]
    assert store.list_namespaces(prefix=("users",)) == [] and store.list_namespaces(offset=1) == []

    # The same through the async API (`abatch`), from an async node.
    aout = asyncio.run(_agent(_alook, store).ainvoke({"query": "Who is the author of Hamlet?",
                                                      "key": first["case_id"]}))
    assert [key for key, _ in aout["found"]] == [second["case_id"], first["case_id"]]
    assert aout["got"]["task"] == ARITHMETIC
    assert asyncio.run(store.asearch(NAMESPACE, query="Hamlet", filter={"reward": 1.0}))[0].key == first["case_id"]
    assert asyncio.run(store.alist_namespaces()) == [NAMESPACE]


def test_put_get_delete_through_the_store_reach_the_bank(ctx):
    store = CaseStore.from_context(ctx)
    bank = case_bank_for(ctx)
    value = {"task": "What is the capital of France?", "plan": ["Look up the capital of France."],
             "final_answer": "Paris", "reward": 1.0, "scored_by": "human"}
    store.put(NAMESPACE, "paris", value)
    case = bank.get("paris")
    assert case is not None and case.final_answer == "Paris" and case.plan == value["plan"]
    item = store.get(NAMESPACE, "paris")
    assert item.key == "paris" and item.namespace == NAMESPACE
    assert {k: item.value[k] for k in value} == value and "utility" not in item.value
    assert item.created_at.isoformat() == case.created_at
    assert [hit.key for hit in store.search(NAMESPACE, query="France's capital city")] == ["paris"]
    # Embedded by the project's encoder, like a case a run wrote: the bank's own retrieval finds it.
    assert bank.retrieve("capital of France", 1)[0].id == "paris"

    # A utility set through the store is stored as given; a rewrite without one keeps it.
    store.put(NAMESPACE, "paris", {**item.value, "utility": 0.8})
    assert bank.utilities(["paris"]) == {"paris": pytest.approx(0.8)}
    store.put(NAMESPACE, "paris", {**value, "final_answer": "Paris, France"})
    again = store.get(NAMESPACE, "paris")
    assert again.value["final_answer"] == "Paris, France" and again.value["utility"] == pytest.approx(0.8)
    assert again.created_at == item.created_at and bank.count() == 1

    store.delete(NAMESPACE, "paris")
    assert bank.get("paris") is None and store.get(NAMESPACE, "paris") is None and bank.count() == 0


@pytest.mark.parametrize("value, problem", [
    ({"task": "What is 2 + 2?", "reward": 3}, "not a valid case: reward: Input should be less than or equal to 1"),
    ({"task": "", "reward": 1.0}, "not a valid case: task: String should have at least 1 character"),
    ({"task": "What is 2 + 2?"}, "not a valid case: reward: Field required"),
    ({"task": "What is 2 + 2?", "reward": 1.0, "answer": "4"}, "not a case field: answer"),
    ({"id": "other", "task": "What is 2 + 2?", "reward": 1.0}, "the value's id 'other' is not its key 'bad'"),
    ({"task": "What is 2 + 2?", "reward": 1.0, "utility": 2}, "utility must be a number from 0 to 1"),
])
def test_a_malformed_case_is_refused_in_one_line_and_nothing_is_written(ctx, value, problem):
    store = CaseStore.from_context(ctx)
    with pytest.raises(ValueError) as refused:
        store.put(NAMESPACE, "bad", value)
    assert str(refused.value).startswith(problem) and "\n" not in str(refused.value)
    assert case_bank_for(ctx).count() == 0 and store.get(NAMESPACE, "bad") is None


def test_other_namespaces_hold_nothing_and_take_nothing(ctx):
    store = CaseStore.from_context(ctx)
    store.put(NAMESPACE, "c1", {"task": "What is 2 + 2?", "reward": 1.0})
    with pytest.raises(ValueError, match=r"CaseStore holds only Memento's cases, under \('memento', 'cases'\)"):
        store.put(("notes",), "c1", {"task": "What is 2 + 2?", "reward": 1.0})
    assert store.get(("notes",), "c1") is None and store.get(("memento",), "c1") is None
    assert store.search(("notes",)) == [] and store.search(("memento", "cases", "deeper"), query="2 + 2") == []
    assert [hit.key for hit in store.search(())] == ["c1"]
    read_only = CaseStore(case_bank_for(ctx), read_only=True)
    with pytest.raises(ValueError, match="read-only"):
        read_only.delete(NAMESPACE, "c1")
    assert case_bank_for(ctx).count() == 1


def test_a_store_given_to_build_graph_is_the_case_bank(ctx):
    store = _embedding_store(ctx)
    graph = build_graph(InMemorySaver(), store=store)
    first = run(graph, ctx, ARITHMETIC, ground_truth="395")
    assert first["cases_used"] == []
    second = run(graph, ctx, "What is 17 * 23 + 5?", thread="t2", ground_truth="396")
    assert [c["id"] for c in second["cases_used"]] == [first["case_id"]]
    assert second["cases_used"][0]["similarity"] > 0.9 and second["cases_used"][0]["final_answer"] == "395"
    stored = {item.key: item.value for item in store.search(NAMESPACE, limit=10)}
    assert set(stored) == {first["case_id"], second["case_id"]}
    assert stored[second["case_id"]]["final_answer"] == "396" and stored[second["case_id"]]["reward"] == 1.0
    assert stored[first["case_id"]]["utility"] == pytest.approx(0.65)  # credited once by the second run
    assert not (ctx.resolved_data_dir() / "chroma").exists()  # Chroma was never opened

    # Parametric retrieval reads the embeddings a StoreCaseBank computes with the project encoder.
    parametric = ctx.replace(retrieval_mode="parametric", candidates=8, retriever_steps=2)
    updates = retriever_for(parametric).updates
    third = run(graph, parametric, "What is 17 * 23 + 6?", thread="t3", ground_truth="397")
    assert third["reward"] == 1.0 and len(third["cases_used"]) == 2
    assert all(isinstance(c["q"], float) for c in third["cases_used"])
    assert retriever_for(parametric).updates > updates  # it learned, from the store's cases' embeddings
    assert len(store.search(NAMESPACE, limit=10)) == 3
    assert not (ctx.resolved_data_dir() / "chroma").exists()


def test_a_store_the_platform_passes_is_not_the_case_bank(ctx):
    # What `langgraph dev` does to the graph it serves: a copy with its own store.
    injected = _embedding_store(ctx)
    graph = build_graph(InMemorySaver()).copy(update={"store": injected})
    out = run(graph, ctx, ARITHMETIC, ground_truth="395")
    assert injected.search(NAMESPACE) == []
    assert case_bank_for(ctx).get(out["case_id"]).final_answer == "395"
    # A graph built with a store keeps it as the bank even when run with another.
    own = _embedding_store(ctx)
    served = build_graph(InMemorySaver(), store=own).copy(update={"store": injected})
    again = run(served, ctx, "What is 17 * 23 + 5?", ground_truth="396")
    assert [item.key for item in own.search(NAMESPACE)] == [again["case_id"]] and injected.search(NAMESPACE) == []


def test_store_case_bank_embeddings_and_refusals(ctx):
    bank = case_bank_for(ctx, _embedding_store(ctx))
    assert isinstance(bank, StoreCaseBank)
    case = Case(id="c1", task="What is 6 * 7?", plan=["Evaluate 6 * 7 with the calculator."], reward=1.0)
    bank.write(case)
    ids, tasks, plans = bank.embeddings(["missing", "c1"])
    encoder = bank.encoder
    assert ids == ["c1"] and tasks.shape == plans.shape == (1, 384)
    assert float(tasks[0] @ encoder.encode([case.task])[0]) == pytest.approx(1.0, abs=1e-4)
    assert float(plans[0] @ encoder.encode([case.plan_text()])[0]) == pytest.approx(1.0, abs=1e-4)
    query = encoder.encode(["6 times 7"])[0]
    before = encoder.texts_encoded
    found = bank.candidates(query, 4, query_text="6 times 7")
    assert [c.id for c in found.cases] == ["c1"] and encoder.texts_encoded == before  # cached by case id
    assert bank.count() == 1 and bank.get("c1").plan == case.plan
    with pytest.raises(Exception, match="searches by the query's text"):
        bank.candidates(encoder.encode(["x"])[0], 4)
    plain = case_bank_for(ctx, InMemoryStore())
    plain.write(case)
    with pytest.raises(Exception, match="no vector index"):
        plain.candidates(encoder.encode(["x"])[0], 4, query_text="x")
    assert not Path(ctx.case_bank_location()).exists()
