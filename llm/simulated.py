"""A deterministic simulated chat model that plays planner, executor and judge offline.

It reads the same prompts a real model gets and answers through the same interfaces: tool
calls for the executor, structured output for the planner and the judge. Its skills are
narrow on purpose: it evaluates arithmetic found in a task, reads attached files, adds up the
numbers it has read, and, having seen a successful past case that did so, plans that sum
step up front, so the benefit of case memory shows in fewer planning cycles. Everything it
writes in free text starts with `[simulated]`.

Personas (the part after `simulated:`) inject faults for testing a deployment:
`malformed-once` (the planner's first reply to each request is invalid), `malformed-always`,
`indecisive` (the planner never finishes until it is made to) and `tool-loop` (the executor
never stops calling tools).
"""

from __future__ import annotations

import re
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool

LABEL = "[simulated]"
PERSONAS = {"default", "malformed-once", "malformed-always", "indecisive", "tool-loop"}

CALC_STEP = "Evaluate {expr} with the calculator."
READ_STEP = "Read the attached file {path} and report its contents."
SUM_STEP = "Add up all the numbers in the earlier results with the calculator."
CHECK_STEP = "Double-check this result: {value}"
GENERAL_STEP = "Answer from general knowledge: {task}"

_EXPRESSION = re.compile(r"(?<![\w.])[-(]*\d[\d.\s]*(?:(?:\*\*|//|[-+*/^%])\s*[(\s]*\d[\d.\s)]*)+")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?")
_WANTS_TOTAL = re.compile(r"\b(total|sum|add up|altogether|combined)\b", re.IGNORECASE)
_DONT_KNOW = re.compile(r"^\s*(i don't know|unknown|error)", re.IGNORECASE)


def sections(text: str) -> dict[str, str]:
    """Split a prompt into its `# Title` sections."""
    found: dict[str, str] = {}
    title, body = None, []
    for line in text.splitlines():
        if line.startswith("# "):
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
    for chunk in re.split(r"^## ", body, flags=re.MULTILINE)[1:]:
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
        retried = len(messages) > 2  # a retry appends the invalid reply and the complaint
        forced_final = "PlannerDecision" not in self.tool_names
        schema = "FinalAnswer" if forced_final else "PlannerDecision"
        if self.persona == "malformed-always" or (self.persona == "malformed-once" and not retried):
            return self._call(schema, {"reasoning": f"{LABEL} an invalid reply", "subtasks": []}, messages)

        found = sections(self._prompt(messages))
        task = _section(found, "Task")
        files = _files(_section(found, "Attached files"))
        results = _results(_section(found, "Results so far"))
        if forced_final:
            return self._call(schema, {"reasoning": f"{LABEL} cycles used up; answering from the results",
                                       "final_answer": self._answer(results)}, messages)
        if not results:
            steps = self._first_plan(task, files, _section(found, "Successful past cases"))
            return self._call(schema, {"reasoning": f"{LABEL} plan of {len(steps)} subtask(s)",
                                       "subtasks": steps}, messages)
        if self.persona == "indecisive":
            return self._call(schema, {"reasoning": f"{LABEL} not yet sure",
                                       "subtasks": [CHECK_STEP.format(value=self._answer(results))]}, messages)
        summed = any(subtask.startswith(SUM_STEP[:20]) for _, subtask, _ in results)
        if files and _WANTS_TOTAL.search(task) and not summed:
            return self._call(schema, {"reasoning": f"{LABEL} files read; the task asks for a total",
                                       "subtasks": [SUM_STEP]}, messages)
        return self._call(schema, {"reasoning": f"{LABEL} the results answer the task",
                                   "final_answer": self._answer(results)}, messages)

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
        if subtask == SUM_STEP and "calculate" in self.tool_names:
            earlier = " ".join(text.partition("Result:")[2] for _, text in _blocks(_section(found, "Earlier results")))
            numbers = _NUMBER.findall(earlier)
            if not numbers:
                return AIMessage(content=f"{LABEL} error: no numbers in the earlier results")
            return self._call("calculate", {"expression": " + ".join(numbers)}, messages)
        if m := re.match(r"Double-check this result: (.*)", subtask):
            return AIMessage(content=f"{LABEL} {m.group(1)}")
        return AIMessage(content=f"{LABEL} I don't know: the simulated executor only knows its tools.")

    # -- judge --------------------------------------------------------------------------
    def _judge(self, messages: list[BaseMessage]) -> AIMessage:
        answer = _section(sections(self._prompt(messages)), "Answer")
        correct = bool(answer.strip()) and not _DONT_KNOW.match(answer)
        reason = "the answer is specific" if correct else "the answer is empty or says it does not know"
        return self._call("JudgeVerdict", {"correct": correct, "reason": f"{LABEL} {reason}"}, messages)
