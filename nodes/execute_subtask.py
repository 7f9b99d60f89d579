"""`execute_subtask`: the executor runs one subtask in a bounded tool-calling loop over MCP."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langgraph.config import get_stream_writer
from langgraph.func import task
from langgraph.runtime import Runtime

from memento.graph.approval import ApprovalPolicy, run_policy, tools_request
from memento.graph.context import Context, context_of
from memento.graph.state import State, SubtaskResult
from memento.llm.factory import make_chat_model, model_call
from memento.llm.structured import text_tool_calls
from memento.mcp_servers.client import TOOLBOXES, Toolbox
from memento.nodes import prompts
from memento.nodes.planner import render_files
from memento.nodes.review import ask


def _earlier(state: State) -> str:
    items = [f"## Subtask {r['index']}: {r['subtask']}\nResult: {r['result']}" for r in state.get("results", [])]
    return "\n\n".join(items) or "none"


RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def run_workspace(ctx: Context, run_id: str) -> Path:
    """The run's own folder for the code tools, made by the code server on first use; removed
    when the run ends unless `keep_workspaces` is set (see `remove_workspace`). The run id is a
    plain name (a case id is a UUID): never a path, so the folder is always directly inside
    DATA_DIR/workspaces."""
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise ValueError(f"run id {str(run_id)[:80]!r} is not a plain name: a workspace is never anywhere else")
    return (ctx.resolved_data_dir() / "workspaces" / run_id).absolute()


def remove_workspace(workspace: Path) -> None:
    """Remove a finished run's workspace. Where the code server moved it for its sandbox user
    (to the system temp dir's `memento-sandbox/`, linked from here) the moved folder goes too.
    The tree was made by the run's code, so it is removed by `rm -rf --one-file-system`, which
    never follows a link and handles any depth; without `rm`, by `shutil.rmtree`."""
    if workspace.is_symlink():
        target = Path(os.path.realpath(workspace))
        try:
            parent = target.parent.lstat()  # the code server's folder: root's, writable by it only
        except OSError:
            parent = None
        if (parent is not None and target.parent.name == "memento-sandbox" and parent.st_uid == 0
                and not parent.st_mode & 0o022 and stat.S_ISDIR(target.lstat().st_mode)):
            _remove_tree(target)
        workspace.unlink(missing_ok=True)
    elif workspace.is_dir():
        _remove_tree(workspace)


def _remove_tree(folder: Path) -> None:
    rm = shutil.which("rm")
    if rm is not None:
        subprocess.run([rm, "-rf", "--one-file-system", "--", str(folder)], capture_output=True, check=False)
    if os.path.lexists(folder):  # no GNU rm (BSD rm lacks --one-file-system)
        try:
            shutil.rmtree(folder, ignore_errors=True)
        except RecursionError:  # deeper than Python 3.11's recursive rmtree goes: left in place
            pass


def readable_calls(reply: AIMessage, turn: int) -> tuple[AIMessage, list[dict[str, Any]]]:
    """The reply with an id on every tool call (some servers send none) and without the calls the
    client could not read; and those unreadable calls."""
    bad = list(reply.invalid_tool_calls)
    if not bad and all(call.get("id") for call in reply.tool_calls):
        return reply, []
    calls = [{**call, "id": call.get("id") or f"call-{turn}-{n}"} for n, call in enumerate(reply.tool_calls)]
    return reply.model_copy(update={"tool_calls": calls, "invalid_tool_calls": []}), bad


def as_text_result(call: dict[str, Any], outcome: ToolMessage, status: str) -> HumanMessage:
    """A tool result for a call made through the text protocol: a user message, since the server
    takes no tool messages."""
    return HumanMessage(prompts.TEXT_TOOL_RESULT.format(name=call["name"], status=status, output=outcome.text))


def describe_tools(toolbox: Toolbox) -> str:
    """The tools as the text protocol's prompt lists them: name, description, JSON arguments."""
    lines = []
    for tool in toolbox.tools:
        schema = tool.args_schema if isinstance(tool.args_schema, dict) else tool.get_input_schema().model_json_schema()
        lines.append(f"- {tool.name}: {' '.join((tool.description or '').split())[:300]}\n"
                     f"  arguments: {json.dumps(schema.get('properties', {}), ensure_ascii=False)[:600]}")
    return "\n".join(lines)


@task(name="executor_model")
def executor_turn(ctx: Context, model: Any, messages: list[BaseMessage]) -> AIMessage:
    """One executor model call. A task: its reply is checkpointed, so a node that runs again after
    an approval (or a crash) reads it back instead of asking the model again."""
    with model_call(ctx, "executor"):
        return model.invoke(messages)


@task(name="tool_call")
def tool_call(toolbox: Toolbox, call: dict[str, Any], max_chars: int) -> ToolMessage:
    """One tool call, checkpointed like `executor_turn`: no tool runs twice because a node re-ran."""
    emit = get_stream_writer()
    emit({"event": "tool_call", "name": call["name"], "args": call["args"], "id": call["id"]})
    outcome = toolbox.call(call, max_chars)
    emit({"event": "tool_result", "name": call["name"], "id": call["id"], "status": outcome.status,
          "output": outcome.text[:200]})
    return outcome


def rejected(call: dict[str, Any], message: str) -> ToolMessage:
    reason = message or "no reason given"
    return ToolMessage(f"not run: a human reviewer rejected this call ({reason})", tool_call_id=call["id"],
                       name=call["name"], status="error")


def run_calls(ctx: Context, policy: ApprovalPolicy, toolbox: Toolbox,
              wanted: list[dict[str, Any]]) -> list[tuple[dict[str, Any], ToolMessage, str]]:
    """Run one executor turn's tool calls in order: (the call as run, its result, status).

    The calls the approval policy names are asked about together, one decision each, before any
    of the turn's calls runs; an edited call runs with the reviewer's arguments, a rejected one
    returns the reviewer's reason as the tool's error."""
    allowed = [policy.tool_decisions(call["name"]) for call in wanted]
    asked = [(call, a) for call, a in zip(wanted, allowed) if a is not None]
    decisions = iter(ask(tools_request([c for c, _ in asked], [a for _, a in asked]), ctx.max_subtasks)
                     if asked else [])
    done = []
    for call, needs in zip(wanted, allowed):
        decision = next(decisions) if needs is not None else {"type": "approve"}
        if decision["type"] == "reject":
            done.append((call, rejected(call, decision["message"]), "rejected"))
            continue
        if decision["type"] == "edit":
            call = {**call, "args": decision["edited_action"]["args"]}
        outcome = tool_call(toolbox, call, ctx.max_result_chars).result()
        done.append((call, outcome, outcome.status))
    return done


def execute_subtask(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    ctx = context_of(runtime)
    index = state["next_subtask"]
    subtask = state["plan"][index]
    emit = get_stream_writer()
    emit({"event": "subtask_started", "cycle": state["cycle"], "index": index + 1, "of": len(state["plan"]),
          "subtask": subtask})
    model = make_chat_model(ctx, "executor")
    messages: list[BaseMessage] = [
        SystemMessage(prompts.EXECUTOR_SYSTEM.format(max_tool_calls=ctx.max_tool_calls)),
        HumanMessage(prompts.EXECUTOR_TASK.format(task=state["task"], files=render_files(state.get("run_files") or []),
                                                  earlier=_earlier(state), subtask=subtask)),
    ]
    calls: list[dict[str, Any]] = []
    workspace = run_workspace(ctx, state["case_id"])
    emit({"event": "phase", "text": "connecting to the tool servers"})  # seconds when they must start
    toolbox = TOOLBOXES.acquire(state["case_id"], lambda: Toolbox(
        ctx.mcp_servers, allowed_paths=[*(state.get("run_files") or []), str(workspace)], workspace=str(workspace)))
    protocol = ctx.executor_tool_protocol
    names = {t.name for t in toolbox.tools}
    if protocol == "text" and toolbox.tools:  # no native tool calls: the tools are described in the prompt
        messages[0] = SystemMessage(messages[0].content + prompts.EXECUTOR_TEXT_TOOLS.format(tools=describe_tools(toolbox)))
    bound = model.bind_tools(toolbox.tools) if toolbox.tools and protocol != "text" else model
    policy = run_policy(state, ctx)
    unreadable = 0
    while True:
        reply: AIMessage = executor_turn(ctx, bound, messages).result()
        reply, bad = readable_calls(reply, turn=len(calls) + unreadable)
        messages.append(reply)
        if bad and not reply.tool_calls:
            # A call the client could not read (arguments cut at the token limit, or not JSON):
            # the executor is told, and it counts against the budget, so this cannot loop.
            unreadable += 1
            calls.append({"name": bad[0].get("name") or "?", "args": {}, "status": "error",
                          "output": "the call's arguments were not valid JSON"})
            if len(calls) >= ctx.max_tool_calls:
                break
            messages.append(HumanMessage(prompts.UNREADABLE_CALL.format(names=", ".join(
                str(b.get("name") or "?") for b in bad))))
            continue
        wanted, as_text = list(reply.tool_calls), False
        if not wanted and protocol != "native" and names:
            # A server without native tool calls: a call written as JSON in the reply (the whole
            # reply, under auto, so an answer that quotes JSON is not taken for one).
            wanted = text_tool_calls(reply.text, names, whole_reply=protocol == "auto", first_id=len(calls))
            as_text = bool(wanted)
        if not wanted:
            break
        room = max(ctx.max_tool_calls - len(calls), 0)
        done = run_calls(ctx, policy, toolbox, wanted[:room])
        if not as_text and any(call is not asked for call, (asked, _, _) in zip(wanted, done)):
            # A reviewer edited arguments: the executor sees the calls as they ran, as LangChain's
            # human-in-the-loop middleware shows them.
            ran = [call for call, _, _ in done] + wanted[room:]
            messages[-1] = reply = reply.model_copy(update={"tool_calls": ran})
        for call, outcome, status in done:
            calls.append({"name": call["name"], "args": call["args"], "status": status, "output": outcome.text[:500]})
            messages.append(as_text_result(call, outcome, status) if as_text else outcome)
        for call in wanted[room:]:
            skipped = ToolMessage("not run: the tool-call budget for this subtask is used up", tool_call_id=call["id"],
                                  name=call["name"], status="error")
            messages.append(as_text_result(call, skipped, "error") if as_text else skipped)
        if len(calls) >= ctx.max_tool_calls:
            messages.append(HumanMessage(prompts.EXECUTOR_OUT_OF_TOOLS.format(max_tool_calls=ctx.max_tool_calls)))
            reply = executor_turn(ctx, model, messages).result()
            break
    text = reply.text.strip() or "(the executor gave no result)"
    result: SubtaskResult = {
        "cycle": state["cycle"], "index": index + 1, "subtask": subtask, "result": text[:ctx.max_result_chars],
        "tool_calls": calls, "ok": not calls or any(c["status"] == "success" for c in calls),
    }
    emit({"event": "subtask_finished", "cycle": state["cycle"], "index": index + 1, "result": result["result"][:200],
          "ok": result["ok"]})
    return {"results": [*state.get("results", []), result], "next_subtask": index + 1}
