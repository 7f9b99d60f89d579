"""`memento bench run`: every task through the real graph, once per iteration, in each arm.

An arm is a retrieval mode (`none`, `similarity`, `utility`, `parametric`) at one K (cases shown
to the planner). Each arm has a data folder of its own (case bank, Q-retriever, checkpoints), empty
at the start and growing across iterations: the paper's continual-learning protocol. `none`
retrieves nothing but still writes its cases, so the arms differ only in retrieval.

With a test file, each training iteration is followed by a test pass per arm: the arm's bank and
retriever are copied (frozen), and every test task runs once against the copy, which writes and
learns nothing; the original is untouched. With `cross`, after the last iteration every retrieval
mode runs the test tasks on every arm's frozen bank, so which bank and how it is read can be told
apart.

One process, one encoder and one set of MCP tool sessions serve the whole benchmark. Each run is
a thread of its arm's SQLite checkpointer, named by (phase, arm, iteration, task): started again
after a kill, the benchmark skips what `results.jsonl` already holds, finishes a run that was cut
off from its checkpoint (the case id is fixed in its first step, so its case is written once), and
starts the rest. Nothing is run twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

from memento.bench.tasks import BenchTask, file_digest
from memento.graph.context import ConfigError, Context
from memento.memory.scoring import exact_match, token_f1

ARMS = ("none", "similarity", "utility", "parametric")
CROSS_MODES = ("similarity", "utility", "parametric")  # `none` reads no bank: it would be one column of equals
RESULTS = "results.jsonl"
SETTINGS = "bench.json"
SUMMARY = "summary.json"
FROZEN_MARKER = "frozen.json"


@dataclass(frozen=True)
class Arm:
    mode: str
    k: int
    key: str

    def folder(self, data_dir: Path) -> Path:
        return data_dir / self.key.replace("@", "-k")

    def context(self, base: Context, data_dir: Path) -> Context:
        # A benchmark runs unattended: a config's approval points are off for it.
        return base.replace(data_dir=str(self.folder(data_dir)), write_cases=True, retrieval_mode=self.mode,
                            top_k=self.k if self.mode != "none" else 0, approval={})


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


@dataclass(frozen=True)
class Job:
    """One run: a task, in a phase (train, test or cross), against an arm's bank, read by a mode."""

    phase: str
    arm: Arm
    iteration: int
    task: BenchTask
    mode: str

    @property
    def key(self) -> tuple[str, str, int, str, str]:
        return self.phase, self.arm.key, self.iteration, self.task.id, self.mode

    @property
    def thread_id(self) -> str:
        if self.phase == "train":
            return f"bench-{self.arm.key}-it{self.iteration}-{self.task.id}"
        if self.phase == "test":
            return f"bench-{self.arm.key}-test-it{self.iteration}-{self.task.id}"
        return f"bench-{self.arm.key}-cross-{self.mode}-it{self.iteration}-{self.task.id}"


def record_key(record: dict[str, Any]) -> tuple[str, str, int, str, str]:
    return record.get("phase", "train"), record["arm"], record["iteration"], record["task_id"], record["mode"]


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
    test: str = ""
    test_sha256: str = ""
    cross: bool = False

    def same_benchmark(self, other: "BenchSettings") -> list[str]:
        """The settings that differ from a stored benchmark's (the iterations may change, and the
        cross table may be asked for later)."""
        differ = [name for name in ("tasks_sha256", "reward", "data_dir", "test_sha256")
                  if getattr(self, name) != getattr(other, name)]
        differ += [name for name in ("arms", "k") if sorted(getattr(self, name)) != sorted(getattr(other, name))]
        if self.settings_sha256 != other.settings_sha256:
            differ.append("settings (--config, models)")
        return [{"test_sha256": "test tasks", "tasks_sha256": "tasks"}.get(name, name) for name in differ]


def best(answer: str, answers: list[str]) -> tuple[float, float]:
    """Exact match after normalisation and token F1, each the best over the accepted answers."""
    return max(exact_match(answer, a) for a in answers), max(token_f1(answer, a) for a in answers)


def warm_up(contexts: list[Context]) -> float:
    """What every run needs once per process, done before the clock starts: the encoder loaded
    and the tool servers' sessions opened (they stay in the pool). Returns the seconds it took."""
    from memento.mcp_servers.client import Toolbox
    from memento.memory.resources import shared_encoder
    from memento.nodes.execute_subtask import run_workspace

    started = time.perf_counter()
    for encoder in dict.fromkeys((ctx.encoder, ctx.encoder_device) for ctx in contexts):
        shared_encoder(*encoder).encode(["memento warm-up"])
    for ctx in contexts:
        Toolbox(ctx.mcp_servers, workspace=str(run_workspace(ctx, "warm-up"))).open().close()
    return time.perf_counter() - started


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a results file (one JSON object a line); a last line cut off by a kill is
    dropped, and the file cut back to the whole lines."""
    if not path.exists():
        return []
    data = path.read_bytes()
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
        with path.open("r+b") as handle:
            handle.truncate(good)
    return records


def append_record(path: Path, record: dict[str, Any]) -> None:
    """One line, on disk before this returns."""
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _finished(values: dict[str, Any]) -> bool:
    return bool(values.get("case_written")) or values.get("error") is not None


class Benchmark:
    """Runs jobs (train, test and cross runs) through the graph and records one line per run."""

    def __init__(self, tasks: list[BenchTask], settings: BenchSettings, base: Context, out: Path,
                 test_tasks: list[BenchTask] | None = None) -> None:
        if settings.reward not in ("truth", "judge"):
            raise ConfigError(f"--reward must be truth or judge, got {settings.reward!r}")
        if settings.iterations < 1:
            raise ConfigError(f"--iterations must be at least 1, got {settings.iterations}")
        if settings.cross and not test_tasks:
            raise ConfigError("--cross runs the test tasks on every arm's bank: give them with --test")
        clash = {t.question for t in test_tasks or []} & {t.question for t in tasks}
        if clash:
            raise ConfigError(f"{len(clash)} test task(s) repeat a training task's question word for word (e.g. "
                              f"{sorted(clash)[0][:80]!r}): a test task must be new to the agent")
        self.tasks = tasks
        self.test_tasks = test_tasks or []
        self.settings = settings
        self.arms = make_arms(settings.arms, settings.k)
        self.base = base
        self.out = out
        self.data_dir = Path(settings.data_dir)
        self.contexts = {arm.key: arm.context(base, self.data_dir) for arm in self.arms}
        self.results_path = out / RESULTS
        self.records: list[dict[str, Any]] = []
        self._prefix: str | None = None

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
                                  "same task files and options, or give another --out")
        else:
            for key, ctx in self.contexts.items():
                folder = ctx.resolved_data_dir()
                if folder.exists() and any(folder.iterdir()):
                    raise ConfigError(f"arm {key}'s folder {folder} is not empty: a benchmark starts from empty "
                                      "case banks, so give another --out or --data-dir")
            frozen = self.data_dir / "frozen"
            if frozen.exists() and any(frozen.iterdir()):
                raise ConfigError(f"{frozen} holds another benchmark's frozen banks: give another --out or --data-dir")
        write_json(stored_path, asdict(self.settings))
        self.records = self._read_results()
        self.thread_prefix()

    def _read_results(self) -> list[dict[str, Any]]:
        return read_records(self.results_path)

    def _append(self, record: dict[str, Any]) -> None:
        append_record(self.results_path, record)
        self.records.append(record)

    def jobs(self) -> list[Job]:
        """Every run of the benchmark, in order: each iteration's training runs (tasks in file
        order, arms interleaved), then its test pass arm by arm; after the last, the cross table."""
        out: list[Job] = []
        last = self.settings.iterations
        for it in range(1, last + 1):
            out += [Job("train", arm, it, task, arm.mode) for task in self.tasks for arm in self.arms]
            out += [Job("test", arm, it, task, arm.mode) for arm in self.arms for task in self.test_tasks]
        if self.settings.cross:
            out += [Job("cross", arm, last, task, mode) for arm in self.arms for mode in CROSS_MODES
                    for task in self.test_tasks]
        return out

    def pending(self) -> list[Job]:
        done = {record_key(r) for r in self.records}
        return [job for job in self.jobs() if job.key not in done]

    # -- frozen copies -------------------------------------------------------------------
    def frozen_folder(self, arm: Arm, iteration: int) -> Path:
        return self.data_dir / "frozen" / f"{arm.folder(Path()).name}-it{iteration}"

    def freeze(self, arm: Arm, iteration: int) -> Path:
        """The arm's bank and retriever as they are now, copied once per iteration (a copy cut off
        by a kill is made again); runs against the copy write and learn nothing."""
        from memento.memory.resources import case_bank_for

        folder = self.frozen_folder(arm, iteration)
        marker = folder / FROZEN_MARKER
        if marker.exists():
            return folder
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        source = self.contexts[arm.key]
        copy = source.replace(data_dir=str(folder))
        bank = case_bank_for(source).copy_to(copy.case_bank_location())
        retriever = source.retriever_checkpoint()
        if retriever.exists():  # saved (atomically) after every update: the file is the learner's state
            shutil.copyfile(retriever, copy.retriever_checkpoint())
        write_json(marker, {"arm": arm.key, "iteration": iteration, "cases": bank.count(),
                            "retriever": retriever.exists()})
        return folder

    def job_context(self, job: Job) -> Context:
        ctx = self.contexts[job.arm.key]
        if job.phase == "train":
            return ctx
        # A frozen copy, read greedily (exploration is for learning, and nothing is learned here),
        # at the arm's K; `none`'s bank, read in the cross table, at the largest K of the benchmark.
        k = job.arm.k if job.arm.mode != "none" else max(self.settings.k)
        return ctx.replace(data_dir=str(self.freeze(job.arm, job.iteration)), write_cases=False,
                           online_learning=False, retrieval_temperature=0.0, retrieval_mode=job.mode,
                           top_k=k if job.mode != "none" else 0)

    def _release(self, job: Job) -> None:
        """After the last run against a frozen copy: its retriever and tool servers are let go."""
        from memento.mcp_servers.client import SESSIONS
        from memento.memory.resources import forget_retriever

        ctx = self.job_context(job)
        forget_retriever(ctx)
        SESSIONS.close_unused(str(ctx.resolved_data_dir()))

    # -- running -------------------------------------------------------------------------
    def warm_up(self) -> float:
        """Load the encoder and open every arm's tool sessions before the clock starts; seconds."""
        return warm_up(list(self.contexts.values()))

    def run(self, progress_out: TextIO | None = sys.stderr,
            on_record: Callable[[dict[str, Any]], None] | None = None, concurrency: int = 1) -> dict[str, Any]:
        from tqdm import tqdm

        from memento.graph.builder import build_graph
        from memento.graph.persistence import open_checkpointer

        todo = self.pending()
        total = len(self.jobs())
        started = time.perf_counter()
        warmup = self.warm_up() if todo else 0.0
        steady_from = time.perf_counter()
        executed = 0
        with ExitStack() as stack:
            graphs = {}
            for arm in self.arms:
                ctx = self.contexts[arm.key]
                ctx.resolved_data_dir().mkdir(parents=True, exist_ok=True)
                saver = stack.enter_context(open_checkpointer(ctx.checkpointer_target()))
                graphs[arm.key] = build_graph(saver)
            bar = stack.enter_context(tqdm(total=total, initial=total - len(todo), unit="run", file=progress_out,
                                           disable=progress_out is None, dynamic_ncols=True, desc="bench"))

            def record(job: Job, result: dict[str, Any]) -> None:
                nonlocal executed
                self._append(result)
                executed += 1
                if on_record:
                    on_record(result)
                bar.set_postfix_str(self._running_accuracy(job), refresh=False)
                bar.update(1)

            if concurrency == 1:
                for n, job in enumerate(todo):
                    record(job, self.run_one(graphs[job.arm.key], job))
                    following = todo[n + 1] if n + 1 < len(todo) else None
                    if job.phase != "train" and (following is None or (following.arm, following.iteration,
                                                                        following.phase) != (job.arm, job.iteration,
                                                                                              job.phase)):
                        self._release(job)
            else:
                self._run_waves(todo, graphs, record, concurrency)
        wall = time.perf_counter() - started
        steady = time.perf_counter() - steady_from
        return {"executed": executed, "wall_s": round(wall, 2), "warmup_s": round(warmup, 2),
                "steady_s": round(steady, 2), "concurrency": concurrency,
                "tasks_per_minute": round(60 * executed / steady, 1) if executed and steady > 0 else None,
                "tasks_per_minute_with_warmup": round(60 * executed / wall, 1) if executed and wall > 0 else None}

    def _run_waves(self, todo: list[Job], graphs: dict[str, Any], record: Callable[[Job, dict[str, Any]], None],
                   concurrency: int) -> None:
        """The jobs in waves of one phase of one iteration (a wave waits for the one before: an
        iteration's test pass reads the bank as its training left it), each arm running up to
        `concurrency` of its jobs at once, in order."""
        from memento.bench.pool import run_lanes

        waves: list[list[Job]] = []
        for job in todo:
            if waves and (waves[-1][0].phase, waves[-1][0].iteration) == (job.phase, job.iteration):
                waves[-1].append(job)
            else:
                waves.append([job])
        for wave in waves:
            if wave[0].phase != "train":
                for arm in dict.fromkeys(job.arm for job in wave):
                    self.freeze(arm, wave[0].iteration)  # once, before the threads read the copy
            run_lanes(wave, lambda job: (job.arm.key, job.mode), lambda job: self.run_one(graphs[job.arm.key], job),
                      record, concurrency)
            if wave[0].phase != "train":
                for job in {(job.arm.key, job.mode): job for job in wave}.values():
                    self._release(job)

    def _running_accuracy(self, job: Job) -> str:
        parts = []
        for arm in self.arms:
            got = [r["exact_match"] for r in self.records if r["arm"] == arm.key and r["iteration"] == job.iteration
                   and r.get("phase", "train") == job.phase and (job.phase != "cross" or r["mode"] == job.mode)]
            if got:
                parts.append(f"{arm.key} {sum(got) / len(got):.2f}")
        return f"{job.phase} it {job.iteration}: " + "  ".join(parts)

    def graph_input(self, task: BenchTask) -> dict[str, Any]:
        truth = task.ground_truth if self.settings.reward == "truth" else None
        return {"task": task.question, "files": task.files, "ground_truth": truth}

    def thread_prefix(self) -> str:
        """"" when each arm checkpoints in its own folder; with a shared checkpointer (a Postgres
        URL, or one SQLite file), this benchmark's own id, kept in --out, so that two benchmarks
        on one database never take each other's threads for their own. Made once, in `prepare`
        (before any thread runs), and written atomically."""
        if not self.base.checkpointer:
            return ""
        if self._prefix is None:
            path = self.out / "bench-id"
            if not path.exists():
                import uuid

                write_json(path, {"id": uuid.uuid4().hex[:12]})
            self._prefix = json.loads(path.read_text(encoding="utf-8"))["id"] + "-"
        return self._prefix

    def run_one(self, graph: Any, job: Job) -> dict[str, Any]:
        ctx = self.job_context(job)
        task = job.task
        thread_id = self.thread_prefix() + job.thread_id
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
            "phase": job.phase, "arm": job.arm.key, "mode": job.mode, "k": ctx.top_k, "iteration": job.iteration,
            "task_id": task.id, "answer": answer, "answers": task.answers, "exact_match": em, "f1": round(f1, 4),
            "reward": values.get("reward"), "scored_by": score.get("scored_by"),
            "judge_correct": (values.get("reward") == 1.0) if judged else None,
            "cycles": len(values.get("plans") or []), "plan": (values.get("plans") or [[]])[-1],
            "cases_used": [{"id": c["id"], "reward": c["reward"], "similarity": c.get("similarity"), "q": c.get("q"),
                            "utility": c.get("utility")} for c in values.get("cases_used") or []],
            "cited": values.get("cited_cases") or [], "ranking": values.get("ranking"),
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

    # Where runs are checkpointed is not a setting of the runs (and a Postgres URL may hold a password).
    settings = base.to_dict() | {"data_dir": "", "checkpointer": "", "mcp_servers": redact_secrets(base.mcp_servers)}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def settings_for(tasks_path: str | Path, iterations: int, arms: list[str], ks: list[int], reward: str,
                 data_dir: str | Path, base: Context, test_path: str | Path | None = None,
                 cross: bool = False) -> BenchSettings:
    tasks_path = Path(tasks_path).expanduser().absolute()
    test = Path(test_path).expanduser().absolute() if test_path else None
    return BenchSettings(tasks=str(tasks_path), tasks_sha256=file_digest(tasks_path), iterations=iterations,
                         arms=list(arms), k=list(ks), reward=reward, data_dir=str(Path(data_dir).expanduser().absolute()),
                         settings_sha256=settings_digest(base), test=str(test or ""),
                         test_sha256=file_digest(test) if test else "", cross=cross)
