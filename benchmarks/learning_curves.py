"""The README's learning curves: transfer to unseen tasks over several seeds, with intervals.

    python benchmarks/learning_curves.py --out DIR [--seeds 101,102,103,104,105] [--kinds plain,misleading]
        [--planner simulated] [--iterations 3] [--k 4] [--jobs 2] [--sweep-seed S] [--sweep-kind KIND] [--no-cross]
    [--arms similarity,parametric] [--concurrency N]

For each seed and kind: `memento bench make-world` writes a training file and a test file (the
defaults: 9 families, in look-alike groups of 3 when misleading, 5 plausible columns, 16 tasks
per family of which 8 go to the test file), and `memento bench run --test --cross` plays it in
the arms none, similarity, utility and parametric. The kinds are the world shapes in `KINDS`
(plain, misleading: one fixed cue word; reworded, worded: the cue said three ways, irrelevant
fragments, and for worded reordered templates and shared words). With `--sweep-seed`, that seed's
world of `--sweep-kind` is also played by similarity and parametric at K = 0, 1, 2, 4, 8. Every command is printed
before it runs, so any single result can be reproduced on its own; each `--out` folder holds the
results, summary and plots of one run; a finished step is not run again.

At the end, per kind and arm: train and test accuracy per iteration, the mean over seeds with a
95% t-interval across seeds; the paired test difference of each arm from similarity (the mean over
seeds of each seed's mean per-task difference, with its t-interval) and each seed's own bootstrap
interval; the cross table, mean over seeds. `report.txt`, `report.json` and `learning_curves.png`.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ARMS = ("none", "similarity", "utility", "parametric")
# World shapes (`bench make-world` options): look-alike families told apart by one fixed cue word,
# then the same worded as people write (the cue said three ways, irrelevant fragments), then
# with every wording option (templates reordered, words shared across groups).
KINDS = {
    "plain": [],
    "misleading": ["--misleading"],
    "reworded": ["--misleading", "--cue-wordings", "3", "--noise", "2"],
    "worded": ["--misleading", "--cue-wordings", "3", "--noise", "2", "--reorder", "--shared-words"],
}


def run(command: list[str]) -> None:
    print("$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True, stderr=subprocess.DEVNULL)


def memento(*args: str) -> list[str]:
    return [sys.executable, "-m", "memento.cli.main", *args]


def mean_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and the 95% t-interval of the mean across seeds."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan"), float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def play(args: argparse.Namespace, kind: str, seed: int) -> dict:
    """Make the world and run the benchmark (each skipped when already done); its summary."""
    world = args.out / f"{kind}-{seed}.jsonl"
    test = args.out / f"{kind}-{seed}-test.jsonl"
    if not world.exists() or not test.exists():
        run(memento("bench", "make-world", "--seed", str(seed), *KINDS[kind], "--out", str(world), "--test-out", str(test)))
    out = args.out / f"run-{kind}-{seed}"
    run(memento("bench", "run", "--tasks", str(world), "--test", str(test), "--iterations", str(args.iterations),
                "--arms", ",".join(args.arms), "--k", str(args.k), *([] if args.no_cross else ["--cross"]),
                "--planner-model", args.planner, "--out", str(out), "--quiet",
                "--concurrency", str(args.concurrency)))
    return json.loads((out / "summary.json").read_text())


def sweep(args: argparse.Namespace) -> dict:
    kind = args.sweep_kind
    world = args.out / f"{kind}-{args.sweep_seed}.jsonl"
    test = args.out / f"{kind}-{args.sweep_seed}-test.jsonl"
    if not world.exists() or not test.exists():
        run(memento("bench", "make-world", "--seed", str(args.sweep_seed), *KINDS[kind], "--out", str(world),
                    "--test-out", str(test)))
    out = args.out / f"sweep-{kind}-{args.sweep_seed}"
    run(memento("bench", "run", "--tasks", str(world), "--test", str(test), "--iterations", str(args.iterations),
                "--arms", "similarity,parametric", "--k", "0,1,2,4,8", "--planner-model", args.planner,
                "--out", str(out), "--quiet"))
    return json.loads((out / "summary.json").read_text())


def fmt(stat: tuple[float, float, float]) -> str:
    mean, low, high = stat
    return f"{100 * mean:5.1f} [{100 * low:5.1f}, {100 * high:5.1f}]"


def aggregate(summaries: dict[str, dict[int, dict]], iterations: int, arms: list[str]) -> dict:
    out: dict = {}
    for kind, by_seed in summaries.items():
        seeds = sorted(by_seed)
        entry: dict = {"seeds": seeds, "train": {}, "test": {}, "vs_similarity": {}, "cross": {}}
        for arm in arms:
            for phase, key in (("train", "accuracy"), ("test", "test_accuracy")):
                entry[phase][arm] = [mean_interval([by_seed[s][key][arm][i] for s in seeds]) for i in range(iterations)]
            if arm != "similarity" and "similarity" in arms:
                diffs, per_seed = [], []
                for i in range(iterations):
                    paired = [by_seed[s]["paired_test"].get(f"{arm} - similarity") or
                              _flip(by_seed[s]["paired_test"].get(f"similarity - {arm}")) for s in seeds]
                    diffs.append(mean_interval([p[i]["mean"] for p in paired]))
                    per_seed.append([(p[i]["mean"], p[i]["low"], p[i]["high"]) for p in paired])
                entry["vs_similarity"][arm] = {"mean": diffs, "per_seed": per_seed}
        shares = [by_seed[s]["learned_ranking"] for s in seeds if "learned_ranking" in by_seed[s]]
        if shares:  # the fallback's decisions: the share of runs the learned order ranked, mean over seeds
            entry["learned_ranking"] = {phase: [sum(got[phase]["parametric"][i] or 0.0 for got in shares) / len(shares)
                                                for i in range(iterations)] for phase in ("train", "test")}
        if all("cross_accuracy" in by_seed[s] for s in seeds):
            for bank in arms:
                entry["cross"][bank] = {mode: mean_interval([by_seed[s]["cross_accuracy"][bank][mode] for s in seeds])
                                        for mode in by_seed[seeds[0]]["cross_accuracy"][bank]}
        out[kind] = entry
    return out


def _flip(series: list | None) -> list | None:
    if series is None:
        return None
    return [None if p is None else {"mean": -p["mean"], "low": -p["high"], "high": -p["low"], "n": p["n"]}
            for p in series]


def report(stats: dict, args: argparse.Namespace, swept: dict | None) -> str:
    lines = [f"planner {args.planner}; K = {args.k}; {args.iterations} iterations; figures are accuracy in %, "
             "mean over seeds [95% t-interval across seeds]"]
    for kind, entry in stats.items():
        lines.append(f"\n{kind} worlds, seeds {', '.join(map(str, entry['seeds']))}")
        for phase in ("train", "test"):
            lines.append(f"  {phase} ({'replayed training tasks' if phase == 'train' else 'unseen test tasks'})")
            for arm in entry[phase]:
                lines.append(f"    {arm:<11} " + "  ".join(fmt(s) for s in entry[phase][arm]))
        lines.append("  test difference from similarity (points), per iteration; then each seed's last-iteration "
                     "difference [its bootstrap 95% interval over tasks]")
        for arm, got in entry["vs_similarity"].items():
            lines.append(f"    {arm:<11} " + "  ".join(fmt(s) for s in got["mean"]))
            lines.append("                " + "  ".join(f"{100 * m:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
                                                    for m, lo, hi in got["per_seed"][-1]))
        if "learned_ranking" in entry:
            lines.append("  the fallback: share of parametric runs ranked by the learned order (else similarity), per iteration")
            for phase, got in entry["learned_ranking"].items():
                lines.append(f"    {phase:<11} " + "  ".join(f"{100 * v:5.1f}" for v in got))
        if entry["cross"]:
            modes = list(next(iter(entry["cross"].values())))
            lines.append("  cross table, last iteration: bank (rows) read by mode (columns), mean over seeds")
            lines.append("    " + " " * 11 + "".join(f"{m:>12}" for m in modes))
            for bank, row in entry["cross"].items():
                lines.append(f"    {bank:<11}" + "".join(f"{100 * row[m][0]:12.1f}" for m in modes))
    if swept:
        lines.append(f"\nK sweep, {args.sweep_kind} world seed {args.sweep_seed}: train / test accuracy per iteration")
        for key in swept["arms"]:
            lines.append(f"  {key:<14} train " + " ".join(f"{100 * v:5.1f}" for v in swept["accuracy"][key])
                         + "   test " + " ".join(f"{100 * v:5.1f}" for v in swept["test_accuracy"][key]))
    return "\n".join(lines)


def plot(stats: dict, iterations: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, len(stats), figsize=(5.5 * len(stats), 4.5), dpi=100, sharey=True, squeeze=False)
    xs = list(range(1, iterations + 1))
    for ax, (kind, entry) in zip(axes[0], stats.items()):
        for n, arm in enumerate(entry["train"]):
            for phase, style in (("train", "-"), ("test", "--")):
                means = [100 * s[0] for s in entry[phase][arm]]
                ax.plot(xs, means, style, marker="o" if phase == "train" else "s", color=f"C{n}", label=f"{arm} {phase}")
                if phase == "test":
                    ax.fill_between(xs, [max(0.0, 100 * s[1]) for s in entry[phase][arm]],
                                    [min(100.0, 100 * s[2]) for s in entry[phase][arm]], color=f"C{n}", alpha=0.12)
        ax.set(title=f"{kind} worlds ({len(entry['seeds'])} seeds)", xlabel="iteration", xticks=xs, ylim=(0, 100))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (exact match, %): train solid, test dashed (95% band)")
    axes[0][-1].legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seeds", default="101,102,103,104,105")
    parser.add_argument("--kinds", default="plain,misleading", help=f"world shapes, of {', '.join(KINDS)}")
    parser.add_argument("--planner", default="simulated", help="planner model, e.g. simulated:primacy")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=1, help="benchmarks run at once (each is one process)")
    parser.add_argument("--sweep-seed", type=int)
    parser.add_argument("--sweep-kind", default="misleading", choices=list(KINDS), help="the K sweep's world shape")
    parser.add_argument("--no-cross", action="store_true")
    parser.add_argument("--arms", default=",".join(ARMS), help="arms to play (default: all four)")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="tasks of an iteration run at once in each arm (bench run --concurrency)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    args.arms = [a for a in args.arms.split(",") if a]
    kinds = [k for k in args.kinds.split(",") if k]
    if unknown := [k for k in kinds if k not in KINDS]:
        parser.error(f"unknown world kind {unknown[0]!r}: choose from {', '.join(KINDS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(kind, seed) for seed in seeds for kind in kinds]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        done = list(pool.map(lambda job: (job, play(args, *job)), jobs))
    summaries: dict[str, dict[int, dict]] = {kind: {} for kind in kinds}
    for (kind, seed), summary in done:
        summaries[kind][seed] = summary
    swept = sweep(args) if args.sweep_seed is not None else None
    stats = aggregate(summaries, args.iterations, args.arms)
    text = report(stats, args, swept)
    print(text)
    (args.out / "report.txt").write_text(text + "\n", encoding="utf-8")
    (args.out / "report.json").write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()},
                                                      "stats": stats, "sweep": swept}, indent=1) + "\n",
                                          encoding="utf-8")
    plot(stats, args.iterations, args.out / "learning_curves.png")
    print(f"\nplot: {args.out / 'learning_curves.png'}")


if __name__ == "__main__":
    main()
