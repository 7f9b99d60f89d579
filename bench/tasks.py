"""Benchmark task files: one JSON object per line.

    {"id": "q1", "question": "...", "answer": "42" | ["42", "forty-two"],
     "files": ["data/q1.csv"], "metadata": {...}}

`id` (a string or an integer, unique in the file), `question` and `answer` (a string or a list of
accepted answers) are required; `files` are paths relative to the task file's folder (or
absolute); `metadata`, and any other key, is kept in the results and never shown to the agent.
The original Memento `deepresearcher.jsonl` lines (`question`, `ground_truth` with answers joined
by `<|answer_split|>`, `data_source`) load as they are, numbered by line when they have no id.

A task file is content, not the operator's word: whoever wrote it chooses what the agent reads.
So its `files` must be regular files inside the task file's own folder (or a folder the operator
allows with `--files-root`), reached without following any link; an id is printed and names a
thread, so it holds no control character; text holds no NUL or other control character but tab
and newline (PostgreSQL cannot store a NUL). The file is read a line at a time, each line bounded
as it is read, and so are the number of tasks and the file's size.

Every line is checked before anything runs: the first bad one stops the load with its line number.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from memento.graph.caller import MAX_FILES
from memento.graph.errors import InputError
from memento.memory.interchange import LineError, bounded_lines, parse_line
from memento.memory.scoring import ANSWER_SPLIT

KNOWN_KEYS = {"id", "question", "answer", "files", "metadata", "ground_truth"}
MAX_QUESTION_CHARS = 20_000
MAX_ID_CHARS = 200
MAX_TASKS = 100_000
MAX_TASK_FILE_BYTES = 1 << 30
# In text, tab and newline are text; every other C0 control (NUL first: PostgreSQL cannot store
# it) is refused. In an id, which is printed on progress lines and names a thread, any control,
# format or line-separator character is.
_TEXT_CONTROLS = frozenset(chr(c) for c in range(32)) - {"\t", "\n"}
_ID_CATEGORIES = ("Cc", "Cf", "Zl", "Zp")


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
    for text in value:
        _check_text(text, what)
    return value


def _check_text(text: str, what: str) -> None:
    bad = next((c for c in text if c in _TEXT_CONTROLS), None)
    if bad is not None:
        raise ValueError(f"{what} holds the control character U+{ord(bad):04X}"
                         f"{' (NUL)' if bad == chr(0) else ''}; remove it (text may hold tabs and newlines only)")


def _check_id(task_id: str) -> None:
    bad = next((c for c in task_id if unicodedata.category(c) in _ID_CATEGORIES), None)
    if bad is not None:
        raise ValueError(f"'id' holds the control character U+{ord(bad):04X}; an id is printed on progress lines and "
                         "names the run's thread: use letters, digits and punctuation")
    if len(task_id) > MAX_ID_CHARS:
        raise ValueError(f"'id' is {len(task_id)} characters; at most {MAX_ID_CHARS} are allowed")


def attached_file(name: str, folder: Path, roots: Sequence[Path]) -> str:
    """The path of a task's attached file `name` (relative to the task file's `folder`, or
    absolute): a regular file inside `folder` or one of `roots`, reached without following any
    link (the path returned has none); ValueError saying why not."""
    from memento.mcp_servers.workspace import PathRefused, locate, open_beneath

    allowed = [folder, *roots]
    shown = name[:200] if name[:200].isprintable() else repr(name[:200])  # the message stays one line
    try:
        wanted = Path(name).expanduser()
        root, parts = locate(allowed, str(wanted if wanted.is_absolute() else folder / wanted))
        os.close(open_beneath(root, parts, os.O_RDONLY | os.O_NONBLOCK, shown=shown))
    except PathRefused as exc:
        where = " or ".join(str(r) for r in allowed)
        detail = "" if "outside the files" in str(exc) else f" ({exc})"
        raise ValueError(f"attached file {shown} refused: it must be a regular file inside {where}, reached without "
                         f"links{detail}; move it there, or allow its folder with --files-root DIR") from None
    except FileNotFoundError:
        raise ValueError(f"attached file {shown} is not a file (paths are relative to the task file's folder)") from None
    except (OSError, ValueError, RuntimeError) as exc:  # a name too long, a NUL, an unknown ~user, ...
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"attached file {shown} cannot be used: {reason[:200]}") from None
    return str(root.joinpath(*parts))


def task_from_record(record: Any, line: int, folder: Path, answers_required: bool = True,
                     files_roots: Sequence[Path] = ()) -> BenchTask:
    if not isinstance(record, dict):
        raise ValueError("a line must hold a JSON object")
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("'question' must be a non-empty string")
    _check_text(question, "'question'")
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
    _check_id(str(raw_id))  # before stripping: a trailing CR or line separator is refused too
    files = record.get("files", [])
    if not isinstance(files, list) or len(files) > MAX_FILES or not all(isinstance(f, str) and f for f in files):
        raise ValueError(f"'files' must be a list of at most {MAX_FILES} paths")
    resolved = [attached_file(name, folder, files_roots) for name in files]
    metadata = record.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ValueError("'metadata' must be an object")
    extra = {k: v for k, v in record.items() if k not in KNOWN_KEYS}
    return BenchTask(str(raw_id).strip(), question.strip(), answers, resolved, {**extra, **metadata}, line)


def load_tasks(path: str | Path, answers_required: bool = True, files_roots: Sequence[str | Path] = ()) -> list[BenchTask]:
    """Every task in the file, or TaskFileError at the first bad line (nothing runs). Without
    `answers_required`, a task may have no answer (the judge scores it). A task's files must lie
    in the task file's folder or one of `files_roots` (the operator's `--files-root`)."""
    path = Path(path).expanduser()
    folder = path.absolute().parent
    roots = []
    for root in files_roots:
        resolved = Path(root).expanduser().absolute()
        if not resolved.is_dir():
            raise TaskFileError(f"--files-root {root} is not a folder: give a folder the task files' files are in")
        roots.append(resolved)
    tasks: list[BenchTask] = []
    seen: dict[str, int] = {}
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO is refused below, not waited on
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            if info.st_size > MAX_TASK_FILE_BYTES:
                raise TaskFileError(f"task file {path} is {info.st_size} bytes; at most {MAX_TASK_FILE_BYTES} are read: "
                                    "split it into several files; nothing was run")
            for number, raw in bounded_lines(handle, MAX_TASK_FILE_BYTES):
                if len(tasks) == MAX_TASKS:
                    raise TaskFileError(f"{path}, line {number}: the file holds more than {MAX_TASKS} tasks; split it "
                                        "into several files; nothing was run")
                try:
                    task = task_from_record(parse_line(number, raw), number, folder, answers_required, roots)
                except LineError:
                    raise
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
    digest = hashlib.sha256()
    with open(Path(path).expanduser(), "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
