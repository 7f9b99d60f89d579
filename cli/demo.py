"""`memento demo`: related tasks run offline through the real graph, showing the case bank at work."""

from __future__ import annotations

import sys
import tempfile
import uuid
from pathlib import Path

from memento.cli.runner import stream_run
from memento.graph.context import Context
from memento.graph.persistence import redact_url
from memento.memory.resources import case_bank_for

REPORTS = {
    "sales_q1.txt": "Sales report, first quarter\nnorth 120\nsouth 85\neast 40\n",
    "sales_q2.txt": "Sales report, second quarter\nnorth 132\nsouth 91\neast 57\nwest 20\n",
    "inventory.txt": "Inventory count\nchairs 14\ntables 6\nlamps 23\n",
}

# (task, attached file or None, ground truth or None: None means the judge model scores it)
TASKS = [
    ("What is 17 * 23 + 4?", None, "395"),
    ("What is the total of the numbers in the attached sales report?", "sales_q1.txt", "245"),
    ("What is the total of the figures in the attached sales report for the second quarter?", "sales_q2.txt", "300"),
    ("Add up the numbers in the attached inventory list: what is the total?", "inventory.txt", "43"),
    ("Who wrote the play Hamlet?", None, None),
    ("Who painted the Mona Lisa?", None, None),
    ("What is (2^10 - 24) / 8?", None, "125"),
]


def run_demo(ctx: Context, data_dir: str | None) -> int:
    folder = Path(data_dir).expanduser() if data_dir else Path(tempfile.mkdtemp(prefix="memento-demo-"))
    files = folder / "files"
    files.mkdir(parents=True, exist_ok=True)
    for name, text in REPORTS.items():
        (files / name).write_text(text, encoding="utf-8")
    ctx = ctx.replace(data_dir=str(folder), approval={})  # the demo runs unattended
    bank = case_bank_for(ctx)
    print(f"Memento demo: {len(TASKS)} related tasks, run offline by the SIMULATED model (deterministic; not an LLM)")
    where = f"Postgres checkpoints ({redact_url(ctx.checkpointer)})" if ctx.uses_postgres() else "SQLite checkpoints"
    print(f"through the real graph, a real Chroma case bank, the real encoder and {where} in {folder}\n")
    rows = []
    for n, (task, attached, truth) in enumerate(TASKS, 1):
        print(f"=== task {n}: {task}  (case bank holds {bank.count()} case(s))")
        graph_input = {"task": task, "files": [str(files / attached)] if attached else [], "ground_truth": truth}
        state = stream_run(ctx, f"demo-{n}-{uuid.uuid4().hex[:8]}", graph_input, progress_out=sys.stdout).state
        used = state.get("cases_used", [])
        good = sum(c["reward"] >= 0.5 for c in used)
        rows.append((n, len(used), good, len(used) - good, len(state.get("plans", [])), state.get("final_answer"),
                     state.get("reward"), bank.count()))
        print(f"answer: {state.get('final_answer')}  [simulated]   reward: {state.get('reward')}\n")
    print(f"{'task':>4}  {'cases used (ok/failed)':<22}  {'cycles':>6}  {'reward':>6}  {'bank':>4}  answer")
    for n, used, good, bad, cycles, answer, reward, size in rows:
        shown = "-" if reward is None else f"{reward:g}"
        print(f"{n:>4}  {f'{used} ({good}/{bad})':<22}  {cycles:>6}  {shown:>6}  {size:>4}  {answer}")
    print("\nTasks 3 and 4 retrieve task 2's successful case and plan the sum step up front: one planning")
    print("cycle instead of two. Task 6 sees task 5's failure as a case to avoid.")
    print(f"Inspect the bank: memento cases list --data-dir {folder}")
    return 0
