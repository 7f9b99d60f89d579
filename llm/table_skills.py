"""What the simulated model knows about questions on data tables, and how it words and runs them.

A table question asks for an aggregate (total, average, largest, smallest, spread) of some
quantity in one attached table file (CSV, TSV, JSON, JSONL, XLSX). The procedure has three tool
steps, in this wording: read the file (document reader), take one column's values from what was
read, compute the aggregate (calculator). Which column holds the quantity is what a question
leaves open: the model learns it from past cases or guesses.

`memento bench make-world` words its tasks' right procedures with the same steps and computes
their answers by running the same tools, so a benchmark world and the model share a language,
not the answers.
"""

from __future__ import annotations

import json
import re
from pathlib import PurePath

TABLE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".xlsx")

READ_STEP = "Read the attached file {path} and report its contents."
COLUMN_STEP = "Take the values in the column '{column}' of the table in the earlier results."
AGGREGATE_STEP = "Compute the {operation} of those values with the calculator."

# Checked in this order: a question about the spread also says "largest" and "smallest".
OPERATIONS: dict[str, re.Pattern] = {
    "range": re.compile(r"\b(spread|range)\b", re.IGNORECASE),
    "mean": re.compile(r"\b(average|mean)\b", re.IGNORECASE),
    "maximum": re.compile(r"\b(largest|highest|maximum|biggest)\b", re.IGNORECASE),
    "minimum": re.compile(r"\b(smallest|lowest|minimum)\b", re.IGNORECASE),
    "sum": re.compile(r"\b(total|sum|add up|altogether|combined)\b", re.IGNORECASE),
}

_READ = re.compile(r"^Read the attached file (.+) and report its contents\.$")
_COLUMN = re.compile(r"^Take the values in the column '(.+)' of the table in the earlier results\.$")
_AGGREGATE = re.compile(r"^Compute the (\w+) of those values with the calculator\.$")
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")
VALUES_PREFIX = "values of '{column}': "


def is_table_file(path: str) -> bool:
    return PurePath(path.lower()).suffix in TABLE_SUFFIXES


def asked_operation(question: str) -> str | None:
    """The aggregate a question asks for, or None."""
    return next((name for name, pattern in OPERATIONS.items() if pattern.search(question)), None)


def read_path(step: str) -> str | None:
    match = _READ.match(step.strip())
    return match.group(1) if match else None


def step_column(step: str) -> str | None:
    match = _COLUMN.match(step.strip())
    return match.group(1) if match else None


def step_operation(step: str) -> str | None:
    match = _AGGREGATE.match(step.strip())
    return match.group(1) if match and match.group(1) in OPERATIONS else None


def procedure(path: str, column: str, operation: str) -> list[str]:
    """The three steps of a table procedure, worded as plans word them."""
    return [READ_STEP.format(path=path), COLUMN_STEP.format(column=column), AGGREGATE_STEP.format(operation=operation)]


def plan_column(steps: list[str]) -> str | None:
    """The column a table plan takes its values from (None if the plan is not a table procedure)."""
    columns = [c for c in map(step_column, steps) if c]
    has_aggregate = any(step_operation(s) for s in steps)
    return columns[-1] if columns and has_aggregate else None


# -- reading tables out of text --------------------------------------------------------------
def _markdown_rows(text: str) -> list[list[str]] | None:
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    if len(lines) < 2:
        return None
    rows = []
    for line in lines:
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if all(re.fullmatch(r"-{3,}", c) for c in cells if c):
            continue  # the separator under the header
        rows.append(cells)
    return rows if len(rows) >= 2 else None


def _json_rows(text: str) -> list[list[str]] | None:
    text = text.strip()
    records = None
    try:
        data = json.loads(text)
        records = data if isinstance(data, list) else None
    except json.JSONDecodeError:
        try:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError:
            return None
    if not records or not all(isinstance(r, dict) for r in records):
        return None
    header = list(records[0])
    return [header] + [["" if r.get(k) is None else str(r.get(k)) for k in header] for r in records]


def parse_table(text: str) -> tuple[list[str], list[list[str]]] | None:
    """(header, rows) of the first table in `text`: a markdown table, a JSON list of records, or
    JSON lines. None when there is none."""
    rows = _json_rows(text) or _markdown_rows(text)
    if not rows:
        return None
    header, body = rows[0], rows[1:]
    return header, [row + [""] * (len(header) - len(row)) for row in body]


def numeric_columns(table: tuple[list[str], list[list[str]]]) -> list[str]:
    """Columns whose every cell is a number, in the table's order."""
    header, rows = table
    return [name for i, name in enumerate(header) if rows and all(_NUMBER.match(row[i]) for row in rows)]


def column_values(text: str, column: str) -> list[str]:
    """The values of `column` in the table found in `text`; ValueError naming what is wrong."""
    table = parse_table(text)
    if table is None:
        raise ValueError("there is no table in the earlier results")
    header, rows = table
    if column not in header:
        raise ValueError(f"the table has no column '{column}'; its columns are {', '.join(header)}")
    index = header.index(column)
    values = [row[index] for row in rows]
    if not values or not all(_NUMBER.match(v) for v in values):
        raise ValueError(f"the column '{column}' does not hold only numbers")
    return values


def values_text(column: str, values: list[str]) -> str:
    return VALUES_PREFIX.format(column=column) + ", ".join(values)


def values_from_text(text: str) -> list[str] | None:
    """The values a column step reported (`values of 'x': 1, 2.5, 3`), or None."""
    match = re.search(r"values of '[^']*': (.+)$", text.strip(), flags=re.DOTALL)
    if not match:
        return None
    values = [v.strip() for v in match.group(1).split(",")]
    return values if values and all(_NUMBER.match(v) for v in values) else None


def aggregate_expression(operation: str, values: list[str]) -> str:
    """A calculator expression for the aggregate of `values`."""
    listed = ", ".join(values)
    expressions = {
        "sum": " + ".join(values),
        "mean": f"({' + '.join(values)}) / {len(values)}",
        "maximum": f"max({listed})",
        "minimum": f"min({listed})",
        "range": f"max({listed}) - min({listed})",
    }
    if operation not in expressions:
        raise ValueError(f"unknown operation {operation!r}: use one of {', '.join(expressions)}")
    return expressions[operation]
