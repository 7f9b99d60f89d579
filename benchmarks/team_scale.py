"""Tasks per minute and retrieval latency of worker processes sharing one Chroma server and one
PostgreSQL (checkpoints and the learning log), against the embedded default with one worker.

    python benchmarks/team_scale.py [--workers 1 2 4] [--tasks 48] [--mode parametric]

Each setup starts its own servers (`chroma run` and a throwaway PostgreSQL, as the tests do) and an
empty bank; each worker is one process that loads the encoder and opens its tool sessions, waits
until every worker is ready, then runs its share of the tasks through the compiled graph with the
simulated model (parametric retrieval: every run records its transitions, and the learner trains
and publishes a version after it). Tasks per minute are counted from the moment all workers start
to the last run's end, warm-up excluded; retrieval latency is the `retrieve_cases` node's time
(query encoding, nearest neighbours, Q ranking, the version check). One run prints every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

WORKER = r"""
import json, os, sys, time
from memento.graph import build_graph
from memento.graph.context import load_context
from memento.graph.persistence import open_checkpointer
from memento.mcp_servers.client import Toolbox
from memento.memory.resources import shared_encoder
from memento.nodes.execute_subtask import run_workspace

spec = json.loads(sys.argv[1])
ctx = load_context(None, **spec["settings"])
shared_encoder(ctx.encoder, ctx.encoder_device).encode(["warm-up"])
Toolbox(ctx.mcp_servers, workspace=str(run_workspace(ctx, "warm-up"))).open().close()
ready, go = spec["ready"], spec["go"]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.01)
rows = []
with open_checkpointer(ctx.checkpointer_target()) as saver:
    graph = build_graph(saver)
    for n, (task, truth) in enumerate(spec["tasks"]):
        started = time.perf_counter(); took = {}; t0 = {}
        config = {"configurable": {"thread_id": f"{spec['name']}-{n}"}}
        for mode, event in graph.stream({"task": task, "ground_truth": truth}, config, context=ctx,
                                        stream_mode=["custom"], durability="sync"):
            if event.get("event") == "node_started":
                t0[event["node"]] = time.perf_counter()
            elif event.get("event") == "node_finished":
                took[event["node"]] = time.perf_counter() - t0[event["node"]]
        state = graph.get_state(config).values
        rows.append({"wall": time.perf_counter() - started, "retrieval": took.get("retrieve_cases"),
                     "write_case": took.get("write_case"), "end": time.time(),
                     "ok": state.get("reward") == 1.0, "transitions": state.get("transitions", 0)})
print(json.dumps(rows))
"""


def tasks(n: int) -> list[tuple[str, str]]:
    out = []
    for i in range(n):
        a, b, c = 11 + i % 17, 3 + i % 7, i
        out.append((f"What is {a} * {b} + {c}?", str(a * b + c)))
    return out


def run_setup(label: str, workers: int, all_tasks: list, settings: dict, folder: Path) -> dict:
    procs = []
    go = folder / f"{label}.go"
    for w in range(workers):
        spec = {"name": f"{label}-w{w}", "tasks": all_tasks[w::workers], "ready": str(folder / f"{label}-w{w}.ready"),
                "go": str(go), "settings": {**settings, "data_dir": str(folder / f"{label}-w{w}")}}
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(spec)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}))
    while not all((folder / f"{label}-w{w}.ready").exists() for w in range(workers)):
        if any(p.poll() is not None for p in procs):
            raise SystemExit(f"a worker of {label} exited early: {procs[0].stderr.read()[-2000:]}")
        time.sleep(0.05)
    start = time.time()
    go.touch()
    rows = []
    for p in procs:
        out, err = p.communicate(timeout=3600)
        if p.returncode != 0:
            raise SystemExit(f"a worker of {label} failed: {err[-2000:]}")
        rows += json.loads(out.strip().splitlines()[-1])
    elapsed = max(r["end"] for r in rows) - start
    retrieval = sorted(r["retrieval"] for r in rows if r["retrieval"] is not None)
    return {"setup": label, "workers": workers, "tasks": len(rows), "seconds": round(elapsed, 1),
            "tasks_per_minute": round(len(rows) / elapsed * 60, 1),
            "retrieval_p50_ms": round(statistics.median(retrieval) * 1000, 1),
            "retrieval_p95_ms": round(retrieval[int(0.95 * (len(retrieval) - 1))] * 1000, 1),
            "run_p50_s": round(statistics.median(r["wall"] for r in rows), 3),
            "write_case_p50_ms": round(statistics.median(r["write_case"] for r in rows) * 1000, 1),
            "correct": sum(r["ok"] for r in rows), "transitions": sum(r["transitions"] for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--tasks", type=int, default=48, help="tasks per setup, shared among its workers")
    parser.add_argument("--mode", default="parametric", help="retrieval mode of every run")
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON object")
    args = parser.parse_args()
    from memento.bench.servers import local_chroma, local_postgres
    from memento.memory.learner import learning_log  # noqa: F401 - fails early if the package is broken

    work = tasks(args.tasks)
    base = {"retrieval_mode": args.mode, "retrieval_temperature": 0.0, "torch_threads": 1}
    rows = []
    with tempfile.TemporaryDirectory(prefix="memento-team-") as tmp:
        folder = Path(tmp)
        rows.append(run_setup("embedded", 1, work, base, folder))
        for n in args.workers:
            with local_postgres() as pg, local_chroma(folder / f"chroma-{n}") as chroma:
                settings = {**base, "checkpointer": pg.url, "chroma_url": chroma.url}
                rows.append(run_setup(f"servers-{n}", n, work, settings, folder))
    if args.json:
        print(json.dumps({"rows": rows}))
        return
    embedded = rows[0]["tasks_per_minute"]
    print(f"{'setup':<12} {'workers':>7} {'tasks':>5} {'tasks/min':>9} {'x embedded':>10} {'retr p50 ms':>11} "
          f"{'retr p95 ms':>11} {'write+learn p50 ms':>18} {'run p50 s':>9} {'correct':>7} {'transitions':>11}")
    for r in rows:
        print(f"{r['setup']:<12} {r['workers']:>7} {r['tasks']:>5} {r['tasks_per_minute']:>9} "
              f"{r['tasks_per_minute'] / embedded:>10.2f} {r['retrieval_p50_ms']:>11} {r['retrieval_p95_ms']:>11} "
              f"{r['write_case_p50_ms']:>18} "
              f"{r['run_p50_s']:>9} {r['correct']:>7} {r['transitions']:>11}")
    print(f"machine: {os.cpu_count()} cores; simulated model (no model latency): the workers share the CPU")


if __name__ == "__main__":
    main()
