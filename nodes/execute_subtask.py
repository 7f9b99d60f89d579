"""`execute_subtask`: the executor runs one subtask in a bounded tool-calling loop over MCP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime

from memento.graph.context import Context, context_of
from memento.graph.state import State, SubtaskResult
from memento.llm.factory import make_chat_model, model_call
from memento.mcp_servers.client import TOOLBOXES, Toolbox
from memento.nodes import prompts
from memento.nodes.planner import render_files


def _earlier(state: State) -> str:
    items = [f"## Subtask {r['index']}: {r['subtask']}\nResult: {r['result']}" for r in state.get("results", [])]
    return "\n\n".join(items) or "none"


def run_workspace(ctx: Context, run_id: str) -> Path:
    """The run's own folder for the code tools, made by the code server on first use (and kept
    after the run, for its outputs)."""
    return (ctx.resolved_data_dir() / "workspaces" / run_id).absolute()


def execute_subtask(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    ctx = context_of(runtime)
    index = state["next_subtask"]
    subtask = state["plan"][index]
    emit = get_stream_writer()
    emit({"event": "subtask", "cycle": state["cycle"], "index": index + 1, "of": len(state["plan"]),
          "subtask": subtask})
    model = make_chat_model(ctx, "executor")
    messages: list[BaseMessage] = [
        SystemMessage(prompts.EXECUTOR_SYSTEM.format(max_tool_calls=ctx.max_tool_calls)),
        HumanMessage(prompts.EXECUTOR_TASK.format(task=state["task"], files=render_files(state.get("run_files") or []),
                                                  earlier=_earlier(state), subtask=subtask)),
    ]
    calls: list[dict[str, Any]] = []
    workspace = run_workspace(ctx, state["case_id"])
    toolbox = TOOLBOXES.acquire(state["case_id"], lambda: Toolbox(
        ctx.mcp_servers, allowed_paths=[*(state.get("run_files") or []), str(workspace)], workspace=str(workspace)))
    bound = model.bind_tools(toolbox.tools) if toolbox.tools else model
    while True:
        with model_call(ctx, "executor"):
            reply: AIMessage = bound.invoke(messages)
        messages.append(reply)
        if not reply.tool_calls:
            break
        for call in reply.tool_calls:
            if len(calls) >= ctx.max_tool_calls:
                outcome = ToolMessage("not run: the tool-call budget for this subtask is used up",
                                      tool_call_id=call["id"], name=call["name"], status="error")
            else:
                outcome = toolbox.call(call, ctx.max_result_chars)
                calls.append({"name": call["name"], "args": call["args"], "status": outcome.status,
                              "output": outcome.text[:500]})
                emit({"event": "tool", "name": call["name"], "args": call["args"], "status": outcome.status,
                      "output": outcome.text[:200]})
            messages.append(outcome)
        if len(calls) >= ctx.max_tool_calls:
            messages.append(HumanMessage(prompts.EXECUTOR_OUT_OF_TOOLS.format(max_tool_calls=ctx.max_tool_calls)))
            with model_call(ctx, "executor"):
                reply = model.invoke(messages)
            break
    text = reply.text.strip() or "(the executor gave no result)"
    result: SubtaskResult = {
        "cycle": state["cycle"], "index": index + 1, "subtask": subtask, "result": text[:ctx.max_result_chars],
        "tool_calls": calls, "ok": not calls or any(c["status"] != "error" for c in calls),
    }
    return {"results": [*state.get("results", []), result], "next_subtask": index + 1}
