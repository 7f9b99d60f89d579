"""`memento bench`: the offline world, the harness, its results and its resumption."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest

from memento.bench.harness import Benchmark, settings_for
from memento.bench.report import summarise
from memento.bench.tasks import TaskFileError, load_tasks
from memento.bench.world import make_world
from memento.graph import Context
from memento.graph.context import default_mcp_servers
from memento.mcp_servers.client import Toolbox
from memento.memory.resources import case_bank_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    root = tmp_path_factory.mktemp("worlds")
    make_world(seed=11, out=root / "plain.jsonl", families=4, tasks=4)
    make_world(seed=11, out=root / "misleading.jsonl", families=4, tasks=4, misleading=True, group_size=2)
    return root


def bench(tasks_file: Path, out: Path, arms: list[str], iterations: int, ks: list[int] | None = None) -> Benchmark:
    runner = Benchmark(load_tasks(tasks_file), settings_for(tasks_file, iterations, arms, ks or [4], "truth",
                                                            out / "arms", Context()), Context(), out)
    runner.prepare()
    runner.run(progress_out=None)
    return runner


def kill_after_lines(command: list[str], results: Path, lines: int, poll: float, settle: float = 0.0) -> int:
    """Start `command`, SIGKILL it once `results` holds `lines` lines (and `settle` seconds more);
    the lines it holds then."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if results.exists() and len(results.read_bytes().splitlines()) >= lines:
                break
            time.sleep(poll)
        time.sleep(settle)
        assert proc.poll() is None, "the benchmark finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return len(results.read_bytes().splitlines())


def raw_rows(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        return list(csv.DictReader(io.StringIO(path.read_text())))
    if path.suffix == ".json":
        return json.loads(path.read_text())
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    import openpyxl

    rows = list(openpyxl.load_workbook(path).active.iter_rows(values_only=True))
    return [dict(zip(rows[0], row)) for row in rows[1:]]


def aggregate(operation: str, values: list[Fraction]) -> Fraction:
    return {"sum": sum(values), "mean": sum(values) / len(values), "maximum": max(values), "minimum": min(values),
            "range": max(values) - min(values)}[operation]


# -- the world --------------------------------------------------------------------------------
def test_the_generator_is_deterministic_for_a_seed_and_differs_for_another(tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        (tmp_path / name).mkdir()
        make_world(seed=seed, out=tmp_path / name / "w.jsonl", families=3, tasks=2)

    def snapshot(name):
        folder = tmp_path / name
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    assert snapshot("a") == snapshot("b")
    other = load_tasks(tmp_path / "c" / "w.jsonl")
    same = load_tasks(tmp_path / "a" / "w.jsonl")
    assert {t.question for t in other} != {t.question for t in same}
    assert {t.answers[0] for t in other}.isdisjoint({t.answers[0] for t in same})


def test_every_answer_is_what_the_tools_return_along_the_right_procedure(worlds):
    tasks = load_tasks(worlds / "plain.jsonl") + load_tasks(worlds / "misleading.jsonl")
    servers = {k: v for k, v in default_mcp_servers().items() if k in ("math", "documents")}
    with Toolbox(servers, allowed_paths=[str(worlds)]) as tools:
        for task in tasks:
            meta, path = task.metadata, Path(task.files[0])
            assert meta["procedure"][1].endswith(f"'{meta['column']}' of the table in the earlier results.")
            # Independently of the simulated model: the raw data, exact arithmetic ...
            values = [Fraction(str(row[meta["column"]])) for row in raw_rows(path)]
            expected = aggregate(meta["operation"], values)
            exact = task.answers[0].split("(exactly ")[-1].rstrip(")")  # "98.81 (exactly 108697/1100)" or "42"
            assert Fraction(exact) == expected
            # ... and the real tools: the file through the documents server, the sum through the math server.
            read = tools.call({"name": "read_document", "args": {"path": str(path)}, "id": "r"}, 100_000)
            assert read.status == "success" and meta["column"] in read.text
            listed = ", ".join(str(v) for v in values)
            expression = {"sum": " + ".join(map(str, values)), "mean": f"({' + '.join(map(str, values))}) / {len(values)}",
                          "maximum": f"max({listed})", "minimum": f"min({listed})",
                          "range": f"max({listed}) - min({listed})"}[meta["operation"]]
            out = tools.call({"name": "calculate", "args": {"expression": expression}, "id": "c"}, 10_000)
            assert out.text == task.answers[0]
            # Every other plausible column gives another answer: only the right procedure is right.
            others = {aggregate(meta["operation"], [Fraction(str(r[c])) for r in raw_rows(path)])
                      for c in meta["plausible"] if c != meta["column"]}
            assert expected not in others and len(others) == len(meta["plausible"]) - 1


def test_misleading_families_come_in_look_alike_groups(worlds, tmp_path):
    make_world(seed=12, out=tmp_path / "groups.jsonl", families=6, tasks=2, misleading=True, group_size=3)
    for path, size in ((worlds / "misleading.jsonl", 2), (tmp_path / "groups.jsonl", 3)):
        by_family = {}
        for task in load_tasks(path):
            by_family.setdefault(task.metadata["family"], task.metadata)
        for family, meta in by_family.items():
            group = [by_family[f] for f in meta["lookalikes"]] + [meta]
            assert len(group) == size and len({g["group"] for g in group}) == 1
            assert all(sorted(g["lookalikes"] + [g["family"]]) == sorted(meta["lookalikes"] + [family]) for g in group)
            assert len({g["column"] for g in group}) == size  # each its own right column ...
            assert len({(g["domain"], g["operation"], tuple(g["plausible"])) for g in group}) == 1  # ... else alike
            assert len({g["cue"] for g in group}) == size


def test_a_test_split_shares_no_text_or_file_with_training_and_is_fixed_by_the_seed(tmp_path):
    for name in ("a", "b"):
        make_world(seed=21, out=tmp_path / name / "train.jsonl", test_out=tmp_path / name / "test.jsonl",
                   families=3, tasks=6, misleading=True)

    def snapshot(name):
        folder = tmp_path / name
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    assert snapshot("a") == snapshot("b")  # the same seed: the same split, byte for byte
    train, test = load_tasks(tmp_path / "a" / "train.jsonl"), load_tasks(tmp_path / "a" / "test.jsonl")
    assert len(train) == len(test) == 3 * 3  # half of each family's tasks
    assert {t.question for t in train}.isdisjoint({t.question for t in test})
    assert {Path(f).resolve() for t in train for f in t.files}.isdisjoint({Path(f).resolve() for t in test for f in t.files})
    train_bytes = {Path(f).read_bytes() for t in train for f in t.files}
    assert all(Path(f).read_bytes() not in train_bytes for t in test for f in t.files)
    assert {t.id for t in train}.isdisjoint({t.id for t in test})
    # Same families, new months or quarters: no test task names one its family's training tasks name.
    from memento.bench.world import CONTEXTS

    def named(tasks):
        out = {}
        for t in tasks:
            out.setdefault(t.metadata["family"], set()).update(c for c in CONTEXTS if f" {c}" in t.question)
        return out

    assert named(train).keys() == named(test).keys()
    for family, months in named(test).items():
        assert months and months.isdisjoint(named(train)[family])
    assert {t.metadata["split"] for t in train} == {"train"} and {t.metadata["split"] for t in test} == {"test"}


# -- learning ---------------------------------------------------------------------------------
def test_memory_beats_no_memory_on_a_plain_suite(worlds, tmp_path):
    runner = bench(worlds / "plain.jsonl", tmp_path / "out", ["none", "similarity", "parametric"], 3)
    summary = summarise(runner.records, ["none", "similarity", "parametric"], 3, 16)
    acc = summary["accuracy"]
    assert acc["none"][-1] <= 0.5  # chance is 1 in 5 plausible procedures
    assert acc["similarity"][-1] >= acc["none"][-1] + 0.3
    assert acc["parametric"][-1] >= acc["none"][-1] + 0.3
    assert acc["similarity"][-1] > acc["similarity"][0] or acc["similarity"][0] == 1.0
    # Each arm wrote one case per run into its own bank, and `none` retrieved nothing.
    for arm in runner.arms:
        assert case_bank_for(runner.contexts[arm.key]).count() == 16 * 3
    assert all(not r["cases_used"] for r in runner.records if r["arm"] == "none")


def test_similarity_shows_the_look_alike_familys_cases_on_a_misleading_suite(worlds, tmp_path):
    runner = bench(worlds / "misleading.jsonl", tmp_path / "out", ["similarity"], 2)
    family_of = {r["case_id"]: r["metadata"]["family"] for r in runner.records}
    shown = [(r["metadata"], family_of[c["id"]]) for r in runner.records for c in r["cases_used"]]
    lookalike = sum(family in meta["lookalikes"] for meta, family in shown)
    own = sum(meta["family"] == family for meta, family in shown)
    assert own + lookalike >= 0.8 * len(shown)  # look-alikes crowd out the other families ...
    assert lookalike >= 0.25 * len(shown)  # ... and their cases are retrieved, not only the right ones


# -- outputs, resumption, task files ----------------------------------------------------------
def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_results_summary_and_plots(tmp_path):
    make_world(seed=3, out=tmp_path / "w.jsonl", families=2, tasks=2)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "memento.cli.main", "bench", "run", "--tasks", str(tmp_path / "w.jsonl"),
                           "--iterations", "2", "--arms", "none,similarity", "--k", "1,2", "--out", str(out),
                           "--json", "--quiet"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert set(summary["accuracy"]) == {"none", "similarity@1", "similarity@2"}
    assert all(len(v) == 2 and all(0.0 <= x <= 1.0 for x in v) for v in summary["accuracy"].values())
    assert set(summary["f1"]) == set(summary["accuracy"])
    assert json.loads((out / "summary.json").read_text())["accuracy"] == summary["accuracy"]
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 3 * 2 * 4
    first = lines[0]
    for key in ("arm", "k", "iteration", "task_id", "answer", "exact_match", "f1", "cycles", "cases_used", "wall_s",
                "metadata"):
        assert key in first
    assert png_size(out / "learning_curve.png") == (800, 500)
    assert png_size(out / "k_sweep.png") == (800, 500)
    assert summary["run"]["tasks_per_minute"] > 0


def test_a_killed_benchmark_resumes_without_running_anything_twice(tmp_path):
    make_world(seed=4, out=tmp_path / "w.jsonl", families=2, tasks=3)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "memento.cli.main", "bench", "run", "--tasks", str(tmp_path / "w.jsonl"),
               "--iterations", "2", "--arms", "similarity,parametric", "--out", str(out), "--quiet"]
    results = out / "results.jsonl"
    done_before = kill_after_lines(command, results, 5, poll=0.05, settle=0.1)  # settle: land inside a run
    assert 5 <= done_before < 24
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    keys = [(r["arm"], r["iteration"], r["task_id"]) for r in lines]
    assert len(keys) == len(set(keys)) == 2 * 2 * 6
    for arm in ("similarity", "parametric"):
        ctx = Context(data_dir=str(out / "arms" / arm))
        assert case_bank_for(ctx).count() == 2 * 6  # as many cases as an uninterrupted run writes


def test_a_finished_benchmark_reruns_nothing_and_refuses_other_settings(tmp_path):
    make_world(seed=5, out=tmp_path / "w.jsonl", families=1, tasks=2)
    runner = bench(tmp_path / "w.jsonl", tmp_path / "out", ["similarity"], 1)
    again = Benchmark(load_tasks(tmp_path / "w.jsonl"),
                      settings_for(tmp_path / "w.jsonl", 1, ["similarity"], [4], "truth", tmp_path / "out" / "arms",
                                   Context()), Context(), tmp_path / "out")
    again.prepare()
    assert again.pending() == [] and len(again.records) == len(runner.records) == 2
    other = Benchmark(load_tasks(tmp_path / "w.jsonl"),
                      settings_for(tmp_path / "w.jsonl", 1, ["none"], [4], "truth", tmp_path / "out" / "arms",
                                   Context()), Context(), tmp_path / "out")
    with pytest.raises(Exception, match="other arms"):
        other.prepare()
    models = Context(planner_model="simulated:indecisive")
    changed = Benchmark(load_tasks(tmp_path / "w.jsonl"),
                        settings_for(tmp_path / "w.jsonl", 1, ["similarity"], [4], "truth", tmp_path / "out" / "arms",
                                     models), models, tmp_path / "out")
    with pytest.raises(Exception, match="other settings"):
        changed.prepare()


def test_the_original_deepresearcher_file_loads_whole():
    tasks = load_tasks(FIXTURES / "memento-original" / "deepresearcher.jsonl")
    assert len(tasks) == 3197
    second = tasks[1]
    assert second.answers == ["Bloomsburg", "The Only Town in Pennsylvania", "Eyersburg"]
    assert second.metadata == {"data_source": "popqa"} and second.id == "line-2"


@pytest.mark.parametrize("lines,reason", [
    (['{"id": 1, "question": "q", "answer": "a"}', '{"id": 2, "question": "q"'], "line 2: not valid JSON"),
    (['{"id": 1, "question": "q"}'], "line 1: no 'answer'"),
    (['{"id": 1, "question": "q", "answer": "a"}', '', '{"id": 1, "question": "r", "answer": "b"}'],
     "line 3: id '1' was already used on line 1"),
    (['{"id": "x", "question": "q", "answer": "a", "files": ["missing.csv"]}'], "line 1: attached file missing.csv"),
    (['{"id": "x", "question": "", "answer": "a"}'], "line 1: 'question' must be a non-empty string"),
    (['{"id": "x", "question": "q", "answer": []}'], "line 1: 'answer' must be a string or a non-empty list"),
    (['[' * 100_000 + ']' * 100_000], "line 1: JSON nested too deeply"),
])
def test_a_malformed_task_file_is_refused_with_its_line_number(tmp_path, lines, reason):
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TaskFileError, match=reason.replace("[", r"\[").replace("(", r"\(")):
        load_tasks(path)


def test_invalid_utf8_is_refused_by_the_command_with_its_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"id": 1, "question": "q", "answer": "a"}\n{"id": 2, "question": "\xff", "answer": "a"}\n')
    proc = subprocess.run([sys.executable, "-m", "memento.cli.main", "bench", "run", "--tasks", str(path), "--out",
                           str(tmp_path / "out"), "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "line 2: not valid UTF-8" in proc.stderr and proc.stderr.count("\n") == 1
    assert json.loads(proc.stdout) == {"status": "error", "error": proc.stderr.strip().removeprefix("memento: error: ")}
    assert not (tmp_path / "out").exists()  # nothing ran


def test_a_run_cut_off_before_its_case_is_finished_from_its_checkpoint(tmp_path):
    from langgraph.checkpoint.sqlite import SqliteSaver

    from memento.graph import build_graph

    make_world(seed=6, out=tmp_path / "w.jsonl", families=1, tasks=2)
    tasks = load_tasks(tmp_path / "w.jsonl")
    runner = Benchmark(tasks, settings_for(tmp_path / "w.jsonl", 1, ["similarity"], [4], "truth",
                                           tmp_path / "out" / "arms", Context()), Context(), tmp_path / "out")
    runner.prepare()
    arm = runner.arms[0]
    ctx = runner.contexts[arm.key]
    ctx.resolved_data_dir().mkdir(parents=True)
    # The first run got as far as write_case, then the process died: its checkpoint is all there is.
    with SqliteSaver.from_conn_string(str(ctx.resolved_data_dir() / "checkpoints.sqlite")) as saver:
        graph = build_graph(saver, interrupt_before=["write_case"])
        config = {"configurable": {"thread_id": f"bench-{arm.key}-it1-{tasks[0].id}"}}
        graph.invoke(runner.graph_input(tasks[0]), config, context=ctx)
        case_id = graph.get_state(config).values["case_id"]
    assert case_bank_for(ctx).count() == 0
    runner.run(progress_out=None)
    first = next(r for r in runner.records if r["task_id"] == tasks[0].id)
    assert first["resumed"] and first["case_id"] == case_id and first["answer"]
    assert case_bank_for(ctx).count() == 2 and case_bank_for(ctx).get(case_id) is not None


# -- transfer: test passes on frozen copies, the cross table ----------------------------------
def test_test_passes_and_the_cross_table_write_and_learn_nothing(tmp_path, monkeypatch):
    from memento.bench.report import summarise

    make_world(seed=22, out=tmp_path / "train.jsonl", test_out=tmp_path / "test.jsonl", families=2, tasks=4,
               misleading=True, group_size=2)
    tasks, tests = load_tasks(tmp_path / "train.jsonl"), load_tasks(tmp_path / "test.jsonl")
    arms = ["similarity", "utility", "parametric"]
    settings = settings_for(tmp_path / "train.jsonl", 2, arms, [4], "truth", tmp_path / "out" / "arms", Context(),
                            test_path=tmp_path / "test.jsonl", cross=True)
    runner = Benchmark(tasks, settings, Context(), tmp_path / "out", test_tasks=tests)
    runner.prepare()
    at_freeze: dict[tuple[str, int], tuple[int, bytes, set]] = {}
    freeze = runner.freeze

    def state(arm):
        ctx = runner.contexts[arm.key]
        bank = case_bank_for(ctx)
        return bank.count(), ctx.retriever_checkpoint().read_bytes(), {c.id: c.model_dump() for c in bank.list()}

    def snapshot_then_freeze(arm, iteration):
        at_freeze.setdefault((arm.key, iteration), state(arm))  # all of this iteration's training is done here
        return freeze(arm, iteration)

    monkeypatch.setattr(runner, "freeze", snapshot_then_freeze)
    runner.run(progress_out=None)
    for arm in runner.arms:
        count, weights, cases = at_freeze[(arm.key, 2)]
        assert count == 2 * len(tasks) and len(weights) > 0  # the test pass of iteration 1 added no case
        # After the test pass of iteration 2 and the whole cross table: not one case, not one byte of the learner.
        assert state(arm) == (count, weights, cases)
        # Each frozen copy holds exactly what the arm had when it was frozen, utilities included.
        for iteration in (1, 2):
            copy = Context(data_dir=str(runner.frozen_folder(arm, iteration)))
            frozen = {c.id: c.model_dump() for c in case_bank_for(copy).list()}
            assert frozen == at_freeze[(arm.key, iteration)][2]
            assert copy.retriever_checkpoint().read_bytes() == at_freeze[(arm.key, iteration)][1]
    summary = summarise(runner.records, [a.key for a in runner.arms], 2, len(tasks), test_tasks=len(tests))
    assert all(len(v) == 2 and None not in v for v in summary["test_accuracy"].values())
    assert set(summary["cross_accuracy"]) == set(arms) and summary["cross_iteration"] == 2
    for arm in arms:  # the diagonal: a mode on its own arm's bank is that arm's test pass, run again
        assert summary["cross_accuracy"][arm][arm] == summary["test_accuracy"][arm][-1]
        assert set(summary["cross_accuracy"][arm]) == {"similarity", "utility", "parametric"}
    phases = [r["phase"] for r in runner.records]
    assert phases.count("train") == 2 * 3 * len(tasks) and phases.count("test") == 2 * 3 * len(tests)
    assert phases.count("cross") == 3 * 3 * len(tests)
    assert all(r["case_id"] is None for r in runner.records if r["phase"] != "train")
    pair = summary["paired_test"]["parametric - similarity"][-1]
    assert pair["n"] == len(tests) and pair["low"] <= pair["mean"] <= pair["high"]


def test_the_shown_cases_come_from_distinct_source_tasks(worlds, tmp_path):
    def shown_sources(runner):
        source = {r["case_id"]: r["task_id"] for r in runner.records}
        return [[source[c["id"]] for c in r["cases_used"]] for r in runner.records if r["iteration"] == 3]

    runner = bench(worlds / "misleading.jsonl", tmp_path / "distinct", ["similarity", "parametric"], 3)
    shown = shown_sources(runner)
    assert all(len(s) == 4 for s in shown)
    assert all(len(set(s)) == len(s) for s in shown)
    # The setting off, replays of one task fill the slots (so the check above can fail).
    allowed = Context(distinct_source_tasks=False)
    repeated = Benchmark(load_tasks(worlds / "misleading.jsonl"),
                         settings_for(worlds / "misleading.jsonl", 3, ["similarity"], [4], "truth",
                                      tmp_path / "repeated" / "arms", allowed), allowed, tmp_path / "repeated")
    repeated.prepare()
    repeated.run(progress_out=None)
    assert sum(len(set(s)) < len(s) for s in shown_sources(repeated)) >= len(shown_sources(repeated)) // 2


def test_the_command_line_writes_a_split_world_and_refuses_a_cross_table_without_test_tasks(tmp_path):
    made = subprocess.run([sys.executable, "-m", "memento.cli.main", "bench", "make-world", "--seed", "3", "--families",
                           "2", "--tasks", "4", "--misleading", "--group-size", "2", "--out", str(tmp_path / "w.jsonl"),
                           "--test-out", str(tmp_path / "t.jsonl"), "--json"], capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    report = json.loads(made.stdout)
    assert report["tasks"] == report["test_tasks"] == 4 and report["group_size"] == 2
    assert len(load_tasks(tmp_path / "t.jsonl")) == 4
    refused = subprocess.run([sys.executable, "-m", "memento.cli.main", "bench", "run", "--tasks", str(tmp_path / "w.jsonl"),
                              "--cross", "--out", str(tmp_path / "out"), "--json"], capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode == 2 and "--cross" in refused.stderr and "--test" in refused.stderr
    assert json.loads(refused.stdout)["status"] == "error" and not (tmp_path / "out").exists()
    bad_group = subprocess.run([sys.executable, "-m", "memento.cli.main", "bench", "make-world", "--seed", "3",
                                "--families", "6", "--misleading", "--group-size", "6", "--out", str(tmp_path / "x.jsonl")],
                               capture_output=True, text=True, timeout=300)
    assert bad_group.returncode == 2 and "--group-size" in bad_group.stderr and bad_group.stderr.count("\n") == 1


def test_a_test_pass_reads_at_its_arms_k(tmp_path):
    make_world(seed=23, out=tmp_path / "train.jsonl", test_out=tmp_path / "test.jsonl", families=2, tasks=4)
    tasks, tests = load_tasks(tmp_path / "train.jsonl"), load_tasks(tmp_path / "test.jsonl")
    settings = settings_for(tmp_path / "train.jsonl", 1, ["similarity"], [0, 2], "truth", tmp_path / "out" / "arms",
                            Context(), test_path=tmp_path / "test.jsonl")
    runner = Benchmark(tasks, settings, Context(), tmp_path / "out", test_tasks=tests)
    runner.prepare()
    runner.run(progress_out=None)
    shown = {(r["phase"], r["arm"]): [] for r in runner.records}
    for r in runner.records:
        shown[(r["phase"], r["arm"])].append(len(r["cases_used"]))
    assert set(shown[("test", "similarity@0")]) == {0} and all(r["k"] == 0 for r in runner.records
                                                               if r["arm"] == "similarity@0")
    assert max(shown[("test", "similarity@2")]) == 2


def test_a_concurrent_benchmark_gives_the_sequential_results_once_each(tmp_path):
    """Order cannot matter without memory (arm none, one iteration): 8 at once must give the same
    results as one at a time, each task once, one case each."""
    make_world(seed=6, out=tmp_path / "w.jsonl", families=3, tasks=4)
    outcomes = {}
    for concurrency in (1, 8):
        out = tmp_path / f"out{concurrency}"
        runner = Benchmark(load_tasks(tmp_path / "w.jsonl"),
                           settings_for(tmp_path / "w.jsonl", 1, ["none"], [4], "truth", out / "arms", Context()),
                           Context(), out)
        runner.prepare()
        stats = runner.run(progress_out=None, concurrency=concurrency)
        assert stats["executed"] == 12 and stats["concurrency"] == concurrency
        lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        keys = [(r["arm"], r["iteration"], r["task_id"]) for r in lines]
        assert len(keys) == len(set(keys)) == 12
        outcomes[concurrency] = {(r["task_id"], r["answer"], r["exact_match"], r["reward"]) for r in lines}
        cases = case_bank_for(Context(data_dir=str(out / "arms" / "none"))).list()
        assert sorted(c.thread_id for c in cases) == sorted(r["thread_id"] for r in lines)
    assert outcomes[8] == outcomes[1]


def test_a_benchmark_killed_at_concurrency_8_resumes_without_running_anything_twice(tmp_path):
    make_world(seed=7, out=tmp_path / "w.jsonl", families=3, tasks=4)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "memento.cli.main", "bench", "run", "--tasks", str(tmp_path / "w.jsonl"),
               "--iterations", "2", "--arms", "similarity,parametric", "--out", str(out), "--quiet",
               "--concurrency", "8"]
    results = out / "results.jsonl"
    done_before = kill_after_lines(command, results, 6, poll=0.02)
    assert 6 <= done_before < 2 * 2 * 12
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    keys = [(r["arm"], r["iteration"], r["task_id"]) for r in lines]
    assert len(keys) == len(set(keys)) == 2 * 2 * 12
    for arm in ("similarity", "parametric"):
        ctx = Context(data_dir=str(out / "arms" / arm))
        cases = case_bank_for(ctx).list()
        assert len(cases) == 2 * 12  # one per (iteration, task): no run twice
        assert len({c.thread_id for c in cases}) == 2 * 12
