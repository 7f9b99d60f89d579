"""What a benchmark shows: `summary.json`, a table for the terminal, and PNG plots.

Accuracy is the share of an arm's answers in one iteration that exactly match an accepted answer
after normalisation (lower case, no punctuation or articles); F1 is the mean best token F1. Train
accuracy is on the replayed training tasks; test accuracy on the held-out test tasks, run against
a frozen copy of the arm's bank after each iteration.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

LEARNING_CURVE = "learning_curve.png"
K_SWEEP = "k_sweep.png"
FIGSIZE = (8, 5)
DPI = 100
BOOTSTRAP = 2000
SOURCES = ("self", "own", "lookalike", "unrelated")


def _phase(record: dict[str, Any]) -> str:
    return record.get("phase", "train")


def bootstrap_interval(differences: list[float], seed: int = 0) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of the mean of paired differences."""
    values = np.asarray(differences, np.float64)
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(BOOTSTRAP, len(values)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def paired_differences(records: list[dict[str, Any]], arm_keys: list[str], iterations: int) -> dict[str, list]:
    """For each pair of arms, per iteration, the mean per-task difference of test exact match (the
    later arm minus the earlier, as `--arms` lists them: `parametric - similarity`) with a
    bootstrap 95% interval, over the test tasks both ran."""
    by: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    for r in records:
        if _phase(r) == "test":
            by[(r["arm"], r["iteration"])][r["task_id"]] = float(r["exact_match"])
    out: dict[str, list] = {}
    for b, a in combinations(arm_keys, 2):
        series = []
        for it in range(1, iterations + 1):
            left, right = by.get((a, it), {}), by.get((b, it), {})
            shared = sorted(set(left) & set(right))
            if not shared:
                series.append(None)
                continue
            diffs = [left[t] - right[t] for t in shared]
            low, high = bootstrap_interval(diffs, seed=it)
            series.append({"mean": round(float(np.mean(diffs)), 4), "low": round(low, 4), "high": round(high, 4),
                           "n": len(shared)})
        out[f"{a} - {b}"] = series
    return out


def source_shares(records: list[dict[str, Any]], arm_keys: list[str], iterations: int) -> dict[str, Any]:
    """Where the shown cases came from, per phase, arm and iteration, for generated worlds: the
    task itself (self: an earlier attempt at the same task), another task of its family (own),
    a look-alike family's task (lookalike) or any other (unrelated). Computed from the tasks'
    metadata, which the agent never sees; empty for task files without families."""
    writer: dict[str, dict[str, tuple[str, dict]]] = defaultdict(dict)  # arm -> case id -> (task id, metadata)
    for r in records:
        if _phase(r) == "train" and r.get("case_id"):
            writer[r["arm"]][r["case_id"]] = (r["task_id"], r.get("metadata") or {})
    if not any(meta.get("family") for cases in writer.values() for _, meta in cases.values()):
        return {}
    counts: dict[tuple[str, str, int], dict[str, int]] = defaultdict(lambda: dict.fromkeys(SOURCES, 0))
    for r in records:
        meta = r.get("metadata") or {}
        for shown in r.get("cases_used") or []:
            source = writer[r["arm"]].get(shown["id"])
            if source is None or not meta.get("family"):
                continue
            task_id, case_meta = source
            if task_id == r["task_id"]:
                kind = "self"
            elif case_meta.get("family") == meta["family"]:
                kind = "own"
            elif case_meta.get("family") in (meta.get("lookalikes") or []):
                kind = "lookalike"
            else:
                kind = "unrelated"
            label = r["arm"] if _phase(r) != "cross" else f"{r['arm']}/{r['mode']}"
            counts[(_phase(r), label, r["iteration"])][kind] += 1
    out: dict[str, Any] = {}
    for (phase, label, it), got in sorted(counts.items()):
        total = sum(got.values())
        shares = {kind: round(n / total, 4) for kind, n in got.items()} | {"shown": total}
        out.setdefault(phase, {}).setdefault(label, [None] * iterations)[it - 1] = shares
    return out


def summarise(records: list[dict[str, Any]], arm_keys: list[str], iterations: int, tasks: int,
              run_stats: dict[str, Any] | None = None, test_tasks: int = 0) -> dict[str, Any]:
    by: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    cross: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if _phase(r) == "cross":
            cross[(r["arm"], r["mode"])].append(r)
        else:
            by[(_phase(r), r["arm"], r["iteration"])].append(r)

    def series(field: str, phase: str = "train") -> dict[str, list[float | None]]:
        out = {}
        for key in arm_keys:
            values = []
            for it in range(1, iterations + 1):
                got = [float(r[field] or 0.0) for r in by.get((phase, key, it), [])]
                values.append(round(sum(got) / len(got), 4) if got else None)
            out[key] = values
        return out

    complete = {key: [len(by.get(("train", key, it), [])) == tasks for it in range(1, iterations + 1)]
                for key in arm_keys}
    sweep: dict[str, dict[str, list[float | None]]] = defaultdict(dict)
    accuracy = series("exact_match")
    for key in arm_keys:
        if "@" in key:
            mode, k = key.split("@")
            sweep[mode][k] = accuracy[key]
    summary: dict[str, Any] = {
        "tasks": tasks, "iterations": iterations, "arms": arm_keys,
        "accuracy": accuracy, "f1": series("f1"), "reward": series("reward"),
        "complete": complete,
        "cycles": series("cycles"),
        "errors": {key: sum(1 for r in records if r["arm"] == key and r.get("error")) for key in arm_keys},
        "k_sweep": dict(sweep),
        "runs": len(records),
    }
    if test_tasks:
        summary["test_tasks"] = test_tasks
        summary["test_accuracy"] = series("exact_match", "test")
        test_sweep: dict[str, dict[str, list[float | None]]] = defaultdict(dict)
        for key in arm_keys:
            if "@" in key:
                mode, k = key.split("@")
                test_sweep[mode][k] = summary["test_accuracy"][key]
        if test_sweep:
            summary["k_sweep_test"] = dict(test_sweep)
        summary["test_f1"] = series("f1", "test")
        summary["test_complete"] = {key: [len(by.get(("test", key, it), [])) == test_tasks
                                          for it in range(1, iterations + 1)] for key in arm_keys}
        summary["paired_test"] = paired_differences(records, arm_keys, iterations)
    if cross:
        table: dict[str, dict[str, float | None]] = {}
        for (bank, mode), got in sorted(cross.items()):
            table.setdefault(bank, {})[mode] = round(sum(float(r["exact_match"]) for r in got) / len(got), 4)
        summary["cross_accuracy"] = table
        summary["cross_iteration"] = max(r["iteration"] for rs in cross.values() for r in rs)
    learned = {phase: {key: [_share_learned(by.get((phase, key, it), [])) for it in range(1, iterations + 1)]
                        for key in arm_keys if key.split("@")[0] == "parametric"} for phase in ("train", "test")}
    if any(learned.values()):
        summary["learned_ranking"] = learned  # the fallback's decisions: share of runs the learned order ranked
    if shares := source_shares(records, arm_keys, iterations):
        summary["shown_sources"] = shares
    if run_stats:
        summary["run"] = run_stats
    return summary


def _share_learned(records: list[dict[str, Any]]) -> float | None:
    ranked = [r for r in records if r.get("ranking")]
    return round(sum(r["ranking"] == "learned" for r in ranked) / len(ranked), 4) if ranked else None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def table(summary: dict[str, Any]) -> str:
    """Accuracy per arm and iteration (train, and test when there are test tasks), with the last
    iteration's F1 and mean cycles, the paired test differences and the cross table."""
    iterations = summary["iterations"]
    keys = summary["arms"]
    width = max(10, *(len(k) for k in keys))
    its = "".join(f"{f'it {i}':>8}" for i in range(1, iterations + 1))
    head = f"{'arm':<{width}}" + its + f"{'F1 last':>9}{'cycles':>8}{'errors':>8}"
    lines = [f"train accuracy (exact match) over {summary['tasks']} replayed tasks per iteration", head, "-" * len(head)]
    for key in keys:
        f1 = summary["f1"][key][-1]
        cycles = summary["cycles"][key][-1]
        lines.append(f"{key:<{width}}" + "".join(f"{_pct(v):>8}" for v in summary["accuracy"][key])
                     + f"{('-' if f1 is None else f'{f1:.3f}'):>9}{('-' if cycles is None else f'{cycles:.2f}'):>8}"
                     + f"{summary['errors'][key]:>8}")
    if "test_accuracy" in summary:
        lines += ["", f"test accuracy over {summary['test_tasks']} unseen tasks, frozen bank after each iteration",
                  f"{'arm':<{width}}" + its]
        for key in keys:
            lines.append(f"{key:<{width}}" + "".join(f"{_pct(v):>8}" for v in summary["test_accuracy"][key]))
        lines += ["", "paired test difference (points, mean per task, bootstrap 95% interval), last iteration"]
        for pair, per_it in summary["paired_test"].items():
            last = per_it[-1]
            if last:
                lines.append(f"  {pair:<{2 * width}} {100 * last['mean']:+6.1f}  "
                             f"[{100 * last['low']:+.1f}, {100 * last['high']:+.1f}]")
    if "cross_accuracy" in summary:
        modes = sorted({m for row in summary["cross_accuracy"].values() for m in row})
        lines += ["", f"cross table: test accuracy, bank (rows) read by mode (columns), iteration "
                      f"{summary['cross_iteration']}", f"{'bank':<{width}}" + "".join(f"{m:>12}" for m in modes)]
        for bank, row in summary["cross_accuracy"].items():
            lines.append(f"{bank:<{width}}" + "".join(f"{_pct(row.get(m)):>12}" for m in modes))
    run = summary.get("run") or {}
    if run.get("tasks_per_minute"):
        lines.append(f"{run['executed']} runs in {run['wall_s']:.0f} s ({run['warmup_s']:.1f} s warm-up): "
                     f"{run['tasks_per_minute']:.1f} tasks per minute after warm-up")
    return "\n".join(lines)


def plot(summary: dict[str, Any], out: Path) -> list[Path]:
    """The learning curve (train, and test when there are test tasks), and with several K the K
    sweep, as PNG files in `out`."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    written = []
    iterations = list(range(1, summary["iterations"] + 1))
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    for n, key in enumerate(summary["arms"]):
        values = [None if v is None else 100 * v for v in summary["accuracy"][key]]
        ax.plot(iterations, values, marker="o", color=f"C{n}", label=f"{key}, train (replay)")
        if "test_accuracy" in summary:
            values = [None if v is None else 100 * v for v in summary["test_accuracy"][key]]
            ax.plot(iterations, values, "--", marker="s", color=f"C{n}", label=f"{key}, test (transfer)")
    title = f"Learning curve: {summary['tasks']} tasks per iteration"
    if "test_accuracy" in summary:
        title += f", {summary['test_tasks']} unseen test tasks"
    ax.set(xlabel="iteration", ylabel="accuracy (exact match, %)", ylim=(0, 100), xticks=iterations, title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    path = out / LEARNING_CURVE
    fig.savefig(path)
    plt.close(fig)
    written.append(path)

    sweep = summary.get("k_sweep_test") or summary.get("k_sweep") or {}
    if sweep:
        which = "test (unseen tasks)" if "k_sweep_test" in summary else "train"
        fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
        last = summary["iterations"]
        for n, (mode, by_k) in enumerate(sweep.items()):
            ks = sorted(by_k, key=int)
            for it, style in ((1, "-"), (last, "--")) if last > 1 else ((1, "-"),):
                values = [by_k[k][it - 1] for k in ks]
                ax.plot([int(k) for k in ks], [None if v is None else 100 * v for v in values], style, marker="o",
                        color=f"C{n}", label=f"{mode}, iteration {it}")
        ax.set(xlabel="K (cases shown to the planner)", ylabel=f"{which} accuracy (exact match, %)", ylim=(0, 100),
               title=f"K sweep: {which}", xticks=sorted({int(k) for by_k in sweep.values() for k in by_k}))
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
        fig.tight_layout()
        path = out / K_SWEEP
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
