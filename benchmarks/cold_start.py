"""Cold start of each `memento` command: wall time of a fresh process, median of several runs.

    python benchmarks/cold_start.py [--runs 5] [--against DIR]

Each command runs as `python -m memento.cli.main ...` against one small data folder (three
imported cases, one finished run). With `--against DIR`, the same commands also run with DIR
first on PYTHONPATH, where DIR holds another checkout as a `memento` package (e.g. made with
`mkdir -p /tmp/old/memento && git archive REV | tar -x -C /tmp/old/memento`), so before and
after are measured in one run on the same machine. The heavy modules each command imported are
listed too. Compare ratios within one run: the machine's other load shows in the figures.
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

COMMANDS = [
    ["--help"],
    ["cases", "list"],
    ["cases", "export"],
    ["cases", "show", "case-1"],
    ["threads"],
    ["retriever", "--help"],
]
HEAVY = ("torch", "transformers", "chromadb", "langgraph", "langchain_openai", "mcp")
PROBE = """
import json, runpy, sys
sys.argv = ["memento", *sys.argv[1:]]
try:
    runpy.run_module("memento.cli.main", run_name="__main__")
except SystemExit:
    pass
finally:
    print("MODULES " + json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(%r))), file=sys.stderr)
""" % (HEAVY,)


def prepare(data: Path) -> None:
    cases = [{"id": f"case-{n}", "task": f"task {n}", "reward": n % 2} for n in range(3)]
    source = data.parent / "cases.jsonl"
    source.write_text("".join(json.dumps(c) + "\n" for c in cases))
    for args in (["cases", "import", str(source)], ["run", "What is 6 * 7?", "--ground-truth", "42"]):
        subprocess.run([sys.executable, "-m", "memento.cli.main", *args, "--data-dir", str(data)], check=True,
                       capture_output=True, env=environment(None))


def environment(pythonpath: str | None) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False"}
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def measure(command: list[str], data: Path, runs: int, pythonpath: str | None) -> tuple[float, list[str]]:
    times, modules = [], []
    args = command if command[-1] == "--help" else [*command, "--data-dir", str(data)]
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                              env=environment(pythonpath))
        times.append(time.perf_counter() - started)
        for line in done.stderr.splitlines():
            if line.startswith("MODULES "):
                modules = json.loads(line[len("MODULES "):])
    return statistics.median(times), modules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--against", metavar="DIR", help="also measure the checkout in DIR/memento")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "data"
        prepare(data)
        rows = []
        for command in COMMANDS:
            now, heavy = measure(command, data, args.runs, None)
            before = measure(command, data, args.runs, args.against) if args.against else None
            rows.append((" ".join(command), now, heavy, before))
    print(f"median of {args.runs} cold starts, seconds")
    header = "| command | this checkout | heavy modules |" + (" --against | heavy modules | ratio |" if args.against else "")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name, now, heavy, before in rows:
        line = f"| `memento {name}` | {now:.2f} | {', '.join(heavy) or '-'} |"
        if before:
            line += f" {before[0]:.2f} | {', '.join(before[1]) or '-'} | {before[0] / now:.1f}x |"
        print(line)


if __name__ == "__main__":
    main()
