"""How progress and results look in a terminal."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, TextIO

from memento.graph.context import Context
from memento.memory.case import Case


def one_line(text: str, width: int = 100) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def simulated_roles(ctx: Context) -> list[str]:
    return [role for role in ("planner", "executor", "judge") if getattr(ctx, f"{role}_model").startswith("simulated")]


class Spinner:
    """On a terminal, a status line for silent stretches (the encoder loading, tool servers
    starting, a slow model): what is going on and for how long, redrawn until the next line."""

    FRAMES = "|/-\\"

    def __init__(self, out: TextIO, quiet_s: float = 0.5) -> None:
        self.out, self.quiet_s = out, quiet_s
        self.label: str | None = None
        self.since = time.monotonic()
        self._drawn = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True, name="memento-spinner")
        self._thread.start()

    def show(self, label: str | None) -> None:
        with self._lock:
            self.label, self.since = label, time.monotonic()

    def clear(self) -> None:
        with self._lock:
            self._erase()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
        self.clear()

    def _erase(self) -> None:
        if self._drawn:
            self.out.write("\r\033[K")
            self.out.flush()
            self._drawn = False

    def _spin(self) -> None:
        frame = 0
        while not self._stop.wait(0.1):
            with self._lock:
                waited = time.monotonic() - self.since
                if self.label is None or waited < self.quiet_s:
                    continue
                frame += 1
                self.out.write(f"\r\033[K{self.FRAMES[frame % 4]} {self.label} ({waited:.0f} s)")
                self.out.flush()
                self._drawn = True


class Progress:
    """Prints one line per node update and per custom event (subtask, tool call, case write), and
    on a terminal a spinner while nothing is printed."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._args: dict[str, str] = {}
        self.spinner = Spinner(out) if getattr(out, "isatty", lambda: False)() else None

    def say(self, line: str) -> None:
        if self.spinner is not None:
            self.spinner.clear()
        print(line, file=self.out, flush=True)
        if self.spinner is not None:
            self.spinner.show(self.spinner.label)  # the silence starts again

    def close(self) -> None:
        if self.spinner is not None:
            self.spinner.close()

    def custom(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if self.spinner is not None:
            if kind == "node_started":
                self.spinner.show(f"{event['node']}")
            elif kind == "phase":
                self.spinner.show(f"{event['text']}")
            elif kind == "node_finished":
                self.spinner.show(None)
        if kind == "phase" and self.spinner is None and "encoder" in event.get("text", ""):
            self.say(f"  {event['text']} ...")  # seconds of silence otherwise
        if kind == "cases_retrieved":
            self.say(f"  cases: {event['count']} retrieved, {event['successes']} successful")
        elif kind == "subtask_started":
            self.say(f"  subtask {event['index']}/{event['of']} (cycle {event['cycle']}): {one_line(event['subtask'])}")
        elif kind == "tool_call":
            self._args[event["id"]] = ", ".join(f"{k}={v!r}" for k, v in event["args"].items())
        elif kind == "tool_result":
            args = self._args.pop(event["id"], "")
            self.say(f"    tool {event['name']}({one_line(args, 60)}) -> {event['status']}: "
                     f"{one_line(event['output'], 60)}")
        elif kind == "approval_requested" and event.get("error"):
            self.say(f"  the last answer was refused: {event['error']}")
        elif kind == "case_written":
            self.say(f"  case {event['case_id']} written, reward {event['reward']:g}")
        elif kind == "case_discarded":
            self.say("  case discarded by the reviewer: nothing written, nothing learned")
        elif kind == "structured_output":
            why = f" (after: {one_line(event['reason'], 80)})" if event.get("reason") else ""
            self.say(f"  {event['role']} structured output: {event['method']}{why}")

    def update(self, node: str, values: dict[str, Any] | None) -> None:
        values = values or {}
        if node == "__interrupt__":
            points = ", ".join(str(i.value.get("point", "input")) if isinstance(i.value, dict) else "input"
                               for i in values)
            self.say(f"[paused] waiting for approval: {points}")
            return
        detail = ""
        if values.get("error"):
            detail = f"error: {values['error']}"
        elif node in ("plan", "replan") and values.get("final_answer") is not None:
            detail = f"final answer: {one_line(values['final_answer'])}"
        elif node in ("plan", "replan", "review_plan") and values.get("plan"):
            steps = "; ".join(f"{i}. {one_line(s, 60)}" for i, s in enumerate(values["plan"], 1))
            detail = f"plan for cycle {values.get('cycle', '?')}: {steps}"
        elif node == "execute_subtask" and values.get("results"):
            detail = f"result: {one_line(values['results'][-1]['result'])}"
        elif node == "write_case" and values.get("score"):
            detail = f"scored by {values['score']['scored_by']}"
        self.say(f"[{node}] {detail}".rstrip())


def print_outcome(state: dict[str, Any], thread_id: str, ctx: Context, as_json: bool,
                  out: TextIO | None = None) -> None:
    out = out or sys.stdout  # looked up at each call: a caller may have replaced sys.stdout
    roles = simulated_roles(ctx)
    if as_json:
        keys = ("final_answer", "reward", "score", "plans", "results", "case_id", "case_discarded", "kept_workspace",
                "transitions", "retriever_version", "error")
        payload = {"status": "failed" if state.get("error") else "done", "thread_id": thread_id,
                   **{k: state.get(k) for k in keys},
                   "cases_used": [{"id": c["id"], "similarity": c["similarity"], "reward": c["reward"]}
                                  for c in state.get("cases_used", [])],
                   "simulated_roles": roles}
        print(json.dumps(payload, ensure_ascii=False, indent=2), file=out)
        return
    label = f"  [simulated model: {', '.join(roles)}]" if roles else ""
    if state.get("error"):
        print(f"run ended with an error: {state['error']}{label}", file=out)
    else:
        print(f"answer: {state.get('final_answer')}{label}", file=out)
        if state.get("reward") is not None:
            print(f"reward: {state['reward']:g} ({state['score']['scored_by']})", file=out)
        if state.get("case_discarded"):
            print("case: discarded by the reviewer (nothing stored, nothing learned)", file=out)
        if state.get("kept_workspace"):
            print(f"workspace: {state['kept_workspace']}", file=out)
    print(f"thread: {thread_id}", file=out)


def case_row(case: Case) -> str:
    flag = "  [quarantined]" if case.quarantined else ""
    return (f"{case.id[:8]}  {case.reward:>6g}  {case.created_at[:19]}  {one_line(case.author, 20):<20}  "
            f"{one_line(case.scope, 20):<20}  {one_line(case.task, 60)}{flag}")


def case_text(case: Case) -> str:
    plan = "\n".join(f"  {i}. {step}" for i, step in enumerate(case.plan, 1)) or "  (none)"
    return (f"id:           {case.id}\ntask:         {case.task}\nreward:       {case.reward:g} ({case.scored_by})\n"
            f"final answer: {case.final_answer}\nthread:       {case.thread_id or '-'}\n"
            f"author:       {case.author}\nscope:        {case.scope}{'  (quarantined)' if case.quarantined else ''}\n"
            f"reward from:  {case.reward_source or '-'}{f' ({case.reviewer})' if case.reviewer else ''}\n"
            + (f"promoted by:  {case.promoted_by}\n" if case.promoted_by else "") +
            f"created:      {case.created_at}\nupdated:      {case.updated_at}\nplan:\n{plan}\n"
            f"results:\n  " + case.result_summary.replace("\n", "\n  "))


def thread_row(row: dict[str, Any]) -> str:
    age = row["age_s"]
    ago = f"{age:.0f}s" if age < 120 else f"{age / 60:.0f}m" if age < 7200 else f"{age / 3600:.0f}h"
    line = f"{row['thread_id']}  {row['status']:<8} {ago:>5} ago  {one_line(row.get('task') or '', 60)}"
    if row["status"] == "waiting":
        actions = ", ".join(a["name"] for a in row["interrupt"]["action_requests"])
        line += f"\n    asks: {row['interrupt'].get('point', '?')} ({actions})"
    return line
