"""The README's learning curves and K sweep, from scratch, with the simulated model.

    python benchmarks/learning_curves.py --out DIR [--seeds 1,2,3] [--families 8] [--tasks 8]
                                         [--iterations 5] [--sweep-seed 1] [--sweep-iterations 3]

For each seed: `memento bench make-world` writes a plain and a misleading suite, and
`memento bench run` plays each in the arms none, similarity and parametric (K = 4). Then the
plain suite of `--sweep-seed` is played at K = 0, 1, 2, 4, 8 by similarity and parametric. Every
command is printed before it runs, so any single result can be reproduced on its own; each
`--out` folder holds the results, summary and plots of one run. At the end: the accuracy per
iteration, mean over the seeds (and each seed's), and a plot of the means. A finished step is not
run again (the benchmark resumes), so the script can be stopped and started.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ARMS = ("none", "similarity", "parametric")


def run(command: list[str]) -> None:
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)


def memento(*args: str) -> list[str]:
    return [sys.executable, "-m", "memento.cli.main", *args]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--families", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--sweep-seed", type=int, default=1)
    parser.add_argument("--sweep-iterations", type=int, default=3)
    parser.add_argument("--no-sweep", action="store_true")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)

    summaries: dict[str, dict[int, dict]] = {"plain": {}, "misleading": {}}
    for seed in seeds:
        for kind in summaries:
            suite = args.out / f"{kind}-{seed}.jsonl"
            if not suite.exists():
                run(memento("bench", "make-world", "--seed", str(seed), "--families", str(args.families), "--tasks",
                            str(args.tasks), *(["--misleading"] if kind == "misleading" else []), "--out", str(suite)))
            out = args.out / f"run-{kind}-{seed}"
            run(memento("bench", "run", "--tasks", str(suite), "--iterations", str(args.iterations),
                        "--arms", ",".join(ARMS), "--k", "4", "--out", str(out), "--quiet"))
            summaries[kind][seed] = json.loads((out / "summary.json").read_text())
    if not args.no_sweep:
        suite = args.out / f"plain-{args.sweep_seed}.jsonl"
        if not suite.exists():
            run(memento("bench", "make-world", "--seed", str(args.sweep_seed), "--families", str(args.families),
                        "--tasks", str(args.tasks), "--out", str(suite)))
        out = args.out / f"sweep-plain-{args.sweep_seed}"
        run(memento("bench", "run", "--tasks", str(suite), "--iterations", str(args.sweep_iterations),
                    "--arms", "similarity,parametric", "--k", "0,1,2,4,8", "--out", str(out), "--quiet"))
        sweep = json.loads((out / "summary.json").read_text())
    else:
        sweep = None

    lines = []
    for kind, by_seed in summaries.items():
        lines.append(f"\n{kind} suites, seeds {args.seeds}: accuracy per iteration, mean over seeds (each seed)")
        for arm in ARMS:
            per_it = []
            for it in range(args.iterations):
                values = [by_seed[s]["accuracy"][arm][it] for s in seeds]
                per_it.append(f"{100 * mean(values):5.1f} ({'/'.join(f'{100 * v:.0f}' for v in values)})")
            lines.append(f"  {arm:<11} " + "  ".join(per_it))
    if sweep:
        lines.append(f"\nK sweep, plain suite seed {args.sweep_seed}, accuracy at iterations 1..{args.sweep_iterations}")
        for key in sweep["arms"]:
            lines.append(f"  {key:<14} " + "  ".join(f"{100 * v:5.1f}" for v in sweep["accuracy"][key]))
    report = "\n".join(lines)
    print(report)
    (args.out / "report.txt").write_text(report + "\n", encoding="utf-8")
    plot_means(summaries, seeds, args.iterations, args.out / "learning_curves.png")
    print(f"\nplot: {args.out / 'learning_curves.png'}")


def plot_means(summaries: dict[str, dict[int, dict]], seeds: list[int], iterations: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=100, sharey=True)
    xs = list(range(1, iterations + 1))
    for ax, (kind, by_seed) in zip(axes, summaries.items()):
        for arm in ARMS:
            ys = [100 * mean([by_seed[s]["accuracy"][arm][i] for s in seeds]) for i in range(iterations)]
            ax.plot(xs, ys, marker="o", label=arm)
        ax.set(title=f"{kind} suites (mean of {len(seeds)} seeds)", xlabel="iteration", xticks=xs, ylim=(0, 100))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (exact match, %)")
    axes[0].legend(loc="center right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
