"""Throughput paths that must not change results: length-sorted batches, retrieval that fetches
only what it needs, and task files run several at once (resumable)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from memento.graph import Context
from memento.memory.case import Case
from memento.memory.encoder import TextEncoder
from memento.memory.resources import case_bank_for, release_case_banks
from tests.fixtures.model_servers import ModelServer

ORIGINAL = Path(__file__).resolve().parents[1] / "fixtures" / "memento-original" / "deepresearcher.jsonl"


def _questions(n):
    lines = ORIGINAL.read_text(encoding="utf-8").splitlines()[:n]
    return [json.loads(line)["question"] for line in lines]


def test_length_sorted_batches_give_the_vectors_of_one_at_a_time_encoding():
    texts = _questions(150) + ["short", "a somewhat longer text about sales in March " * 12]
    batched = TextEncoder().encode(texts)
    single = TextEncoder()
    one_by_one = np.stack([single.encode([t])[0] for t in texts])
    cosines = (batched * one_by_one).sum(axis=1)
    assert cosines.min() >= 0.999
    assert batched.shape == (len(texts), 384) and np.allclose(np.linalg.norm(batched, axis=1), 1, atol=1e-5)


def test_a_batched_import_stores_the_vectors_and_cases_of_one_at_a_time_writes(tmp_path):
    questions = _questions(40)
    cases = [Case(id=f"c{i}", task=q, plan=[f"look up {i}", "answer"], final_answer=str(i), reward=float(i % 2))
             for i, q in enumerate(questions)]
    bulk = case_bank_for(Context(data_dir=str(tmp_path / "bulk")))
    bulk.write_all(cases)
    single = case_bank_for(Context(data_dir=str(tmp_path / "single")))
    for case in cases:
        single.write(case)
    ids = [c.id for c in cases]
    got_ids, bulk_tasks, bulk_plans = bulk.embeddings(ids)
    _, single_tasks, single_plans = single.embeddings(ids)
    assert got_ids == ids
    assert (bulk_tasks * single_tasks).sum(axis=1).min() >= 0.999
    assert (bulk_plans * single_plans).sum(axis=1).min() >= 0.999
    strip = lambda c: c.model_dump(exclude={"created_at", "updated_at"})  # noqa: E731
    assert [strip(c) for c in bulk.list()] == [strip(c) for c in single.list()]


def test_similarity_candidates_fetch_no_vectors_and_rank_as_the_full_fetch(tmp_path):
    bank = case_bank_for(Context(data_dir=str(tmp_path / "d")))
    bank.write_all([Case(id=f"c{i}", task=q, plan=["x"], reward=1.0) for i, q in enumerate(_questions(30))])
    query = bank.encoder.encode(["Who wrote the novel about the white whale?"])[0]
    light, full = bank.candidates(query, 10, vectors=False), bank.candidates(query, 10)
    assert [c.id for c in light.cases] == [c.id for c in full.cases] and len(light.cases) == 10
    assert light.task_embeddings.shape == (0, 384) and full.task_embeddings.shape == (10, 384)
    assert len(bank.candidates(query, 500, vectors=False).cases) == 30  # more than the bank holds: all


def _memento(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "memento.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_a_task_file_runs_concurrently_against_a_slow_server_and_resumes(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"id": f"t{i}", "question": f"What is 6 * 7? (item {i})", "answer": "42"})
                             + "\n" for i in range(8)), encoding="utf-8")
    out, data = tmp_path / "results.jsonl", str(tmp_path / "data")
    with ModelServer("slow", delay=0.3) as server:
        models = [f"--{role}-{what}" for role in ("planner", "executor", "judge") for what in ("model", "base-url")]
        values = ["openai-compatible:m", server.url] * 3
        options = [x for pair in zip(models, values) for x in pair]
        done = _memento("run", "--tasks", str(tasks), "--out", str(out), "--concurrency", "4", "--data-dir", data,
                        "--json", *options)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report == {**report, "ran": 8, "done": 8, "failed": 0, "concurrency": 4}
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert sorted(r["task_id"] for r in lines) == [f"t{i}" for i in range(8)]
        assert {(r["final_answer"], r["reward"], r["status"]) for r in lines} == {("42", 1.0, "done")}
        # Two runs finished but were not recorded (a kill between the two): recorded again, not run again.
        out.write_text("".join(json.dumps(r) + "\n" for r in lines[:6]), encoding="utf-8")
        calls = len(server.requests)
        again = _memento("run", "--tasks", str(tasks), "--out", str(out), "--concurrency", "4", "--data-dir", data,
                         "--json", *options)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["ran"] == 2 and len(server.requests) == calls
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["task_id"] for r in lines) == [f"t{i}" for i in range(8)]
    release_case_banks()
    cases = case_bank_for(Context(data_dir=data)).list()
    assert sorted(c.thread_id for c in cases) == sorted(r["thread_id"] for r in lines)  # one case each
    bad = _memento("run", "What is 1 + 1?", "--tasks", str(tasks), "--out", str(out), "--data-dir", data, "--json")
    assert bad.returncode == 2 and "--tasks takes the tasks from its file" in json.loads(bad.stdout)["error"]


def test_nearest_reads_little_and_shows_what_the_full_read_shows(tmp_path):
    """Replays of a task (some written in a batch, some one by one, successes and failures) and
    tasks that differ only in case and spacing: the two-step read picks the cases the full read of
    every candidate picks, in every mode that uses it."""
    from memento.memory.retrieval import distinct_sources

    bank = case_bank_for(Context(data_dir=str(tmp_path / "d")))
    questions = _questions(25)
    first = [Case(id=f"a{i}", task=q, plan=["x"], reward=0.0, created_at=f"2026-01-01T00:00:{i:02d}")
             for i, q in enumerate(questions)]
    bank.write_all(first)  # batched
    for i, q in enumerate(questions[:15]):  # replays, one by one; every third succeeds
        bank.write(Case(id=f"b{i}", task=q, plan=["y"], reward=float(i % 3 == 0), created_at=f"2026-02-01T00:00:{i:02d}"))
    bank.write(Case(id="shout", task=questions[3].upper().replace(" ", "  "), plan=["z"], reward=1.0))
    queries = bank.encoder.encode(questions[:10] + ["Which river is the longest?", "Who painted it?"])
    for query in queries:
        full = bank.candidates(query, 64, vectors=False).cases
        for k in (1, 4, 10):
            expected = [full[i].id for i in distinct_sources(full)][:k]
            assert [c.id for c in bank.nearest(query, k, 64)] == expected
            assert [c.id for c in bank.nearest(query, k, 64, distinct=False)] == [c.id for c in full[:k]]
    shown = bank.nearest(queries[3], 4, 64)
    assert shown[0].id in ("shout", "b3")  # one of the task's successes stands for it, not its failure
