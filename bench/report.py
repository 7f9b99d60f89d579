"""What a benchmark shows: `summary.json`, a table for the terminal, and PNG plots.

Accuracy is the share of an arm's answers in one iteration that exactly match an accepted answer
after normalisation (lower case, no punctuation or articles); F1 is the mean best token F1.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

LEARNING_CURVE = "learning_curve.png"
K_SWEEP = "k_sweep.png"
FIGSIZE = (8, 5)
DPI = 100


def summarise(records: list[dict[str, Any]], arm_keys: list[str], iterations: int, tasks: int,
              run_stats: dict[str, Any] | None = None) -> dict[str, Any]:
    by: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by[(r["arm"], r["iteration"])].append(r)

    def series(field: str) -> dict[str, list[float | None]]:
        out = {}
        for key in arm_keys:
            values = []
            for it in range(1, iterations + 1):
                got = [float(r[field] or 0.0) for r in by.get((key, it), [])]
                values.append(round(sum(got) / len(got), 4) if got else None)
            out[key] = values
        return out

    complete = {key: [len(by.get((key, it), [])) == tasks for it in range(1, iterations + 1)] for key in arm_keys}
    sweep: dict[str, dict[str, list[float | None]]] = defaultdict(dict)
    accuracy = series("exact_match")
    for key in arm_keys:
        if "@" in key:
            mode, k = key.split("@")
            sweep[mode][k] = accuracy[key]
    return {
        "tasks": tasks, "iterations": iterations, "arms": arm_keys,
        "accuracy": accuracy, "f1": series("f1"), "reward": series("reward"),
        "complete": complete,
        "cycles": series("cycles"),
        "errors": {key: sum(1 for r in records if r["arm"] == key and r.get("error")) for key in arm_keys},
        "k_sweep": dict(sweep),
        "runs": len(records),
        **({"run": run_stats} if run_stats else {}),
    }


def table(summary: dict[str, Any]) -> str:
    """Accuracy per arm and iteration, with the last iteration's F1 and mean cycles."""
    iterations = summary["iterations"]
    keys = summary["arms"]
    width = max(10, *(len(k) for k in keys))
    head = f"{'arm':<{width}}" + "".join(f"{f'it {i}':>8}" for i in range(1, iterations + 1)) + f"{'F1 last':>9}" \
           f"{'cycles':>8}{'errors':>8}"
    lines = [f"accuracy (exact match) over {summary['tasks']} tasks per iteration", head, "-" * len(head)]

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    for key in keys:
        acc = summary["accuracy"][key]
        f1 = summary["f1"][key][-1]
        cycles = summary["cycles"][key][-1]
        lines.append(f"{key:<{width}}" + "".join(f"{pct(v):>8}" for v in acc)
                     + f"{('-' if f1 is None else f'{f1:.3f}'):>9}{('-' if cycles is None else f'{cycles:.2f}'):>8}"
                     + f"{summary['errors'][key]:>8}")
    run = summary.get("run") or {}
    if run.get("tasks_per_minute"):
        lines.append(f"{run['executed']} runs in {run['wall_s']:.0f} s: {run['tasks_per_minute']:.1f} tasks per minute")
    return "\n".join(lines)


def plot(summary: dict[str, Any], out: Path) -> list[Path]:
    """The learning curve, and with several K the K sweep, as PNG files in `out`."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    written = []
    iterations = list(range(1, summary["iterations"] + 1))
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    for key in summary["arms"]:
        values = [None if v is None else 100 * v for v in summary["accuracy"][key]]
        ax.plot(iterations, values, marker="o", label=key)
    ax.set(xlabel="iteration", ylabel="accuracy (exact match, %)", ylim=(0, 100), xticks=iterations,
           title=f"Learning curve: {summary['tasks']} tasks per iteration")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = out / LEARNING_CURVE
    fig.savefig(path)
    plt.close(fig)
    written.append(path)

    sweep = summary.get("k_sweep") or {}
    if sweep:
        fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
        last = summary["iterations"]
        for n, (mode, by_k) in enumerate(sweep.items()):
            ks = sorted(by_k, key=int)
            for it, style in ((1, "-"), (last, "--")) if last > 1 else ((1, "-"),):
                values = [by_k[k][it - 1] for k in ks]
                ax.plot([int(k) for k in ks], [None if v is None else 100 * v for v in values], style, marker="o",
                        color=f"C{n}", label=f"{mode}, iteration {it}")
        ax.set(xlabel="K (cases shown to the planner)", ylabel="accuracy (exact match, %)", ylim=(0, 100),
               title="K sweep", xticks=sorted({int(k) for by_k in sweep.values() for k in by_k}))
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
        fig.tight_layout()
        path = out / K_SWEEP
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
