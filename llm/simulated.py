"""A deterministic simulated chat model that plays planner, executor and judge offline.

It reads the same prompts a real model gets and answers through the same interfaces: tool
calls for the executor, structured output for the planner and the judge. Its skills are
narrow on purpose: it evaluates arithmetic found in a task, reads attached files, adds up the
numbers it has read, and, having seen a successful past case that did so, plans that sum
step up front, so the benefit of case memory shows in fewer planning cycles. Everything it
writes in free text starts with `[simulated]`.

Table questions (an aggregate of a quantity in one attached CSV, TSV, JSON, JSONL or XLSX file;
see `table_skills`) leave open which column holds the quantity. The planner weighs the past
cases in its prompt by a rank-weighted vote: each case whose plan takes a column and computes an
aggregate gives that column +1/n if it is the n-th successful case shown, -1/n if it is the n-th
failed one. With a column voted for, it adapts that case's plan to the attached file; otherwise
it reads the file first, then picks among the numeric columns it has not tried, leaving out
those the failed cases voted against, by a fixed pseudo-random choice seeded by the task text
(a temperature-0 model's idiosyncratic preference). It never sees which choice is right. A
decision cites (`cases_used`) the cases it relies on: the successes whose column it follows, or
the failures whose columns it leaves out of a guess; a case its decision overrules is not cited.

The persona `primacy` reads cases another way, as LLMs often do: it follows the first successful
case shown whose column fits, and otherwise guesses while avoiding every column a failed case
used. Its decisions are otherwise the same.

The other personas (the part after `simulated:`) inject faults for testing a deployment:
`malformed-once` (the planner's first reply to each request is invalid), `malformed-always`,
`indecisive` (the planner never finishes until it is made to) and `tool-loop` (the executor
never stops calling tools).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool

from memento.llm import table_skills as tables

LABEL = "[simulated]"
PERSONAS = {"default", "primacy", "malformed-once", "malformed-always", "indecisive", "tool-loop"}

CALC_STEP = "Evaluate {expr} with the calculator."
READ_STEP = "Read the attached file {path} and report its contents."
SUM_STEP = "Add up all the numbers in the earlier results with the calculator."
CHECK_STEP = "Double-check this result: {value}"
GENERAL_STEP = "Answer from general knowledge: {task}"

_EXPRESSION = re.compile(r"(?<![\w.])[-(]*\d[\d.\s]*(?:(?:\*\*|//|[-+*/^%])\s*[(\s]*\d[\d.\s)]*)+")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?")
_WANTS_TOTAL = re.compile(r"\b(total|sum|add up|altogether|combined)\b", re.IGNORECASE)
_DONT_KNOW = re.compile(r"^\s*(i don't know|unknown|error)", re.IGNORECASE)


# The section titles the prompts use (`nodes/prompts.py`): a `# ` line inside a tool result or
# a document is content, not a section.
_TITLES = ("Task", "Attached files", "Successful past cases", "Failed past cases", "Results so far", "Instruction",
           "Reviewer feedback", "Overall task", "Earlier results", "Subtask", "Answer")
_BLOCK = re.compile(r"^## (?=Cycle \d+, subtask \d+: |Subtask \d+: |Case \d+ \()", re.MULTILINE)


def sections(text: str) -> dict[str, str]:
    """Split a prompt into its `# Title` sections."""
    found: dict[str, str] = {}
    title, body = None, []
    for line in text.splitlines():
        if line.startswith("# ") and line[2:].strip().startswith(_TITLES):
            if title is not None:
                found[title] = "\n".join(body).strip()
            title, body = line[2:].strip(), []
        else:
            body.append(line)
    if title is not None:
        found[title] = "\n".join(body).strip()
    return found


def _section(found: dict[str, str], prefix: str) -> str:
    return next((body for title, body in found.items() if title.startswith(prefix)), "")


def _blocks(body: str) -> list[tuple[str, str]]:
    """`## Header` blocks of a section as (header, text)."""
    blocks = []
    for chunk in _BLOCK.split(body)[1:]:
        header, _, text = chunk.partition("\n")
        blocks.append((header.strip(), text))
    return blocks


def _strip_label(text: str) -> str:
    return text[len(LABEL):].strip() if text.startswith(LABEL) else text.strip()


def _results(body: str) -> list[tuple[int, str, str]]:
    """(cycle, subtask, result) from a `Results so far` section."""
    out = []
    for header, text in _blocks(body):
        match = re.match(r"Cycle (\d+), subtask \d+: (.*)", header)
        if match:
            result = text.partition("Result:")[2].strip()
            out.append((int(match.group(1)), match.group(2), _strip_label(result)))
    return out


def _files(body: str) -> list[str]:
    return [line[2:].strip() for line in body.splitlines() if line.startswith("- ")]


def unquote(text: str) -> str:
    """The data of quoted lines ("> "), as the prompts quote past cases and answers."""
    return "\n".join(line[2:] if line.startswith("> ") else line[1:] if line == ">" else line
                     for line in text.splitlines())


def _fields(text: str) -> dict[str, list[str]]:
    """A case block's fields: a label line (`Plan:`) followed by its quoted lines. Quoted text cannot
    make a label of its own: every line of it starts with "> "."""
    fields: dict[str, list[str]] = {}
    label = None
    for line in text.splitlines():
        if line.startswith(">") and label is not None:
            fields[label].append(unquote(line))
        elif re.fullmatch(r"[A-Z][a-z]+:", line.strip()):
            label = line.strip()[:-1]
            fields[label] = []
    return fields


def _case_plans(body: str) -> list[tuple[int, list[str]]]:
    """(number shown, plan) of the `## Case n` blocks of a past-cases section, in the order shown."""
    plans = []
    for header, text in _blocks(body):
        number = int(re.match(r"Case (\d+)", header).group(1))
        lines = _fields(text).get("Plan", [])
        plans.append((number, [re.sub(r"^\d+\.\s*", "", line).strip() for line in lines if line.strip()]))
    return plans


def _is_error(result: str) -> bool:
    return result.startswith("error") or bool(_DONT_KNOW.match(result))


class SimulatedChatModel(BaseChatModel):
    """Deterministic stand-in for an LLM; select it with the model setting `simulated`."""

    persona: str = "default"
    tool_names: list[str] = []

    @property
    def _llm_type(self) -> str:
        return "simulated"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"persona": self.persona}

    def bind_tools(self, tools, *, tool_choice=None, **kwargs):  # noqa: D401 - langchain API
        names = [convert_to_openai_tool(tool)["function"]["name"] for tool in tools]
        return self.model_copy(update={"tool_names": names})

    def with_structured_output(self, schema, *, include_raw: bool = False, method: str | None = None, **kwargs):
        # The simulation always answers through a tool call, whatever method a real model uses.
        return super().with_structured_output(schema, include_raw=include_raw, **kwargs)

    def _generate(self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs) -> ChatResult:
        if self.persona not in PERSONAS:
            raise ValueError(f"unknown simulated persona {self.persona!r}: use one of {', '.join(sorted(PERSONAS))}")
        if "JudgeVerdict" in self.tool_names:
            message = self._judge(messages)
        elif {"PlannerDecision", "FinalAnswer"} & set(self.tool_names):
            message = self._planner(messages)
        else:
            message = self._executor(messages)
        message.response_metadata["model_name"] = f"simulated:{self.persona}"
        return ChatResult(generations=[ChatGeneration(message=message)])

    # -- shared -------------------------------------------------------------------------
    @staticmethod
    def _prompt(messages: list[BaseMessage]) -> str:
        return next((m.text for m in messages if isinstance(m, HumanMessage)), "")

    @staticmethod
    def _call(name: str, args: dict[str, Any], messages: list[BaseMessage]) -> AIMessage:
        n = sum(isinstance(m, AIMessage) for m in messages)
        return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": f"call_sim_{n}",
                                                  "type": "tool_call"}])

    # -- planner ------------------------------------------------------------------------
    def _planner(self, messages: list[BaseMessage]) -> AIMessage:
        reply = self._decide(messages)
        # A reviewer's feedback is read (its reasoning says so), though its narrow skills cannot act on it.
        feedback = _section(sections(self._prompt(messages)), "Reviewer feedback").splitlines()
        if feedback and reply.tool_calls:
            args = reply.tool_calls[0]["args"]
            args["reasoning"] = f"{args.get('reasoning', '')} (after reviewer feedback: {feedback[-1].lstrip('- ')})"
        return reply

    def _decide(self, messages: list[BaseMessage]) -> AIMessage:
        retried = len(messages) > 2  # a retry appends the invalid reply and the complaint
        forced_final = "PlannerDecision" not in self.tool_names
        schema = "FinalAnswer" if forced_final else "PlannerDecision"
        if self.persona == "malformed-always" or (self.persona == "malformed-once" and not retried):
            return self._call(schema, {"reasoning": f"{LABEL} an invalid reply", "subtasks": []}, messages)

        found = sections(self._prompt(messages))
        task = _section(found, "Task")
        files = _files(_section(found, "Attached files"))
        results = _results(_section(found, "Results so far"))
        operation = tables.asked_operation(task)
        if len(files) == 1 and tables.is_table_file(files[0]) and operation:
            return self._table_decision(schema, task, files[0], operation, found, results, forced_final, messages)
        if forced_final:
            return self._call(schema, {"reasoning": f"{LABEL} cycles used up; answering from the results",
                                       "final_answer": self._answer(results)}, messages)
        if not results:
            successes = _section(found, "Successful past cases")
            steps = self._first_plan(task, files, successes)
            cited = [n for n, plan in _case_plans(successes) if SUM_STEP in plan] if SUM_STEP in steps else []
            return self._call(schema, {"reasoning": f"{LABEL} plan of {len(steps)} subtask(s)",
                                       "subtasks": steps, "cases_used": cited}, messages)
        if self.persona == "indecisive":
            return self._call(schema, {"reasoning": f"{LABEL} not yet sure",
                                       "subtasks": [CHECK_STEP.format(value=self._answer(results))]}, messages)
        summed = any(subtask.startswith(SUM_STEP[:20]) for _, subtask, _ in results)
        if files and _WANTS_TOTAL.search(task) and not summed:
            return self._call(schema, {"reasoning": f"{LABEL} files read; the task asks for a total",
                                       "subtasks": [SUM_STEP]}, messages)
        return self._call(schema, {"reasoning": f"{LABEL} the results answer the task",
                                   "final_answer": self._answer(results)}, messages)

    def _table_decision(self, schema: str, task: str, path: str, operation: str, found: dict[str, str],
                        results: list[tuple[int, str, str]], forced_final: bool, messages: list[BaseMessage]) -> AIMessage:
        """Plan, replan or answer a table question (the rules are in the module docstring)."""
        def answer(text: str, why: str) -> AIMessage:
            return self._call(schema, {"reasoning": f"{LABEL} {why}", "final_answer": text}, messages)

        def plan(steps: list[str], why: str, cited: list[int] | None = None) -> AIMessage:
            return self._call(schema, {"reasoning": f"{LABEL} {why}", "subtasks": steps,
                                       "cases_used": sorted(cited or [])}, messages)

        computed = [result for _, subtask, result in results
                    if tables.step_operation(subtask) and not _is_error(result)]
        if computed:
            return answer(computed[-1], "the aggregate is computed")
        if forced_final:
            return answer("I don't know.", "cycles used up without a computed aggregate")
        # Each shown case whose plan takes a column and aggregates it: (shown number, its column, its
        # rank among the cases of its section).
        successes = [(n, c, rank) for rank, (n, steps) in enumerate(_case_plans(_section(found, "Successful past cases")), 1)
                     if (c := tables.plan_column(steps))]
        failures = [(n, c, rank) for rank, (n, steps) in enumerate(_case_plans(_section(found, "Failed past cases")), 1)
                    if (c := tables.plan_column(steps))]
        table = next((t for t in (tables.parse_table(r) for _, _, r in reversed(results)) if t), None)
        columns = tables.numeric_columns(table) if table else None
        tried = {c for c in (tables.step_column(subtask) for _, subtask, _ in results) if c}

        def usable(column: str) -> bool:
            return column not in tried and (columns is None or column in columns)

        if self.persona == "primacy":
            # The first successful case that fits is followed; the failures are all avoided.
            follow = next(((n, c) for n, c, _ in successes if usable(c)), None)
            backed, followed = ([follow[1]], {follow[1]: [follow[0]]}) if follow else ([], {})
            ruled_out = {c for _, c, _ in failures}
        else:
            # The rank-weighted vote: +1/rank for a success, -1/rank for a failure.
            votes: dict[str, float] = {}
            for sign, shown in ((1.0, successes), (-1.0, failures)):
                for _, column, rank in shown:
                    votes[column] = votes.get(column, 0.0) + sign / rank
            backed = sorted((c for c in votes if votes[c] > 0 and usable(c)), key=lambda c: -votes[c])  # stable
            followed = {c: [n for n, col, _ in successes if col == c] for c in backed}
            ruled_out = {c for c in votes if votes[c] < 0}
        # A decision cites the cases it relies on: the successes it follows, or the failures it avoids.
        if not results:
            if backed:
                return plan(tables.procedure(path, backed[0], operation), f"adapting a past case that used '{backed[0]}'",
                            followed[backed[0]])
            return plan([tables.READ_STEP.format(path=path)], "reading the table before choosing a column")
        if columns is None:
            return answer("I don't know.", "no table could be read")
        if backed:
            chosen, why, cited = backed[0], f"a past case used '{backed[0]}'", followed[backed[0]]
        else:
            untried = [c for c in columns if c not in tried]
            if not untried:
                return answer("I don't know.", "every numeric column was tried")
            pool = [c for c in untried if c not in ruled_out] or untried
            seed = hashlib.sha256("\n".join([task, *pool]).encode("utf-8")).digest()
            chosen, why = pool[int.from_bytes(seed[:8], "big") % len(pool)], f"guessing among {len(pool)} columns"
            # The failed cases that ruled columns out shaped the guess.
            cited = [n for n, c, _ in failures if c in untried and c not in pool]
        return plan([tables.COLUMN_STEP.format(column=chosen), tables.AGGREGATE_STEP.format(operation=operation)], why,
                    cited)

    @staticmethod
    def _first_plan(task: str, files: list[str], successes: str) -> list[str]:
        if files:
            steps = [READ_STEP.format(path=path) for path in files]
            # The lesson a successful past case teaches: plan the sum step up front.
            if _WANTS_TOTAL.search(task) and SUM_STEP in successes:
                steps.append(SUM_STEP)
            return steps
        expressions = [e.strip() for e in _EXPRESSION.findall(task)]
        if expressions:
            return [CALC_STEP.format(expr=e) for e in expressions]
        return [GENERAL_STEP.format(task=task.strip())]

    @staticmethod
    def _answer(results: list[tuple[int, str, str]]) -> str:
        if not results:
            return "I don't know."
        last_cycle = [(subtask, result) for cycle, subtask, result in results if cycle == results[-1][0]]
        sums = [result for subtask, result in last_cycle if subtask == SUM_STEP]
        return sums[-1] if sums else ", ".join(result for _, result in last_cycle)

    # -- executor -----------------------------------------------------------------------
    def _executor(self, messages: list[BaseMessage]) -> AIMessage:
        found = sections(self._prompt(messages))
        subtask = _section(found, "Subtask")
        last = messages[-1]
        if self.persona == "tool-loop" and "calculate" in self.tool_names:
            return self._call("calculate", {"expression": "1 + 1"}, messages)
        if isinstance(last, ToolMessage):
            prefix = "error: " if last.status == "error" else ""
            return AIMessage(content=f"{LABEL} {prefix}{last.text.strip()}")
        if (m := re.match(r"Evaluate (.+) with the calculator\.$", subtask)) and "calculate" in self.tool_names:
            return self._call("calculate", {"expression": m.group(1)}, messages)
        if (m := re.match(r"Read the attached file (.+) and report", subtask)) and "read_document" in self.tool_names:
            return self._call("read_document", {"path": m.group(1)}, messages)
        earlier = [_strip_label(text.partition("Result:")[2].strip()) for _, text in _blocks(_section(found, "Earlier results"))]
        if column := tables.step_column(subtask):
            table_text = next((text for text in reversed(earlier) if tables.parse_table(text)), "")
            try:
                return AIMessage(content=f"{LABEL} " + tables.values_text(column, tables.column_values(table_text, column)))
            except ValueError as exc:
                return AIMessage(content=f"{LABEL} error: {exc}")
        if (operation := tables.step_operation(subtask)) and "calculate" in self.tool_names:
            values = next((v for v in map(tables.values_from_text, reversed(earlier)) if v), None)
            if values is None:
                return AIMessage(content=f"{LABEL} error: no values to compute with in the earlier results")
            return self._call("calculate", {"expression": tables.aggregate_expression(operation, values)}, messages)
        if subtask == SUM_STEP and "calculate" in self.tool_names:
            numbers = _NUMBER.findall(" ".join(earlier))
            if not numbers:
                return AIMessage(content=f"{LABEL} error: no numbers in the earlier results")
            return self._call("calculate", {"expression": " + ".join(numbers)}, messages)
        if m := re.match(r"Double-check this result: (.*)", subtask):
            return AIMessage(content=f"{LABEL} {m.group(1)}")
        return AIMessage(content=f"{LABEL} I don't know: the simulated executor only knows its tools.")

    # -- judge --------------------------------------------------------------------------
    def _judge(self, messages: list[BaseMessage]) -> AIMessage:
        answer = unquote(_section(sections(self._prompt(messages)), "Answer"))
        correct = bool(answer.strip()) and not _DONT_KNOW.match(answer)
        reason = "the answer is specific" if correct else "the answer is empty or says it does not know"
        return self._call("JudgeVerdict", {"correct": correct, "reason": f"{LABEL} {reason}"}, messages)
