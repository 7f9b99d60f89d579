"""What `plan` and `replan` share: the planner prompt, the validated call and its retries."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from pydantic import BaseModel

from memento.graph.approval import run_policy
from memento.graph.context import Context
from memento.graph.state import State
from memento.llm.factory import make_chat_model, model_call, structured
from memento.mcp_servers.client import TOOLBOXES
from memento.memory.case import SUCCESS_THRESHOLD
from memento.nodes import prompts
from memento.nodes.schemas import PlannerDecision, bounded_plan


def render_files(files: list[str]) -> str:
    return "\n".join(f"- {path}" for path in files) or "none"


def shown_order(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The retrieved cases as the prompt numbers them: successes first, then failures, each in
    retrieval order. A decision's `cases_used` numbers index this list from 1."""
    return ([c for c in cases if c["reward"] >= SUCCESS_THRESHOLD]
            + [c for c in cases if c["reward"] < SUCCESS_THRESHOLD])


def quote(text: str, chars: int) -> str:
    """`text` as quoted data: at most `chars` characters, every line (by any line break Python knows)
    starting with "> ", control characters dropped, so that nothing in it can start a prompt line of
    its own (a `# Section`, a `## Case` header, a field label)."""
    if len(text) > chars:
        text = f"{text[:chars]} [... {len(text) - chars} more characters cut]"
    lines = ["".join(ch for ch in line if ch.isprintable() or ch == "\t") for line in text.splitlines()] or [""]
    return "\n".join(f"> {line}".rstrip() for line in lines)


def render_cases(cases: list[dict[str, Any]], field_chars: int = 1000, total_chars: int = 12000) -> list[str]:
    """The successes and the failures among the retrieved cases, as two prompt sections: each case
    quoted field by field, each field at most `field_chars` characters, and all cases together at
    most `total_chars` (the cases past it are left out, and the prompt says so). Numbers follow
    `shown_order` whether or not a case fits, so a decision's citations keep pointing at the right case."""
    out, n, room = [], 0, total_chars
    ordered = shown_order(cases)
    cut = False
    for title, wanted in ((prompts.SUCCESS_TITLE, True), (prompts.FAILURE_TITLE, False)):
        items = []
        for c in ordered:
            if (c["reward"] >= SUCCESS_THRESHOLD) != wanted:
                continue
            n += 1
            steps = [quote(f"{i}. {step}", field_chars) for i, step in enumerate(c["plan"], 1)]
            item = prompts.CASE_ITEM.format(
                n=n, similarity=c["similarity"], reward=c["reward"], task=quote(c["task"], field_chars),
                plan="\n".join(steps) or "> (no plan)", answer=quote(c["final_answer"] or "(none)", field_chars))
            if len(item) > room:
                cut = True
                continue
            room -= len(item)
            items.append(item)
        if items:
            out.append(prompts.CASES_SECTION.format(title=title, note=prompts.CASES_NOTE, cases="\n\n".join(items)))
    if out and cut:
        out[-1] += f"\n\n{prompts.CASES_CUT}"
    return out


def render_results(state: State) -> str:
    items = [prompts.RESULT_ITEM.format(cycle=r["cycle"], index=r["index"], subtask=r["subtask"],
                                        result=r["result"]) for r in state.get("results", [])]
    return prompts.RESULTS_SECTION.format(results="\n\n".join(items))


def planner_messages(state: State, ctx: Context, instruction: str) -> list[BaseMessage]:
    parts = [prompts.TASK_SECTION.format(task=state["task"], files=render_files(state.get("run_files") or []))]
    parts += render_cases(state.get("cases_used", []), ctx.case_field_chars, ctx.case_prompt_chars)
    if state.get("results"):
        parts.append(render_results(state))
    if state.get("review_feedback"):
        parts.append(prompts.FEEDBACK_SECTION.format(feedback="\n".join(f"- {f}" for f in state["review_feedback"])))
    parts.append(instruction)
    return [SystemMessage(prompts.PLANNER_SYSTEM.format(max_subtasks=ctx.max_subtasks)),
            HumanMessage("\n\n".join(parts))]


def ask_planner(ctx: Context, messages: list[BaseMessage], schema: type[BaseModel]) -> tuple[BaseModel | None, str | None]:
    """Ask for a `schema` reply; retry a malformed one up to `max_planner_retries` times.

    Returns (decision, None) or (None, error). The complaint about a bad reply goes back to
    the model as the tool result of its own call, which is what OpenAI-style APIs expect.
    """
    if schema is PlannerDecision:
        schema = bounded_plan(ctx.max_subtasks)
    planner = structured(make_chat_model(ctx, "planner"), schema, ctx, "planner")
    messages = list(messages)
    attempts = ctx.max_planner_retries + 1
    problem = "no reply"
    for attempt in range(attempts):
        with model_call(ctx, "planner"):
            reply = planner.invoke(messages)
        decision, problem = _check(reply, ctx)
        if decision is not None:
            return decision, None
        # The reply goes back with the complaint. Every tool call in it is answered (a server
        # refuses an assistant tool call left without its tool message), each with an id (some
        # servers send none), and calls the client could not read are left out.
        raw: AIMessage = reply["raw"]
        calls = [{**call, "id": call.get("id") or f"retry-{attempt}-{n}"} for n, call in enumerate(raw.tool_calls)]
        messages.append(raw.model_copy(update={"tool_calls": calls, "invalid_tool_calls": []}))
        complaint = prompts.RETRY_MESSAGE.format(error=problem)
        if calls:
            messages += [ToolMessage(complaint, tool_call_id=call["id"]) for call in calls]
        else:
            messages.append(HumanMessage(complaint))
    hint = (f" (raise planner_max_tokens, now {ctx.planner_max_tokens}, or the server's own limit)"
            if "token limit" in problem else "")
    return None, f"the planner gave no valid decision in {attempts} attempt(s); last problem: {problem}{hint}"


def _check(reply: dict[str, Any], ctx: Context) -> tuple[BaseModel | None, str]:
    decision, error = reply.get("parsed"), reply.get("parsing_error")
    if error is not None:
        return None, _short(error)
    if decision is None:
        return None, "the reply held no structured decision"
    if isinstance(decision, PlannerDecision) and len(decision.subtasks) > ctx.max_subtasks:
        return None, f"the plan has {len(decision.subtasks)} subtasks; at most {ctx.max_subtasks} are allowed"
    return decision, ""


def _short(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:300] + "..."


def planner_step(state: State, ctx: Context, instruction: str, schema: type[BaseModel]) -> dict[str, Any]:
    """One planner decision as a state update; a planner that stays malformed ends the run."""
    decision, error = ask_planner(ctx, planner_messages(state, ctx, instruction), schema)
    if error:
        TOOLBOXES.release(state.get("case_id"))  # the run ends here: close its tool sessions
        return {"error": error, "plan_rejected": False}
    update = decision_update(state, decision)
    if "plan" in update:
        # A plan made after a rejection is always reviewed: rejecting must not let an unreviewed plan run.
        policy = run_policy(state, ctx)
        update["plan_review"] = policy.asks_for_plan(update["cycle"]) or bool(state.get("plan_rejected"))
    return {**update, "plan_rejected": False}


def cited_ids(state: State, numbers: list[int]) -> list[str]:
    """The ids of the shown cases a decision cited; numbers that name no shown case are ignored."""
    ordered = shown_order(state.get("cases_used", []))
    return list(dict.fromkeys(ordered[n - 1]["id"] for n in numbers if 1 <= n <= len(ordered)))


def citations_update(state: State, decision: BaseModel) -> dict[str, Any]:
    """Who gets the credit: a new plan's citations replace the last plan's, whose cases become
    abandoned (their plan was replaced, so it did not produce the answer); an answer's citations
    join its plan's."""
    cited = cited_ids(state, getattr(decision, "cases_used", []))
    before = list(state.get("cited_cases") or [])
    if getattr(decision, "subtasks", []):
        abandoned = [i for i in [*(state.get("abandoned_cases") or []), *before] if i not in cited]
        return {"cited_cases": cited, "abandoned_cases": list(dict.fromkeys(abandoned))}
    return {"cited_cases": list(dict.fromkeys([*before, *cited]))}


def decision_update(state: State, decision: BaseModel) -> dict[str, Any]:
    """The state update for a valid planner decision: a new plan, or the final answer."""
    notes = [*state.get("planner_notes", []), decision.reasoning]
    credit = citations_update(state, decision)
    subtasks = getattr(decision, "subtasks", [])
    if subtasks:
        return {"plan": subtasks, "plans": [*state.get("plans", []), subtasks], "next_subtask": 0,
                "cycle": state.get("cycle", 0) + 1, "planner_notes": notes, **credit}
    return {"final_answer": decision.final_answer.strip(), "planner_notes": notes, **credit}
