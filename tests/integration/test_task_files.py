"""Task files are content: their files stay in their folder, their lines are bounded as they are
read, and ids and text that would forge output or break storage are refused before anything runs."""

import json
import os
import subprocess
import sys
import time

import pytest

from memento.bench.tasks import MAX_TASKS, TaskFileError, load_tasks

SECRET = "TOP SECRET: root only"


def memento(*args, timeout=300):
    env = {k: v for k, v in os.environ.items() if not k.endswith("API_KEY") and not k.startswith("MEMENTO_")}
    return subprocess.run([sys.executable, "-m", "memento.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def refused(done, *words):
    """One line on stderr, the same words as one JSON object on stdout (--json), exit 2."""
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("memento: error: "), done.stderr
    assert "Traceback" not in done.stderr and "unexpected" not in done.stderr
    assert json.loads(done.stdout) == {"status": "error", "error": lines[0].removeprefix("memento: error: ")}
    for word in words:
        assert word in lines[0], lines[0]
    assert SECRET not in done.stdout + done.stderr
    return lines[0]


def command(kind, tasks, tmp_path, *extra):
    if kind == "run":
        return memento("run", "--tasks", str(tasks), "--out", str(tmp_path / "results.jsonl"), "--data-dir",
                       str(tmp_path / "data"), "--json", *extra)
    return memento("bench", "run", "--tasks", str(tasks), "--out", str(tmp_path / "bench"), "--json", "--quiet", *extra)


def nothing_ran(tmp_path):
    assert not (tmp_path / "results.jsonl").exists() and not (tmp_path / "bench").exists()
    assert not (tmp_path / "data").exists()


@pytest.fixture
def layout(tmp_path):
    """A task file's folder, and a private file outside it with every way of reaching it from there."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    secret = private / "root-only.txt"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    folder = tmp_path / "tasks"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "ok.csv").write_text("a,b\n1,2\n")
    (folder / "link.txt").symlink_to(secret)
    (folder / "linked-folder").symlink_to(private, target_is_directory=True)
    os.link(secret, folder / "hard.txt")
    os.mkfifo(folder / "fifo")
    return folder, secret


def write_tasks(path, *records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


GOOD = {"id": "ok", "question": "What is in the file?", "answer": "3", "files": ["data/ok.csv"]}


@pytest.mark.parametrize("name,problem", [
    ("../private/root-only.txt", "inside"), ("data/../../private/root-only.txt", "inside"), ("{secret}", "inside"),
    ("link.txt", "symlink"), ("linked-folder/root-only.txt", "symlink"), ("hard.txt", "other hard links"),
    ("fifo", "not a regular file"), ("data", "not a regular file"), ("~root/.bashrc", "inside"),
    ("bad\x00name", "cannot be used"),
])
def test_a_tasks_files_are_confined_to_its_folder_without_links(layout, name, problem):
    folder, secret = layout
    tasks = write_tasks(folder / "t.jsonl", GOOD, {**GOOD, "id": "bad", "files": [name.format(secret=secret)]})
    with pytest.raises(TaskFileError) as stopped:
        load_tasks(tasks)
    message = str(stopped.value)
    assert "line 2: attached file" in message and problem in message and "\n" not in message
    if problem != "cannot be used":
        assert "--files-root" in message


@pytest.mark.parametrize("kind", ["run", "bench"])
def test_the_commands_refuse_a_file_outside_before_anything_runs(layout, tmp_path, kind):
    folder, secret = layout
    tasks = write_tasks(folder / "t.jsonl", GOOD, {**GOOD, "id": "bad", "files": ["../private/root-only.txt"]})
    refused(command(kind, tasks, tmp_path), "line 2", "attached file ../private/root-only.txt refused",
            "--files-root DIR", "nothing was run")
    nothing_ran(tmp_path)
    linked = write_tasks(folder / "l.jsonl", {**GOOD, "files": ["link.txt"]})
    refused(command(kind, linked, tmp_path), "line 1", "link.txt", "symlink")
    nothing_ran(tmp_path)


def test_a_files_root_lets_the_operator_allow_another_folder(tmp_path):
    """A task whose file lies outside the task file's folder: refused, then, with that folder
    allowed, the run reads it (the answer is its numbers' total)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "numbers.txt").write_text("apples 12\npears 30\nplums 7\n", encoding="utf-8")
    (tmp_path / "elsewhere").mkdir()
    tasks = write_tasks(tmp_path / "elsewhere" / "t.jsonl", {
        "id": "sum", "question": "What is the total of the numbers in the attached file?", "answer": "49",
        "files": [str(shared / "numbers.txt")]})
    refused(command("run", tasks, tmp_path), "line 1", "refused", "--files-root")
    nothing_ran(tmp_path)
    done = command("run", tasks, tmp_path, "--files-root", str(shared))
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "results.jsonl").read_text().splitlines()[0])
    assert result["status"] == "done" and result["final_answer"] == "49" and result["reward"] == 1.0, result
    missing = memento("run", "--tasks", str(tasks), "--out", str(tmp_path / "other.jsonl"), "--files-root",
                      str(tmp_path / "nowhere"), "--json")
    refused(missing, "--files-root", "nowhere", "is not a folder")
    alone = memento("run", "What is 2 + 2?", "--files-root", str(shared), "--json")
    refused(alone, "--files-root", "--tasks")


def test_a_huge_task_file_is_refused_at_once_without_reading_it(tmp_path):
    sparse = tmp_path / "huge.jsonl"
    subprocess.run(["truncate", "-s", "6G", str(sparse)], check=True)  # a 6 GB file that takes no disk
    started = time.monotonic()
    refused(command("bench", sparse, tmp_path), "huge.jsonl", "6442450944 bytes", "split it")
    assert time.monotonic() - started < 60
    nothing_ran(tmp_path)


def test_a_huge_line_is_refused_once_the_limit_is_read(tmp_path):
    """Under the file's bound but one line of 900 MB (zeros, sparse): refused after 1 MB of it."""
    sparse = tmp_path / "one-line.jsonl"
    sparse.write_text(json.dumps(GOOD | {"files": []}) + "\n")
    with open(sparse, "r+b") as handle:
        handle.truncate(900 * 1024 * 1024)
    started = time.monotonic()
    refused(command("run", sparse, tmp_path), "line 2", "longer than 1000000 bytes")
    assert time.monotonic() - started < 60
    nothing_ran(tmp_path)
    with pytest.raises(TaskFileError, match="line 2: the line is longer than 1000000 bytes"):
        load_tasks(write_tasks(tmp_path / "t.jsonl", GOOD | {"files": []}, {**GOOD, "id": 2, "files": [],
                                                                             "question": "x" * 2_000_000}))


def test_the_number_of_tasks_is_bounded(tmp_path):
    path = tmp_path / "many.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(MAX_TASKS + 1):
            handle.write(f'{{"id": {i}, "question": "q", "answer": "a"}}\n')
    with pytest.raises(TaskFileError, match=f"line {MAX_TASKS + 1}: the file holds more than {MAX_TASKS} tasks"):
        load_tasks(path)


@pytest.mark.parametrize("field,value,words", [
    ("id", "t1\n[memento] t9: done  'forged'  reward 1.0", ["'id' holds the control character U+000A"]),
    ("id", "t1\r", ["'id' holds the control character U+000D"]),
    ("id", "t1\u202egnp.exe", ["'id' holds the control character U+202E"]),
    ("id", "t1\u2028", ["'id' holds the control character U+2028"]),
    ("id", "x" * 201, ["'id' is 201 characters"]),
    ("question", "What is 6 * 7?\x00", ["'question' holds the control character U+0000 (NUL)"]),
    ("question", "What is \x1b[2J6 * 7?", ["'question' holds the control character U+001B"]),
    ("answer", "4\x002", ["'answer' holds the control character U+0000 (NUL)"]),
    ("answer", ["42", "forty\x07two"], ["'answer' holds the control character U+0007"]),
    ("ground_truth", "42<|answer_split|>4\x002", ["'ground_truth' holds the control character U+0000"]),
])
def test_ids_and_text_that_would_forge_output_or_break_storage_are_refused_up_front(tmp_path, field, value, words):
    bad = {"id": "t2", "question": "What is 6 * 7?", "answer": "42"}
    if field == "ground_truth":
        del bad["answer"]
    bad[field] = value
    tasks = write_tasks(tmp_path / "t.jsonl", {"id": "t1", "question": "What is 1 + 1?", "answer": "2"}, bad)
    with pytest.raises(TaskFileError) as stopped:
        load_tasks(tasks)
    message = str(stopped.value)
    assert "line 2" in message and "nothing was run" in message and "\n" not in message and "forged" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize("kind,record,words", [
    ("run", {"id": "t1\n[memento] t9: done  'forged'  reward 1.0", "question": "What is 6 * 7?", "answer": "42"},
     ["'id' holds the control character U+000A"]),
    ("bench", {"id": "t2", "question": "What is 6 * 7?\x00", "answer": "42"},
     ["'question' holds the control character U+0000 (NUL)"]),
])
def test_the_commands_refuse_them_in_one_line_and_keep_what_is_stored(tmp_path, kind, record, words):
    tasks = write_tasks(tmp_path / "t.jsonl", {"id": "t0", "question": "What is 1 + 1?", "answer": "2"}, record)
    stored = tmp_path / ("results.jsonl" if kind == "run" else "bench/results.jsonl")
    stored.parent.mkdir(exist_ok=True)
    stored.write_text('{"task_id": "earlier", "status": "done"}\n')  # what an earlier command stored
    line = refused(command(kind, tasks, tmp_path), "line 2", "nothing was run", *words)
    assert "forged" not in line and stored.read_text() == '{"task_id": "earlier", "status": "done"}\n'
    made = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert made == (["results.jsonl", "t.jsonl"] if kind == "run" else ["bench", "bench/results.jsonl", "t.jsonl"])


def test_tabs_and_newlines_in_text_are_kept(tmp_path):
    tasks = write_tasks(tmp_path / "t.jsonl", {"id": "t-1.a", "question": "Add:\n\t1\n\t2", "answer": "3"})
    assert load_tasks(tasks)[0].question == "Add:\n\t1\n\t2"
