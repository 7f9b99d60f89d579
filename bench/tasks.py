"""Benchmark task files: one JSON object per line.

    {"id": "q1", "question": "...", "answer": "42" | ["42", "forty-two"],
     "files": ["data/q1.csv"], "metadata": {...}}

`id` (a string or an integer, unique in the file), `question` and `answer` (a string or a list of
accepted answers) are required; `files` are paths relative to the task file's folder (or
absolute); `metadata`, and any other key, is kept in the results and never shown to the agent.
The original Memento `deepresearcher.jsonl` lines (`question`, `ground_truth` with answers joined
by `<|answer_split|>`, `data_source`) load as they are, numbered by line when they have no id.

Every line is checked before anything runs: the first bad one stops the load with its line number.
"""

from __future__ import annotations

import errno
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memento.graph.errors import InputError
from memento.memory.interchange import LineError, jsonl_records
from memento.memory.scoring import ANSWER_SPLIT

KNOWN_KEYS = {"id", "question", "answer", "files", "metadata", "ground_truth"}
MAX_QUESTION_CHARS = 20_000


class TaskFileError(InputError, ValueError):
    """A task file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class BenchTask:
    id: str
    question: str
    answers: list[str]
    files: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    line: int = 0

    @property
    def ground_truth(self) -> str:
        """The accepted answers as the graph's `ground_truth` input takes them."""
        return ANSWER_SPLIT.join(self.answers)


def _strings(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} must be a string or a non-empty list of strings")
    return value


def task_from_record(record: Any, line: int, folder: Path, answers_required: bool = True) -> BenchTask:
    if not isinstance(record, dict):
        raise ValueError("a line must hold a JSON object")
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("'question' must be a non-empty string")
    if len(question) > MAX_QUESTION_CHARS:
        raise ValueError(f"'question' is {len(question)} characters; at most {MAX_QUESTION_CHARS} are allowed")
    if "answer" in record:
        answers = _strings(record["answer"], "'answer'")
    elif "ground_truth" in record:  # the original Memento format
        answers = _strings(record["ground_truth"], "'ground_truth'")
    elif not answers_required:
        answers = []  # unlabelled: the judge scores the answer
    else:
        raise ValueError("no 'answer' (or the original format's 'ground_truth')")
    # The graph splits ground truth on the separator: so must the benchmark's own scoring.
    answers = [part.strip() for a in answers for part in a.split(ANSWER_SPLIT) if part.strip()]
    if not answers and answers_required:
        raise ValueError("'answer' holds no non-empty answer")
    raw_id = record.get("id", f"line-{line}")
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or not str(raw_id).strip():
        raise ValueError("'id' must be a non-empty string or an integer")
    files = record.get("files", [])
    if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
        raise ValueError("'files' must be a list of paths")
    resolved = []
    for name in files:
        try:
            path = Path(name).expanduser()
            path = path if path.is_absolute() else folder / path
            regular = path.is_file()
        except (OSError, RuntimeError) as exc:  # a name too long, an unknown ~user, ...
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ValueError(f"attached file {name[:200]!r} cannot be used: {reason[:200]}") from None
        if not regular:
            raise ValueError(f"attached file {name[:200]} is not a file (paths are relative to the task file's folder)")
        resolved.append(str(path))
    metadata = record.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ValueError("'metadata' must be an object")
    extra = {k: v for k, v in record.items() if k not in KNOWN_KEYS}
    return BenchTask(str(raw_id).strip(), question.strip(), answers, resolved, {**extra, **metadata}, line)


def load_tasks(path: str | Path, answers_required: bool = True) -> list[BenchTask]:
    """Every task in the file, or TaskFileError at the first bad line (nothing runs). Without
    `answers_required`, a task may have no answer (the judge scores it)."""
    path = Path(path).expanduser()
    folder = path.absolute().parent
    tasks: list[BenchTask] = []
    seen: dict[str, int] = {}
    try:
        for number, record in jsonl_records(path):
            try:
                task = task_from_record(record, number, folder, answers_required)
            except ValueError as exc:
                raise TaskFileError(f"{path}, line {number}: {exc}; nothing was run") from None
            if task.id in seen:
                raise TaskFileError(f"{path}, line {number}: id {task.id!r} was already used on line "
                                    f"{seen[task.id]}; ids must be unique")
            seen[task.id] = number
            tasks.append(task)
    except OSError as exc:
        reason = "it is not a regular file" if exc.errno == errno.EINVAL else exc.strerror
        raise TaskFileError(f"cannot read task file {path}: {reason}") from None
    except LineError as exc:
        raise TaskFileError(f"{path}, line {exc.number}: {exc}; nothing was run") from None
    if not tasks:
        raise TaskFileError(f"task file {path} holds no tasks")
    return tasks


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()
