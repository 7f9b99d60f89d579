"""`memento bench run`: every task through the real graph, once per iteration, in each arm.

An arm is a retrieval mode (`none`, `similarity`, `parametric`) at one K (cases shown to the
planner). Each arm has a data folder of its own (case bank, Q-retriever, checkpoints), empty at
the start and growing across iterations: the paper's continual-learning protocol. `none`
retrieves nothing but still writes its cases, so the arms differ only in retrieval.

One process, one encoder and one set of MCP tool sessions serve the whole benchmark. Each run is
a thread of its arm's SQLite checkpointer, named by (arm, iteration, task): started again after
a kill, the benchmark skips what `results.jsonl` already holds, finishes a run that was cut off
from its checkpoint (the case id is fixed in its first step, so its case is written once), and
starts the rest. Nothing is run twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

from memento.bench.tasks import BenchTask, file_digest
from memento.graph.context import ConfigError, Context
from memento.memory.scoring import exact_match, token_f1

ARMS = ("none", "similarity", "parametric")
RESULTS = "results.jsonl"
SETTINGS = "bench.json"
SUMMARY = "summary.json"


@dataclass(frozen=True)
class Arm:
    mode: str
    k: int
    key: str

    def context(self, base: Context, data_dir: Path) -> Context:
        # A benchmark runs unattended: a config's approval points are off for it.
        return base.replace(data_dir=str(data_dir / self.key.replace("@", "-k")), write_cases=True,
                            retrieval_mode=self.mode, top_k=self.k if self.mode != "none" else 0, approval={})


def make_arms(modes: list[str], ks: list[int]) -> list[Arm]:
    """The arms to run: every mode at every K (`none` once: it shows no cases at any K). With
    several K the keys are `MODE@K`."""
    unknown = [m for m in modes if m not in ARMS]
    if unknown or not modes:
        raise ConfigError(f"unknown arm(s) {', '.join(unknown) or '(none given)'}: use some of {', '.join(ARMS)}")
    if not ks or any(k < 0 for k in ks):
        raise ConfigError("--k takes whole numbers >= 0, e.g. --k 4 or --k 0,1,2,4,8")
    arms: list[Arm] = []
    for mode in dict.fromkeys(modes):
        if mode == "none":
            arms.append(Arm("none", 0, "none"))
            continue
        for k in dict.fromkeys(ks):
            arms.append(Arm(mode, k, f"{mode}@{k}" if len(set(ks)) > 1 else mode))
    return arms


@dataclass
class BenchSettings:
    tasks: str
    tasks_sha256: str
    iterations: int
    arms: list[str]
    k: list[int]
    reward: str
    data_dir: str
    settings_sha256: str  # the models, retrieval and limits (everything of Context but data_dir)

    def same_benchmark(self, other: "BenchSettings") -> list[str]:
        """The settings that differ from a stored benchmark's (the iterations may change)."""
        differ = [name for name in ("tasks_sha256", "reward", "data_dir") if getattr(self, name) != getattr(other, name)]
        differ += [name for name in ("arms", "k") if sorted(getattr(self, name)) != sorted(getattr(other, name))]
        if self.settings_sha256 != other.settings_sha256:
            differ.append("settings (--config, models)")
        return differ


def best(answer: str, answers: list[str]) -> tuple[float, float]:
    """Exact match after normalisation and token F1, each the best over the accepted answers."""
    return max(exact_match(answer, a) for a in answers), max(token_f1(answer, a) for a in answers)


def _finished(values: dict[str, Any]) -> bool:
    return bool(values.get("case_written")) or values.get("error") is not None


class Benchmark:
    """Runs (arm, iteration, task) triples through the graph and records one line per run."""

    def __init__(self, tasks: list[BenchTask], settings: BenchSettings, base: Context, out: Path) -> None:
        if settings.reward not in ("truth", "judge"):
            raise ConfigError(f"--reward must be truth or judge, got {settings.reward!r}")
        if settings.iterations < 1:
            raise ConfigError(f"--iterations must be at least 1, got {settings.iterations}")
        self.tasks = tasks
        self.settings = settings
        self.arms = make_arms(settings.arms, settings.k)
        self.base = base
        self.out = out
        self.data_dir = Path(settings.data_dir)
        self.contexts = {arm.key: arm.context(base, self.data_dir) for arm in self.arms}
        self.results_path = out / RESULTS
        self.records: list[dict[str, Any]] = []

    # -- bookkeeping ---------------------------------------------------------------------
    def prepare(self) -> None:
        """Check `--out` against a stored benchmark, or start a new one in empty arm folders."""
        self.out.mkdir(parents=True, exist_ok=True)
        stored_path = self.out / SETTINGS
        if stored_path.exists():
            try:
                stored = BenchSettings(**json.loads(stored_path.read_text(encoding="utf-8")))
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{stored_path} is not a benchmark's settings file ({exc}): use another --out") from None
            differ = self.settings.same_benchmark(stored)
            if differ:
                raise ConfigError(f"{self.out} holds a benchmark with other {', '.join(differ)}: resume it with the "
                                  "same task file and options, or give another --out")
        else:
            for key, ctx in self.contexts.items():
                folder = ctx.resolved_data_dir()
                if folder.exists() and any(folder.iterdir()):
                    raise ConfigError(f"arm {key}'s folder {folder} is not empty: a benchmark starts from empty "
                                      "case banks, so give another --out or --data-dir")
        write_json(stored_path, asdict(self.settings))
        self.records = self._read_results()

    def _read_results(self) -> list[dict[str, Any]]:
        """The recorded runs; a last line cut off by a kill is dropped."""
        if not self.results_path.exists():
            return []
        data = self.results_path.read_bytes()
        records, good = [], 0
        for line in data.splitlines(keepends=True):
            try:
                records.append(json.loads(line))
            except (json.JSONDecodeError, UnicodeDecodeError):
                break
            if not line.endswith(b"\n"):
                records.pop()
                break
            good += len(line)
        if good < len(data):
            with self.results_path.open("r+b") as handle:
                handle.truncate(good)
        return records

    def _append(self, record: dict[str, Any]) -> None:
        with self.results_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.records.append(record)

    def pending(self) -> list[tuple[int, BenchTask, Arm]]:
        done = {(r["arm"], r["iteration"], r["task_id"]) for r in self.records}
        return [(it, task, arm) for it in range(1, self.settings.iterations + 1) for task in self.tasks
                for arm in self.arms if (arm.key, it, task.id) not in done]

    # -- running -------------------------------------------------------------------------
    def run(self, progress_out: TextIO | None = sys.stderr,
            on_record: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        from langgraph.checkpoint.sqlite import SqliteSaver
        from tqdm import tqdm

        from memento.graph.builder import build_graph

        todo = self.pending()
        total = len(self.arms) * self.settings.iterations * len(self.tasks)
        started = time.perf_counter()
        executed = 0
        with ExitStack() as stack:
            graphs = {}
            for arm in self.arms:
                folder = self.contexts[arm.key].resolved_data_dir()
                folder.mkdir(parents=True, exist_ok=True)
                saver = stack.enter_context(SqliteSaver.from_conn_string(str(folder / "checkpoints.sqlite")))
                graphs[arm.key] = build_graph(saver)
            bar = stack.enter_context(tqdm(total=total, initial=total - len(todo), unit="run", file=progress_out,
                                           disable=progress_out is None, dynamic_ncols=True, desc="bench"))
            for iteration, task, arm in todo:
                record = self.run_one(graphs[arm.key], arm, iteration, task)
                self._append(record)
                executed += 1
                if on_record:
                    on_record(record)
                bar.set_postfix_str(self._running_accuracy(iteration), refresh=False)
                bar.update(1)
        wall = time.perf_counter() - started
        return {"executed": executed, "wall_s": round(wall, 2),
                "tasks_per_minute": round(60 * executed / wall, 1) if executed and wall > 0 else None}

    def _running_accuracy(self, iteration: int) -> str:
        parts = []
        for arm in self.arms:
            got = [r["exact_match"] for r in self.records if r["arm"] == arm.key and r["iteration"] == iteration]
            if got:
                parts.append(f"{arm.key} {sum(got) / len(got):.2f}")
        return f"it {iteration}: " + "  ".join(parts)

    def graph_input(self, task: BenchTask) -> dict[str, Any]:
        truth = task.ground_truth if self.settings.reward == "truth" else None
        return {"task": task.question, "files": task.files, "ground_truth": truth}

    def run_one(self, graph: Any, arm: Arm, iteration: int, task: BenchTask) -> dict[str, Any]:
        ctx = self.contexts[arm.key]
        thread_id = f"bench-{arm.key}-it{iteration}-{task.id}"
        config = {"configurable": {"thread_id": thread_id}}
        t0 = time.perf_counter()
        snapshot = graph.get_state(config)
        resumed = snapshot.created_at is not None
        if not resumed:
            graph.invoke(self.graph_input(task), config, context=ctx, durability="sync")
        elif not _finished(snapshot.values):
            graph.invoke(None, config, context=ctx, durability="sync")  # cut off by a kill: finish it
        values = graph.get_state(config).values
        wall = time.perf_counter() - t0
        answer = values.get("final_answer") or ""
        em, f1 = best(answer, task.answers)
        score = values.get("score") or {}
        judged = str(score.get("scored_by", "")).startswith("judge")
        error = values.get("error") or (None if _finished(values) else "the run did not finish")
        return {
            "arm": arm.key, "mode": arm.mode, "k": arm.k, "iteration": iteration, "task_id": task.id,
            "answer": answer, "answers": task.answers, "exact_match": em, "f1": round(f1, 4),
            "reward": values.get("reward"), "scored_by": score.get("scored_by"),
            "judge_correct": (values.get("reward") == 1.0) if judged else None,
            "cycles": len(values.get("plans") or []), "plan": (values.get("plans") or [[]])[-1],
            "cases_used": [{"id": c["id"], "reward": c["reward"], "similarity": c.get("similarity"), "q": c.get("q")}
                           for c in values.get("cases_used") or []],
            "case_id": values.get("case_id"), "error": error, "wall_s": round(wall, 3), "resumed": resumed,
            "thread_id": thread_id, "metadata": task.metadata,
        }


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def settings_digest(base: Context) -> str:
    """A digest of the run settings an arm starts from (secrets redacted; the data folder left
    out, since each arm has its own)."""
    from memento.mcp_servers.client import redact_secrets

    settings = base.to_dict() | {"data_dir": "", "mcp_servers": redact_secrets(base.mcp_servers)}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def settings_for(tasks_path: str | Path, iterations: int, arms: list[str], ks: list[int], reward: str,
                 data_dir: str | Path, base: Context) -> BenchSettings:
    tasks_path = Path(tasks_path).expanduser().absolute()
    return BenchSettings(tasks=str(tasks_path), tasks_sha256=file_digest(tasks_path), iterations=iterations,
                         arms=list(arms), k=list(ks), reward=reward, data_dir=str(Path(data_dir).expanduser().absolute()),
                         settings_sha256=settings_digest(base))
