"""Case files: the project's own JSONL and the original Memento `memory.jsonl` format.

Original lines are `{"case": task, "plan": "<JSON text of {plan: [{id, description}]}>",
"case_label": "positive"|"negative"}`. Importing keeps the plan text verbatim (`plan_source`), so
exporting back gives the same line; the label maps to reward 1 or 0.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import stat
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from pydantic import ValidationError

from memento.graph.errors import InputError
from memento.memory.case import Case

ORIGINAL_KEYS = {"case", "plan", "case_label"}
_ID_NAMESPACE = uuid.UUID("6f1c7a52-4a8e-4e0f-9a4c-1f3c2b7d9e10")


class CaseFileError(InputError, ValueError):
    """A case file line that cannot be imported; names the line."""


def parse_original_plan(text: str) -> list[str]:
    """The subtask descriptions of an original plan text; the raw text when it is not that JSON."""
    try:
        data = json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return [text.strip()] if str(text).strip() else []
    steps = data.get("plan") if isinstance(data, dict) else data
    if isinstance(steps, list):
        out = [str(s.get("description", "")).strip() if isinstance(s, dict) else str(s).strip() for s in steps]
        return [s for s in out if s]
    return [str(text).strip()]


def original_plan_text(case: Case) -> str:
    if case.plan_source is not None:
        return case.plan_source
    return json.dumps({"plan": [{"id": i, "description": s} for i, s in enumerate(case.plan, 1)]}, ensure_ascii=False)


def case_from_line(record: Any) -> Case:
    if not isinstance(record, dict):
        raise ValueError("a line must hold a JSON object")
    if "task" in record and "id" in record:
        # The file's provenance is kept (a backup restores as it was); a case without one is the
        # operator's import, in the shared scope.
        case = Case.model_validate(record)
        return case if case.reward_source else case.model_copy(update={"reward_source": "import"})
    if ORIGINAL_KEYS <= set(record):
        label = record["case_label"]
        if label not in ("positive", "negative"):
            raise ValueError(f"case_label must be positive or negative, got {label!r}")
        if not isinstance(record["case"], str) or not isinstance(record["plan"], str):
            raise ValueError("case and plan must be strings")
        case_id = str(uuid.uuid5(_ID_NAMESPACE, record["case"] + "\x00" + record["plan"]))
        return Case(id=case_id, task=record["case"], plan=parse_original_plan(record["plan"]),
                    plan_source=record["plan"], reward=1.0 if label == "positive" else 0.0, scored_by="imported",
                    reward_source="import")
    raise ValueError("neither the memento format (id, task, ...) nor the original one (case, plan, case_label)")


MAX_LINE_BYTES = 1_000_000


class LineError(ValueError):
    """A line of a JSONL file that is not a usable JSON value; `number` counts from 1."""

    def __init__(self, number: int, reason: str) -> None:
        super().__init__(reason)
        self.number = number


def bounded_lines(handle: BinaryIO, max_total: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of each non-blank line, read one line at a time: a line longer than
    `MAX_LINE_BYTES` is refused once that many bytes are read, never read whole, and with
    `max_total` a file that goes on past that many bytes is refused where it does."""
    read = 0
    for number in itertools.count(1):
        raw = handle.readline(MAX_LINE_BYTES + 2)
        if not raw:
            return
        read += len(raw)
        content = raw[:-1] if raw.endswith(b"\n") else raw
        if len(content) > MAX_LINE_BYTES:
            raise LineError(number, f"the line is longer than {MAX_LINE_BYTES} bytes; at most {MAX_LINE_BYTES} are read")
        if max_total is not None and read > max_total:
            raise LineError(number, f"the file goes on past {max_total} bytes, the most it may hold; split it into "
                                    "several files")
        if content.strip():
            yield number, content


def parse_line(number: int, raw: bytes) -> Any:
    """One line as untrusted JSON: valid UTF-8 (a BOM allowed on line 1), valid JSON not nested too
    deeply, and text that can be stored (no lone surrogate escapes); LineError otherwise."""
    try:
        text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        raise LineError(number, f"not valid UTF-8 (byte {exc.start})") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LineError(number, f"not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise LineError(number, "JSON nested too deeply") from None
    try:  # JSON allows lone surrogates ("\ud800"), which no file or database can store
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise LineError(number, "the line holds a lone surrogate escape (\\ud800 to \\udfff), which is not text") from None
    return record


def jsonl_records(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line of a JSONL file, checked as untrusted
    input: a regular file (a FIFO or a device is refused, not waited on), read a line at a time
    (`bounded_lines`), each line parsed by `parse_line`. OSError for an unreadable file, LineError
    for a bad line."""
    fd = os.open(Path(path).expanduser(), os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        for number, raw in bounded_lines(handle):
            yield number, parse_line(number, raw)


def iter_jsonl(path: str | Path, suffix: str = "") -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) for each non-blank line; CaseFileError on unreadable input."""
    try:
        yield from jsonl_records(path)
    except OSError as exc:
        raise CaseFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except LineError as exc:
        raise CaseFileError(f"{path}, line {exc.number}: {exc}{suffix}") from None


def read_case_file(path: str | Path, max_task_chars: int | None = None) -> list[Case]:
    """Every case in the file, or CaseFileError at the first bad line: all or nothing."""
    suffix = "; nothing was imported"
    cases = []
    for number, record in iter_jsonl(path, suffix):
        try:
            case = case_from_line(record)
            if max_task_chars is not None and len(case.task) > max_task_chars:
                raise ValueError(f"the task is {len(case.task)} characters; at most {max_task_chars} are accepted "
                                 "(setting max_task_chars)")
            cases.append(case)
        except (ValueError, ValidationError) as exc:
            reason = " ".join(str(exc).split())[:200]
            raise CaseFileError(f"{path}, line {number}: {reason}{suffix}") from None
    return cases


def export_lines(cases: list[Case], fmt: str) -> Iterator[str]:
    for case in cases:
        if fmt == "original":
            record = {"case": case.task, "plan": original_plan_text(case),
                      "case_label": "positive" if case.success else "negative"}
        else:
            record = case.model_dump()
        yield json.dumps(record, ensure_ascii=False)
