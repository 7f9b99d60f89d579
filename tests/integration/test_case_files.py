"""Import, export and offline training through the command line."""

import json
from pathlib import Path

import pytest

from tests.integration.test_cli import memento, one_line_error

ORIGINAL = [
    {"case": "What sport does Deportivo Cali play?",
     "plan": "{ \"plan\": [ { \"id\": 1, \"description\": \"Determine the primary sport.\" } ] }",
     "case_label": "positive"},
    {"case": "How many people work at the school where Gene Ball was educated?",
     "plan": "{\"plan\":[{\"id\":1,\"description\":\"Identify the school.\"},"
             "{\"id\":2,\"description\":\"Find staff numbers.\"}]}",
     "case_label": "negative"},
    {"case": "Qui a peint « La Joconde » ?", "plan": "not JSON at all: just search", "case_label": "positive"},
]


def _write(path: Path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return str(path)


def test_original_format_round_trip(tmp_path):
    data = str(tmp_path / "data")
    done = memento("cases", "import", _write(tmp_path / "memory.jsonl", ORIGINAL), "--json", "--data-dir", data)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"read": 3, "added": 3, "total": 3}
    exported = memento("cases", "export", "--format", "original", "--data-dir", data).stdout.splitlines()
    assert sorted(json.loads(line)["case"] for line in exported) == sorted(r["case"] for r in ORIGINAL)
    assert {json.dumps(json.loads(x), sort_keys=True) for x in exported} == {json.dumps(r, sort_keys=True) for r in ORIGINAL}
    shown = json.loads(memento("cases", "list", "--json", "--data-dir", data).stdout)
    plans = {c["task"]: c["plan"] for c in shown["cases"]}
    assert plans[ORIGINAL[1]["case"]] == ["Identify the school.", "Find staff numbers."]
    # Importing the same file again adds nothing.
    again = json.loads(memento("cases", "import", str(tmp_path / "memory.jsonl"), "--json", "--data-dir", data).stdout)
    assert again["added"] == 0 and again["total"] == 3


def test_memento_format_round_trip(tmp_path):
    first, second = str(tmp_path / "a"), str(tmp_path / "b")
    memento("cases", "import", _write(tmp_path / "memory.jsonl", ORIGINAL), "--data-dir", first)
    out = tmp_path / "cases.jsonl"
    assert memento("cases", "export", "--out", str(out), "--data-dir", first).returncode == 0
    assert memento("cases", "import", str(out), "--data-dir", second).returncode == 0
    again = memento("cases", "export", "--data-dir", second).stdout
    key = lambda text: sorted(  # noqa: E731  (updated_at is the time of the second write)
        json.dumps({k: v for k, v in json.loads(line).items() if k != "updated_at"}, sort_keys=True)
        for line in text.splitlines())
    assert key(again) == key(out.read_text())


@pytest.mark.parametrize("bad_line,problem", [
    ("{not json", "not valid JSON"),
    (json.dumps({"case": "x", "plan": "y", "case_label": "maybe"}), "case_label must be positive or negative"),
    (json.dumps({"question": "x"}), "neither the memento format"),
    (json.dumps({"id": "", "task": "x", "reward": 1}), "id"),
    (json.dumps({"id": "a\u0000b", "task": "x", "reward": 1}), "id"),
    ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
    (json.dumps({"case": "\ud800", "plan": "y", "case_label": "positive"}), "lone surrogate"),
])
def test_a_malformed_line_rejects_the_whole_file(tmp_path, bad_line, problem):
    data = str(tmp_path / "data")
    memento("cases", "import", _write(tmp_path / "good.jsonl", ORIGINAL[:1]), "--data-dir", data)
    bad = _write(tmp_path / "bad.jsonl", [ORIGINAL[1], ORIGINAL[2], bad_line])
    line = one_line_error(memento("cases", "import", bad, "--data-dir", data), "line 3", problem)
    assert "nothing was imported" in line
    listed = json.loads(memento("cases", "list", "--json", "--data-dir", data).stdout)
    assert [c["task"] for c in listed["cases"]] == [ORIGINAL[0]["case"]]


def test_a_bad_id_on_the_last_of_300_lines_imports_nothing(tmp_path):
    # The report that led here: 300 good lines and one with "id": "" wrote 256 cases, then failed.
    data = str(tmp_path / "data")
    rows = [{"id": f"case-{n}", "task": f"task number {n}", "reward": n % 2} for n in range(300)]
    bad = _write(tmp_path / "bad.jsonl", [*rows, {"id": "", "task": "x", "reward": 1}])
    one_line_error(memento("cases", "import", bad, "--data-dir", data), "line 301", "nothing was imported")
    assert json.loads(memento("cases", "list", "--json", "--data-dir", data).stdout)["cases"] == []


def test_a_task_over_the_limit_is_refused_at_import_and_at_run(tmp_path):
    data = str(tmp_path / "data")
    config = tmp_path / "limit.toml"
    config.write_text("max_task_chars = 50\n", encoding="utf-8")
    rows = [ORIGINAL[0], {"id": "long", "task": "x" * 51, "reward": 1}]
    one_line_error(memento("cases", "import", _write(tmp_path / "long.jsonl", rows), "--data-dir", data,
                           "--config", str(config)), "line 2", "51 characters", "max_task_chars", "nothing was imported")
    one_line_error(memento("run", "y" * 51, "--data-dir", data, "--config", str(config)), "51 characters",
                   "max_task_chars")
    assert json.loads(memento("cases", "list", "--json", "--data-dir", data).stdout)["cases"] == []


def test_invalid_utf8_names_its_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(json.dumps(ORIGINAL[0]).encode() + b'\n{"case": "\xff", "plan": "p", "case_label": "positive"}\n')
    one_line_error(memento("cases", "import", str(path), "--data-dir", str(tmp_path / "data")), "line 2",
                   "not valid UTF-8", "nothing was imported")


def test_a_write_that_fails_part_way_leaves_the_bank_as_it_was(tmp_path, monkeypatch):
    from memento.graph import Context
    from memento.memory.case import Case
    from memento.memory.case_bank import WRITE_BATCH, CaseBank
    from memento.memory.resources import case_bank_for

    bank = case_bank_for(Context(data_dir=str(tmp_path / "data")))
    bank.write(Case(id="kept", task="the original task", reward=1.0))
    cases = [Case(id=f"new-{n}", task=f"task {n}", reward=0.0) for n in range(WRITE_BATCH + 10)]
    cases.append(Case(id="kept", task="a replacement", reward=0.0))
    real, calls = CaseBank.put_embedded, []

    def fails_on_the_second_batch(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(self, *args)

    monkeypatch.setattr(CaseBank, "put_embedded", fails_on_the_second_batch)
    with pytest.raises(RuntimeError, match="disk full"):
        bank.write_all(cases)
    assert len(calls) == 2  # the first batch was written, then undone
    assert [(c.id, c.task, c.reward) for c in bank.list()] == [("kept", "the original task", 1.0)]
    _, tasks, plans = bank.embeddings(["kept"])
    assert tasks.shape == plans.shape == (1, bank.encoder.dim)


def test_retriever_train_then_eval(tmp_path):
    topics = ["capital city", "sports team", "river length", "company founder", "film director", "song writer"]
    rows = []
    for q in range(24):
        for c in range(6):
            rows.append({"query": f"What is the {topics[q % 6]} of place {q}?", "case": f"Find the {topics[c]} of item {c}",
                         "case_label": "positive",
                         "plan": json.dumps({"plan": [{"id": 1, "description": f"Look up the {topics[c]}"}]}),
                         "truth_label": q % 6 == c})
    pairs = _write(tmp_path / "pairs.jsonl", rows)
    data = str(tmp_path / "data")
    trained = memento("retriever", "train", "--data", pairs, "--epochs", "30", "--json", "--data-dir", data)
    assert trained.returncode == 0, trained.stderr
    report = json.loads(trained.stdout)
    assert report["n_train"] + report["n_val"] == len(rows) and report["val_roc_auc"] > 0.7
    assert Path(report["checkpoint"]) == Path(data) / "retriever.pt"
    evaluated = memento("retriever", "eval", "--data", pairs, "--json", "--data-dir", data)
    metrics = json.loads(evaluated.stdout)
    assert set(metrics) == {"roc_auc", "accuracy", "f1", "n"} and metrics["n"] == len(rows)
    assert metrics["roc_auc"] > 0.7
    text = memento("retriever", "eval", "--data", pairs, "--data-dir", data).stdout
    assert text.startswith("ROC-AUC ")


def test_retriever_commands_name_bad_input(tmp_path):
    data = str(tmp_path / "data")
    pairs = _write(tmp_path / "pairs.jsonl", [{"query": "q", "case": "c"}])
    one_line_error(memento("retriever", "train", "--data", pairs, "--data-dir", data), "line 1", "missing plan")
    good = _write(tmp_path / "ok.jsonl", [{"query": "q", "case": "c", "plan": "p", "truth_label": True}])
    one_line_error(memento("retriever", "eval", "--data", good, "--data-dir", data), "no retriever checkpoint")
