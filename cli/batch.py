"""`memento run --tasks FILE.jsonl --out RESULTS.jsonl [--concurrency N]`: a task file through one
compiled graph, up to N runs at once, one result line per task.

The task file is the benchmark's format (`id`, `question`, optional `answer` to score against,
`files`); without an answer the judge scores the run. Each task is a thread of its own, named by
this batch's id (kept beside the results, in `.RESULTS.jsonl.id`) and the task's id, so the same
command started again continues: a task with a result line is skipped, a run cut off by a kill
resumes from its checkpoint, and a run that finished before its line was written is recorded
without running again. A run that stops at an approval point is recorded as `waiting`, with its
thread id for `memento resume`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from memento.graph.context import ConfigError, Context

MAX_CONCURRENCY = 256


def _batch_id(out: Path, tasks_file: str) -> str:
    """This batch's id, kept beside its results with the digest of the task file it ran: the same
    results file with another task file is refused (its ids would name other questions)."""
    from memento.bench.harness import write_json
    from memento.bench.tasks import file_digest

    marker = out.with_name(f".{out.name}.id")
    digest = file_digest(tasks_file)
    if not marker.exists():
        write_json(marker, {"id": uuid.uuid4().hex[:12], "tasks_sha256": digest})
    try:
        stored = json.loads(marker.read_text(encoding="utf-8"))
        batch, ran = str(stored["id"]), stored["tasks_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{marker} is not a batch's id file: give another --out") from None
    if ran != digest:
        raise ConfigError(f"{out} holds the results of another task file (or of this one before it changed): give "
                          "another --out, or run the task file it was made with")
    return batch


def run_task_file(ctx: Context, args: argparse.Namespace) -> int:
    from memento.bench.harness import _finished, append_record, read_records, warm_up
    from memento.bench.pool import run_lanes
    from memento.bench.tasks import load_tasks
    from memento.cli.runner import checkpointed_graph, thread_config, thread_status

    if not args.out:
        raise ConfigError("--tasks needs --out RESULTS.jsonl: the file that gets one result line per task")
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        raise ConfigError(f"--concurrency must be between 1 and {MAX_CONCURRENCY}, got {args.concurrency}")
    # Every line checked before anything runs; files only from the task file's folder or a --files-root.
    tasks = load_tasks(args.tasks, answers_required=False, files_roots=args.files_root)
    for task in tasks:
        if problem := ctx.task_problem(task.question):
            raise ConfigError(f"{args.tasks}, line {task.line}: {problem}; nothing was run")
    out = Path(args.out).expanduser().absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {str(r.get("task_id")) for r in read_records(out)}
    todo = [t for t in tasks if t.id not in done]
    batch = _batch_id(out, args.tasks)
    progress = sys.stderr
    print(f"[memento] {len(tasks)} task(s) in {args.tasks}: {len(done & {t.id for t in tasks})} already done, "
          f"{len(todo)} to run, {args.concurrency} at once", file=progress, flush=True)
    # The encoder and the tool sessions first, off the clock: tasks per minute are the steady rate.
    warmup = warm_up([ctx]) if todo else 0.0
    started = time.perf_counter()
    tally = {"done": 0, "failed": 0, "waiting": 0}

    with checkpointed_graph(ctx) as graph:
        def work(task: Any) -> dict[str, Any]:
            thread = f"{batch}-{task.id}"
            config = thread_config(thread, ctx)
            t0 = time.perf_counter()
            snapshot = graph.get_state(config)
            if snapshot.created_at is None:
                graph_input: Any = {"task": task.question, "files": task.files,
                                    "ground_truth": task.ground_truth if task.answers else None}
                graph.invoke(graph_input, config, context=ctx, durability="sync")
            elif not _finished(snapshot.values) and not snapshot.interrupts:
                graph.invoke(None, config, context=ctx, durability="sync")  # cut off by a kill: finish it
            snapshot = graph.get_state(config)
            values = snapshot.values
            return {"task_id": task.id, "thread_id": thread, "status": thread_status(snapshot),
                    "final_answer": values.get("final_answer"), "reward": values.get("reward"),
                    "case_id": values.get("case_id") if values.get("case_written") else None,
                    "transitions": values.get("transitions", 0), "error": values.get("error"),
                    "interrupt": snapshot.interrupts[0].value if snapshot.interrupts else None,
                    "wall_s": round(time.perf_counter() - t0, 3), "metadata": task.metadata}

        def record(task: Any, result: dict[str, Any]) -> None:
            append_record(out, result)
            tally[result["status"] if result["status"] in tally else "failed"] += 1
            print(f"[memento] {task.id}: {result['status']}  {result['final_answer']!r}  "
                  f"reward {result['reward']}", file=progress, flush=True)

        ran = run_lanes(todo, lambda task: "tasks", work, record, args.concurrency)
    wall = time.perf_counter() - started
    report = {"status": "done", "tasks": len(tasks), "ran": ran, "skipped": len(tasks) - len(todo), **tally,
              "concurrency": args.concurrency, "warmup_s": round(warmup, 2), "wall_s": round(wall, 2),
              "tasks_per_minute": round(60 * ran / wall, 1) if ran and wall > 0 else None, "out": str(out)}
    print(json.dumps(report) if args.json else
          f"{ran} task(s) run ({tally['done']} done, {tally['failed']} failed, {tally['waiting']} waiting), "
          f"{report['skipped']} already done; results in {out}")
    return 1 if tally["failed"] else 0
