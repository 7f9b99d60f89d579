"""`make-world`'s wording options (issue #23): a cue said several ways, irrelevant fragments, the cue
anywhere in the question, words shared across groups. They change questions only, and the simulated
planner still reads every question's aggregate and file."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from memento.bench.tasks import load_tasks
from memento.bench.world import (
    AGGREGATE_WORDS,
    CONTEXTS,
    CUE_GROUPS,
    CUE_WORDINGS,
    FUNCTION_WORDS,
    NOISE_FRAGMENTS,
    NOISE_WORDS,
    make_world,
    vocabulary_problems,
)
from memento.graph.context import Context
from memento.llm import table_skills as tables
from memento.llm.simulated import SimulatedChatModel
from memento.nodes import prompts
from memento.nodes.planner import planner_messages
from memento.nodes.schemas import PlannerDecision

ALL = {"cue_wordings": 3, "noise": 2, "reorder": True, "shared_words": True}
# Computed with the generator as it was before the wording options existed (commit 94af4f8).
BEFORE = {"plain": "fa70fabc3bd6c4ccd4b32c3bb3654864c2540550662b3a0c154c5241219bafdd",
          "base": "dc05e72963663761f5a0a34639be7ca65f7f1412c93ffb15a6e3e47949289ffd"}


def words(text: str) -> set[str]:
    import re

    return set(re.findall(r"[a-z0-9]+", text.lower()))


CUE_WORDS = {w for group in CUE_GROUPS for cue in group for p in (cue, *CUE_WORDINGS[cue]) for w in words(p)} - FUNCTION_WORDS


def digest(folder: Path) -> str:
    """Every file's path and bytes; an XLSX file by its cells (its bytes depend on openpyxl's version)."""
    import openpyxl

    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        h.update(path.relative_to(folder).as_posix().encode() + b"\0")
        if path.suffix == ".xlsx":
            h.update(json.dumps(list(openpyxl.load_workbook(path).active.iter_rows(values_only=True))).encode())
        else:
            h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    root = tmp_path_factory.mktemp("wording")
    make_world(seed=11, out=root / "plain" / "plain.jsonl", families=3, tasks=3)
    split = {"families": 6, "tasks": 4, "misleading": True}
    make_world(seed=14, out=root / "base" / "train.jsonl", test_out=root / "base" / "test.jsonl", **split)
    for name in ("worded", "again"):
        make_world(seed=14, out=root / name / "train.jsonl", test_out=root / name / "test.jsonl", **split, **ALL)
    return root


def worded(root: Path) -> list:
    return load_tasks(root / "worded" / "train.jsonl") + load_tasks(root / "worded" / "test.jsonl")


def test_default_options_write_what_the_generator_wrote_before_them(worlds):
    assert digest(worlds / "plain") == BEFORE["plain"]
    assert digest(worlds / "base") == BEFORE["base"]
    assert all("wording" not in t.metadata for t in load_tasks(worlds / "base" / "train.jsonl"))


def test_wording_options_are_deterministic_and_change_only_the_questions(worlds):
    assert snapshot(worlds / "worded") == snapshot(worlds / "again")
    base, new = snapshot(worlds / "base"), snapshot(worlds / "worded")
    assert base.keys() == new.keys()
    assert {k for k in base if base[k] != new[k]} == {"train.jsonl", "test.jsonl"}  # every data file the same
    for name in ("train.jsonl", "test.jsonl"):
        before, after = load_tasks(worlds / "base" / name), load_tasks(worlds / "worded" / name)
        for old, task in zip(before, after, strict=True):
            wording = task.metadata.pop("wording")
            assert (task.id, task.answers, task.metadata) == (old.id, old.answers, old.metadata)
            assert [Path(f).relative_to(worlds / "worded") for f in task.files] == [
                Path(f).relative_to(worlds / "base") for f in old.files]
            assert task.question != old.question and wording["cue"].lower() in task.question.lower()
    # Still no test task names a month or quarter its family's training tasks name.
    named: dict[tuple[str, str], set[str]] = {}
    for task in worded(worlds):
        named.setdefault((task.metadata["split"], task.metadata["family"]), set()).update(
            c for c in CONTEXTS if f" {c}" in task.question)
    for (split, family), months in named.items():
        assert months and (split == "train" or months.isdisjoint(named[("train", family)]))


def test_look_alike_families_say_their_cues_in_words_of_their_own(worlds):
    assert vocabulary_problems() == []
    for group in CUE_GROUPS:  # the whole vocabulary: no cue of a group shares a wording or a word with another
        for i, cue in enumerate(group):
            for other in group[i + 1:]:
                mine = {w for p in (cue, *CUE_WORDINGS[cue]) for w in words(p)} - FUNCTION_WORDS
                assert mine.isdisjoint({w for p in (other, *CUE_WORDINGS[other]) for w in words(p)})
    families: dict[str, dict] = {}
    used: dict[str, set[str]] = {}
    for task in worded(worlds):
        meta, wording = task.metadata, task.metadata["wording"]
        families.setdefault(meta["family"], meta)
        assert len(wording["cue_wordings"]) == 3 and wording["cue_wordings"][0] == meta["cue"]
        assert wording["cue"] in wording["cue_wordings"] and wording["cue"].lower() in task.question.lower()
        used.setdefault(meta["family"], set()).add(wording["cue"])
    for family, meta in families.items():
        for other in meta["lookalikes"]:
            mine, theirs = families[family]["wording"]["cue_wordings"], families[other]["wording"]["cue_wordings"]
            assert {w for p in mine for w in words(p)}.isdisjoint({w for p in theirs for w in words(p)} - FUNCTION_WORDS)
    assert max(map(len, used.values())) >= 2  # a family's tasks do say their cue in more than one way


def test_noise_fragments_hold_no_aggregate_or_cue_word(worlds):
    vocabulary = list(NOISE_FRAGMENTS) + [w for ws in NOISE_WORDS.values() for w in ws]
    for text in vocabulary:
        assert not words(text) & (AGGREGATE_WORDS | CUE_WORDS) and tables.asked_operation(text) is None, text
    counts = set()
    for task in worded(worlds):
        fragments = task.metadata["wording"]["fragments"]
        counts.add(len(fragments))
        for fragment in fragments:
            assert not words(fragment["text"]) & (AGGREGATE_WORDS | CUE_WORDS)
            assert tables.asked_operation(fragment["text"]) is None
            if fragment["position"] == "before":
                assert task.question.startswith(fragment["text"]) or f" {fragment['text']} " in task.question
            else:
                assert task.question.endswith(fragment["text"]) or f" {fragment['text']} " in task.question
    assert counts == {0, 1, 2}


def test_reordered_questions_put_the_cue_first_in_the_middle_or_last(worlds):
    templates: dict[str, set[str]] = {}
    for task in worded(worlds):
        wording = task.metadata["wording"]
        templates.setdefault(task.metadata["operation"], set()).add(wording["template"])
        question = task.question
        for fragment in wording["fragments"]:
            question = question.replace(fragment["text"], "").strip()
        if wording["template"].startswith("start"):
            assert question.lower().startswith(wording["cue"].lower())
        if wording["template"] == "end-1":
            assert question.endswith(f"{wording['cue']} side only?")
    assert {t.split("-")[0] for ts in templates.values() for t in ts} == {"start", "middle", "end"}
    assert all(len(ts) > 2 for ts in templates.values())


def planned(task) -> PlannerDecision:
    """The simulated planner's first plan, shown one successful case that used the right column."""
    case = {"id": "c1", "task": "An earlier question.", "reward": 1.0, "similarity": 0.9, "final_answer": "1",
            "plan": [tables.COLUMN_STEP.format(column=task.metadata["column"]),
                     tables.AGGREGATE_STEP.format(operation="sum")]}
    state = {"task": task.question, "run_files": task.files, "cases_used": [case], "results": []}
    messages = planner_messages(state, Context(), prompts.PLAN_INSTRUCTION.format(max_cycles=3))
    return SimulatedChatModel().with_structured_output(PlannerDecision, include_raw=True).invoke(messages)["parsed"]


def check_parsed(tasks: list) -> None:
    for task in tasks:
        operation = task.metadata["operation"]
        assert tables.asked_operation(task.question) == operation, task.question
        # The planner read the aggregate and the attached table file: it adapts the case to this file.
        assert planned(task).subtasks == tables.procedure(task.files[0], task.metadata["column"], operation), task.question


def test_the_simulated_planner_reads_every_worded_task(worlds):
    check_parsed(worded(worlds))


def test_the_command_line_options_and_shared_words_across_groups(tmp_path):
    made = subprocess.run([sys.executable, "-m", "memento.cli.main", "bench", "make-world", "--seed", "13", "--families",
                           "5", "--tasks", "3", "--cue-wordings", "5", "--noise", "4", "--reorder", "--shared-words",
                           "--out", str(tmp_path / "w.jsonl"), "--json"], capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["wording"] == {"cue_wordings": 5, "noise": 4, "reorder": True, "shared_words": True}
    tasks = load_tasks(tmp_path / "w.jsonl")
    check_parsed(tasks)
    assert max(len(t.metadata["wording"]["fragments"]) for t in tasks) <= 4
    # A plain world: each family its own group. Groups are paired off (the last three together), each
    # pair sharing a tag and a project that no other family has.
    shared = {t.metadata["family"]: tuple(t.metadata["wording"]["shared"]) for t in tasks}
    holders: dict[tuple[str, str], set[str]] = {}
    for family, words_ in shared.items():
        holders.setdefault(words_, set()).add(family)
    assert sorted(map(len, holders.values())) == [2, 3]
    assert all(tag in t.question and f"({project} project)" in t.question
               for t in tasks for tag, project in [t.metadata["wording"]["shared"]])
    for flag, value in (("--cue-wordings", "6"), ("--noise", "5"), ("--cue-wordings", "0")):
        bad = subprocess.run([sys.executable, "-m", "memento.cli.main", "bench", "make-world", "--seed", "13", flag, value,
                              "--out", str(tmp_path / "x.jsonl")], capture_output=True, text=True, timeout=300)
        assert bad.returncode == 2 and flag in bad.stderr and not (tmp_path / "x.jsonl").exists()


def test_look_alikes_share_their_shared_words(worlds):
    by_group: dict[str, set[tuple[str, ...]]] = {}
    for task in worded(worlds):
        by_group.setdefault(task.metadata["group"], set()).add(tuple(task.metadata["wording"]["shared"]))
    assert all(len(s) == 1 for s in by_group.values())  # shared words never tell look-alikes apart
