"""Approval at the command line: what a waiting run asks, how to answer, and answering at the terminal."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, TextIO

from memento.cli.render import one_line
from memento.graph.approval import AnswerError, answer_all, check_response, edit_response
from memento.graph.context import ConfigError

EDIT_HINTS = {
    "plan": '{"subtasks": ["first step", "second step"]}',
    "case": '{"reward": 0.5, "final_answer": "..."}',
    "tools": '{"decisions": [{"type": "approve"}, {"type": "edit", "edited_action": {"name": "TOOL", "args": {}}}]}',
}


def describe(request: dict[str, Any]) -> str:
    """A waiting run's question, readable in a terminal."""
    point = request.get("point", "?")
    lines = []
    if request.get("error"):
        lines.append(f"(the last answer was refused: {request['error']})")
    for n, (action, config) in enumerate(zip(request["action_requests"], request["review_configs"]), 1):
        args = action["args"]
        allowed = ", ".join(config["allowed_decisions"])
        if point == "plan":
            lines.append(f"the plan for cycle {args.get('cycle')} waits for approval ({allowed}):")
            lines += [f"  {i}. {step}" for i, step in enumerate(args["subtasks"], 1)]
        elif point == "case":
            lines.append(f"the case waits for approval before it is stored ({allowed}):")
            lines.append(f"  task:   {args['task']}")
            lines.append(f"  answer: {args['final_answer']}")
            score = args.get("score") or {}
            lines.append(f"  reward: {args['reward']:g} (scored by {score.get('scored_by', '?')})")
        else:
            lines.append(f"tool call {n} of {len(request['action_requests'])} waits for approval ({allowed}):")
            lines.append(f"  {action['name']}({json.dumps(args, ensure_ascii=False)})")
    return "\n".join(lines)


def answer_commands(thread_id: str, request: dict[str, Any], options: list[str]) -> list[str]:
    """The exact commands that answer `request`."""
    base = " ".join(["memento", "resume", shlex.quote(thread_id), *map(shlex.quote, options)])
    configs = [set(c["allowed_decisions"]) for c in request["review_configs"]]
    everywhere = set.intersection(*configs)  # --approve and --reject answer every action alike
    commands = []
    if "approve" in everywhere:
        commands.append(f"{base} --approve")
    if "reject" in everywhere:
        commands.append(f'{base} --reject "WHY"')
    if "edit" in set.union(*configs):
        actions = request["action_requests"]
        hint = (json.dumps(actions[0]["args"], ensure_ascii=False) if request.get("point") == "tools" and len(actions) == 1
                else EDIT_HINTS.get(request.get("point"), "{...}"))
        commands.append(f"{base} --edit FILE.json    # FILE.json: {one_line(hint)}")
    commands.append(f"{base} --interactive")
    return commands


def print_waiting(out: TextIO, thread_id: str, request: dict[str, Any], options: list[str], as_json: bool) -> None:
    commands = answer_commands(thread_id, request, options)
    if as_json:
        print(json.dumps({"status": "waiting", "thread_id": thread_id, "point": request.get("point"),
                          "interrupt": request, "commands": commands}, ensure_ascii=False, indent=2), file=out)
        return
    print(describe(request), file=out)
    print("answer with one of:", file=out)
    for command in commands:
        print(f"  {command}", file=out)
    print(f"thread: {thread_id}", file=out)


def response_from_options(request: dict[str, Any], approve: bool, reject: str | None, edit: str | None,
                          max_subtasks: int) -> dict[str, Any]:
    """The answer that --approve, --reject WHY or --edit FILE.json gives, checked against the request
    before anything resumes: a bad answer changes nothing."""
    if approve:
        response = answer_all(request, "approve")
    elif reject is not None:
        response = answer_all(request, "reject", reject)
    else:
        path = Path(edit).expanduser()
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"edit file {path} not found: check the path") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"edit file {path} is not readable JSON: {exc}") from None
        try:
            response = edit_response(request, content)
        except AnswerError as exc:
            raise ConfigError(str(exc)) from None
    try:
        check_response(request, response, max_subtasks)
    except AnswerError as exc:
        raise ConfigError(f"answer refused, the run still waits: {exc}") from None
    return response


def ask_terminal(request: dict[str, Any], max_subtasks: int, read: Callable[[str], str] | None = None,
                 out: TextIO | None = None) -> dict[str, Any]:
    """Ask at the terminal, one decision per action, until the answer is well formed. Prompts go to
    `out` (stderr with --json, so standard output stays one JSON object); EOFError when input ends."""
    out = out or sys.stdout
    if read is None:
        def read(prompt: str) -> str:
            print(prompt, end="", file=out, flush=True)
            line = sys.stdin.readline()
            if not line:
                raise EOFError("standard input ended")
            return line.rstrip("\n")
    while True:
        print(describe(request), file=out, flush=True)
        decisions = [_ask_one(request["point"], action, config, read, out)
                     for action, config in zip(request["action_requests"], request["review_configs"])]
        response = {"decisions": decisions}
        try:
            check_response(request, response, max_subtasks)
            return response
        except AnswerError as exc:
            print(f"not accepted: {exc}", file=out, flush=True)


def _ask_one(point: str, action: dict[str, Any], config: dict[str, Any], read: Callable[[str], str],
             out: TextIO) -> dict[str, Any]:
    allowed = config["allowed_decisions"]
    keys = {"a": "approve", "e": "edit", "r": "reject"}
    label = {"approve": "[a]pprove", "edit": "[e]dit", "reject": "[r]eject" if point != "case" else "[r]eject (discard)"}
    while True:
        choice = read(f"{action['name']}: {', '.join(label[d] for d in allowed)}? ").strip().lower()
        kind = keys.get(choice[:1]) if choice else None
        if kind in allowed:
            break
        print(f"please answer {', '.join(d[0] for d in allowed)}", file=out, flush=True)
    if kind == "approve":
        return {"type": "approve"}
    if kind == "reject":
        return {"type": "reject", "message": read("reason (sent to the planner or executor): ").strip()}
    if point == "plan":
        print("new subtasks, one per line; an empty line ends:", file=out, flush=True)
        steps = []
        while line := read("  > ").strip():
            steps.append(line)
        return {"type": "edit", "edited_action": {"name": action["name"], "args": {"subtasks": steps}}}
    if point == "case":
        args: dict[str, Any] = {}
        reward = read(f"reward 0..1 [{action['args']['reward']:g}]: ").strip()
        if reward:
            try:
                args["reward"] = float(reward)
            except ValueError:
                args["reward"] = reward  # refused by the check, which says why
        answer = read("final answer (empty keeps it): ").strip()
        if answer:
            args["final_answer"] = answer
        return {"type": "edit", "edited_action": {"name": action["name"], "args": args}}
    raw = read("new arguments as JSON: ").strip()
    try:
        args = json.loads(raw)
    except json.JSONDecodeError:
        args = None  # refused by the check
    return {"type": "edit", "edited_action": {"name": action["name"], "args": args}}
