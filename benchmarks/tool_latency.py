"""Tool-call latency through a held MCP session against a new server process per call.

    python benchmarks/tool_latency.py [--calls 50] [--fresh-calls 10]

Both go through langchain-mcp-adapters to the math server over stdio. "Held" is how the
executor calls tools (one session per server for the whole run); "new process" is the
adapters' `get_tools()` path, which starts the server for every call.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from langchain_mcp_adapters.client import MultiServerMCPClient

from memento.mcp_servers.client import Toolbox, connections

SERVERS = {"math": {"transport": "stdio", "command": "{python}", "args": ["-m", "memento.mcp_servers.math"]}}


def held(calls: int) -> list[float]:
    samples = []
    with Toolbox(SERVERS) as box:
        box.call({"name": "calculate", "args": {"expression": "1 + 1"}, "id": "warm"}, 1000)
        for i in range(calls):
            t0 = time.perf_counter()
            box.call({"name": "calculate", "args": {"expression": f"{i} * 7"}, "id": str(i)}, 1000)
            samples.append(time.perf_counter() - t0)
    return samples


async def fresh(calls: int) -> list[float]:
    client = MultiServerMCPClient(connections(SERVERS))
    samples = []
    for i in range(calls):
        t0 = time.perf_counter()
        tools = await client.get_tools()
        tool = next(t for t in tools if t.name == "calculate")
        await tool.ainvoke({"expression": f"{i} * 7"})
        samples.append(time.perf_counter() - t0)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--fresh-calls", type=int, default=10)
    args = parser.parse_args()
    kept = held(args.calls)
    spawned = asyncio.run(fresh(args.fresh_calls))
    kept_ms, spawned_ms = statistics.median(kept) * 1000, statistics.median(spawned) * 1000
    print(f"held session       median {kept_ms:8.2f} ms over {len(kept)} calls")
    print(f"new process/call   median {spawned_ms:8.2f} ms over {len(spawned)} calls")
    print(f"ratio (new process / held): {spawned_ms / kept_ms:.0f}x")


if __name__ == "__main__":
    main()
