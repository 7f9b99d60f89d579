"""Where a simulated task's time goes, and how many tasks a minute one process pushes.

    python benchmarks/loop_overhead.py [--tasks 40] [--bare 300]

All in one process, on tasks of an offline world (`memento bench make-world`), with the
simulated model:
- per-task time of the Memento graph (similarity retrieval, case writes, online Q update off
  and on), without a checkpointer and with SQLite checkpoints (durability "sync", as the CLI
  and `memento bench` use);
- the same for a bare LangGraph graph of the same five-node shape whose nodes do nothing;
- the tools' own work per task (MCP calls over held sessions), so the graph's overhead can be
  told from the work it orders;
- case-write latency with and without the online Q update, and the fixed costs: starting a
  process that imports the graph, loading the encoder, opening and closing the tool sessions,
  opening Chroma and the checkpointer, saving the retriever.
Figures are medians unless said otherwise. The machine's other load shows in them: compare
ratios from one run, not figures across runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:9.1f} ms"


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def bare_graph():
    """Five nodes, the Memento routing, nothing done in them."""
    from langgraph.graph import END, START, StateGraph
    from typing_extensions import TypedDict

    class S(TypedDict, total=False):
        task: str
        plan: list[str]
        next: int
        answer: str

    g = StateGraph(S)
    g.add_node("retrieve_cases", lambda s: {"plan": []})
    g.add_node("plan", lambda s: {"plan": ["step"], "next": 0})
    g.add_node("execute_subtask", lambda s: {"next": s["next"] + 1})
    g.add_node("replan", lambda s: {"answer": "done"})
    g.add_node("write_case", lambda s: {})
    g.add_edge(START, "retrieve_cases")
    g.add_edge("retrieve_cases", "plan")
    g.add_conditional_edges("plan", lambda s: "execute_subtask")
    g.add_conditional_edges("execute_subtask", lambda s: "execute_subtask" if s["next"] < len(s["plan"]) else "replan")
    g.add_conditional_edges("replan", lambda s: "write_case" if s.get("answer") else "execute_subtask")
    g.add_edge("write_case", END)
    return g


def process_start() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import memento.graph.builder"], check=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=40, help="tasks per measured configuration")
    parser.add_argument("--bare", type=int, default=300, help="runs of the bare graph")
    args = parser.parse_args()

    start_s = statistics.median(timed(process_start, 3))
    from langgraph.checkpoint.memory import InMemorySaver  # noqa: F401
    from langgraph.checkpoint.sqlite import SqliteSaver

    from memento.bench.tasks import load_tasks
    from memento.bench.world import make_world
    from memento.graph import Context, build_graph
    from memento.mcp_servers import client
    from memento.memory.resources import case_bank_for, retriever_for, shared_encoder

    work = Path(tempfile.mkdtemp(prefix="memento-overhead-"))
    make_world(seed=1, out=work / "world.jsonl", families=4, tasks=max(1, args.tasks // 4))
    tasks = load_tasks(work / "world.jsonl")[: args.tasks]
    base = Context(data_dir=str(work / "warm"))

    # Fixed costs, each measured on its own.
    t0 = time.perf_counter()
    encoder = shared_encoder(base.encoder, base.encoder_device)
    encoder.encode(["warm up"])
    encoder_load_s = time.perf_counter() - t0
    pool = client.SessionPool()
    servers = {k: v for k, v in base.mcp_servers.items() if v.get("enabled", True)}
    t0 = time.perf_counter()
    sessions = pool.lease(servers, "")
    open_s = time.perf_counter() - t0
    pool.give_back(sessions)
    t0 = time.perf_counter()
    pool.close_all()
    close_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    case_bank_for(base).count()
    chroma_open_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with SqliteSaver.from_conn_string(str(work / "open.sqlite")) as saver:
        saver.setup()
    sqlite_open_s = time.perf_counter() - t0

    # The tools' own work: the calls a task of this world makes, over held sessions.
    with client.Toolbox(servers, allowed_paths=[str(work)]) as box:
        path = tasks[0].files[0]
        read = lambda: box.call({"name": "read_document", "args": {"path": path}, "id": "r"}, 100_000)  # noqa: E731
        calc = lambda: box.call({"name": "calculate", "args": {"expression": "1.5 + 2.25 + 3"}, "id": "c"}, 1000)  # noqa: E731
        read(), calc()
        tool_read_s = statistics.median(timed(read, 30))
        tool_calc_s = statistics.median(timed(calc, 30))
    tools_per_task_s = tool_read_s + tool_calc_s  # a solved task: one read, one calculation

    def run_tasks(label: str, ctx: Context, checkpointer: Any, durability: str | None) -> list[float]:
        encoder.forget()  # every configuration meets its tasks for the first time
        graph = build_graph(checkpointer)
        times = []
        for n, task in enumerate(tasks):
            config = {"configurable": {"thread_id": f"{label}-{n}"}}
            kwargs = {"durability": durability} if durability else {}
            t0 = time.perf_counter()
            graph.invoke({"task": task.question, "files": task.files, "ground_truth": task.ground_truth}, config,
                         context=ctx, **kwargs)
            times.append(time.perf_counter() - t0)
        return times

    # Warm the process (sessions opened, encoder loaded) before timing the loop.
    run_tasks("warm", base, None, None)
    configs = {}
    for label, online in (("similarity", False), ("parametric+Q update", True)):
        ctx = Context(data_dir=str(work / label), online_learning=online, retrieval_mode="parametric" if online
                      else "similarity")
        configs[f"memento, {label}, no checkpointer"] = run_tasks(label, ctx, None, None)
        ctx = ctx.replace(data_dir=str(work / f"{label}-sqlite"))
        with SqliteSaver.from_conn_string(str(work / f"{label}.sqlite")) as saver:
            configs[f"memento, {label}, SQLite sync"] = run_tasks(label + "-s", ctx, saver, "sync")
    encoder.forget()
    repeat_ctx = Context(data_dir=str(work / "repeat"), online_learning=False)
    run_tasks("repeat-first", repeat_ctx, None, None)
    graph = build_graph(None)
    repeated = []
    for n, task in enumerate(tasks):  # the same tasks again: their texts are encoded already
        t0 = time.perf_counter()
        graph.invoke({"task": task.question, "files": task.files, "ground_truth": task.ground_truth},
                     {"configurable": {"thread_id": f"again-{n}"}}, context=repeat_ctx)
        repeated.append(time.perf_counter() - t0)
    configs["memento, similarity, tasks seen before (next iteration)"] = repeated

    bare = bare_graph().compile()
    bare_s = statistics.median(timed(lambda: bare.invoke({"task": "t"}), args.bare))

    # Case writes, with and without the online update (what write_case does after scoring).
    from memento.memory.case import Case
    from memento.nodes.write_case import learn_from_run

    ctx = Context(data_dir=str(work / "writes"), retrieval_mode="parametric")
    bank = case_bank_for(ctx)
    seeds = [Case(id=f"seed-{i}", task=t.question, plan=["a"], reward=float(i % 2)) for i, t in enumerate(tasks)]
    bank.write_many(seeds)
    shown = [c.model_dump() | {"similarity": 0.9, "q": 0.5} for c in seeds[:4]]
    plain_write = timed(lambda: bank.write(Case(id="w", task=tasks[0].question, plan=["a"], reward=1.0)), 20)
    counter = iter(range(10_000))

    def write_and_learn() -> None:
        case = bank.write(Case(id=f"l{next(counter)}", task=tasks[1].question, plan=["b"], reward=1.0))
        learn_from_run(ctx, bank, case, shown)

    learn_write = timed(write_and_learn, 20)
    retriever = retriever_for(ctx)
    save_s = statistics.median(timed(lambda: retriever.save(work / "save.pt"), 5))
    buffer = retriever.buffer.size

    print(f"Memento loop overhead, simulated model, {len(tasks)} tasks of an offline world per configuration\n")
    print("per task (median)")
    print(f"  bare five-node LangGraph graph, nodes do nothing      {ms(bare_s)}")
    print(f"  the tools' own work (1 read_document + 1 calculate)  {ms(tools_per_task_s)}")
    for label, times in configs.items():
        med = statistics.median(times)
        print(f"  {label:<52}{ms(med)}   {60 / statistics.mean(times):6.0f} tasks/min   "
              f"{med / bare_s:6.0f}x bare   {med / (bare_s + tools_per_task_s):5.1f}x (bare + tools)")
    print("\ncase write (median)")
    print(f"  write only                                        {ms(statistics.median(plain_write))}")
    print(f"  write + online Q update (8 steps) + save          {ms(statistics.median(learn_write))}"
          f"   ({statistics.median(learn_write) / statistics.median(plain_write):.1f}x)")
    print(f"  retriever save alone ({buffer} transitions)          {ms(save_s)}")
    print("\nfixed costs (once per process)")
    print(f"  start python and import the graph builder        {ms(start_s)}")
    print(f"  load the encoder and encode one text              {ms(encoder_load_s)}")
    print(f"  open the {len(servers)} MCP tool sessions                      {ms(open_s)}")
    print(f"  close them                                        {ms(close_s)}")
    print(f"  open the Chroma case bank                         {ms(chroma_open_s)}")
    print(f"  open the SQLite checkpointer                      {ms(sqlite_open_s)}")


if __name__ == "__main__":
    main()
