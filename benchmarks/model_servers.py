"""Model calls and wall time per task against servers that behave as real ones do.

    python benchmarks/model_servers.py [--tasks 5]

Runs the task "What is 6 * 7?" `--tasks` times through the real graph (no checkpointer, the
built-in MCP servers, similarity retrieval) against each persona of
`tests/fixtures/model_servers.py` (OpenAI-like, llama.cpp, JSON-mode-only, fenced JSON, cut
replies, text tool calls), all three roles on the same server, structured output `auto`. It
prints, per persona: the method `auto` settled on, the model requests of the first task (when
the method is found) and the median of the later ones, and the median wall time per task. The
loopback servers answer at once, so the times are memento's own overhead plus request handling.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for tests.fixtures

from memento.graph import Context, build_graph  # noqa: E402
from memento.llm.structured import forget_learned, learned_method  # noqa: E402
from memento.mcp_servers.client import SESSIONS  # noqa: E402
from tests.fixtures.model_servers import ModelServer  # noqa: E402

CASES = [("openai", {}), ("llamacpp", {}), ("json-mode-only", {"executor_tool_protocol": "text"}),
         ("fenced", {}), ("cut", {}), ("text-tools", {}), ("cut-call", {}), ("think", {})]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=5)
    args = parser.parse_args()
    graph = build_graph()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for persona, settings in CASES:
            forget_learned()
            with ModelServer(persona) as server:
                roles = {f"{r}_{k}": v for r in ("planner", "executor", "judge")
                         for k, v in (("model", "openai-compatible:local"), ("base_url", server.url))}
                ctx = Context(data_dir=str(Path(folder) / persona), **roles, **settings)
                calls, times, answers = [], [], []
                for n in range(args.tasks):
                    before = len(server.requests)
                    started = time.perf_counter()
                    out = graph.invoke({"task": "What is 6 * 7?"}, {"configurable": {"thread_id": f"{persona}-{n}"}},
                                       context=ctx)
                    times.append(time.perf_counter() - started)
                    calls.append(len(server.requests) - before)
                    answers.append(out.get("final_answer") == "42")
                rows.append((persona, learned_method(server.url, "local"), calls[0],
                             statistics.median(calls[1:] or calls), statistics.median(times[1:] or times),
                             sum(answers)))
    SESSIONS.close_all()
    print(f"{args.tasks} tasks per server; requests = model requests per task (planner, executor, judge)")
    print("| server | method auto kept | requests, first task | requests, later (median) | s per task, later "
          "(median) | right answers |")
    print("|---|---|---|---|---|---|")
    for persona, method, first, later, seconds, right in rows:
        print(f"| {persona} | {method} | {first} | {later:g} | {seconds:.2f} | {right}/{args.tasks} |")


if __name__ == "__main__":
    main()
