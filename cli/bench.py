"""`memento bench run` and `memento bench make-world`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from memento.graph.context import ConfigError, load_context

MAX_CONCURRENCY = 256


def add_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    bench = commands.add_parser("bench", help="measure learning: run task suites, make offline worlds",
                                description="Measure whether the agent learns from its case bank.")
    actions = bench.add_subparsers(dest="bench_command", required=True, metavar="ACTION")
    run = actions.add_parser(
        "run", parents=[common], help="run a task suite in several arms, over several iterations",
        description="Run every task through the real graph once per iteration in each arm (retrieval mode "
                    "and K), each arm with its own case bank and retriever, empty at the start. Writes "
                    "results.jsonl, summary.json and PNG plots to --out; started again with the same --out, it "
                    "continues where it stopped.")
    run.add_argument("--tasks", required=True, metavar="FILE.jsonl", help="the training task file (see the README)")
    run.add_argument("--test", metavar="FILE.jsonl",
                     help="held-out test tasks: after each iteration every arm runs them once against a frozen copy "
                          "of its bank and retriever (nothing written, nothing learned): transfer, not replay")
    run.add_argument("--cross", action="store_true",
                     help="after the last iteration, run the test tasks on every arm's frozen bank with every "
                          "retrieval mode (needs --test): tells which bank from how it is read")
    run.add_argument("--iterations", type=int, default=3, metavar="N", help="passes over the tasks (default 3)")
    run.add_argument("--arms", default="none,similarity,utility,parametric", metavar="A,B",
                     help="retrieval modes to compare: none, similarity, utility, parametric (default: all four)")
    run.add_argument("--k", default="4", metavar="K[,K...]", help="cases shown to the planner; several for a sweep")
    run.add_argument("--reward", choices=["truth", "judge"], default="truth",
                     help="truth: the graph scores against the answers (default); judge: the judge model "
                          "decides the reward, as with unlabelled tasks (answers still give the accuracy)")
    run.add_argument("--out", required=True, metavar="DIR", help="folder for results, summary and plots")
    run.add_argument("--concurrency", type=int, default=1, metavar="N",
                     help="run up to N tasks of an iteration at once in each arm (default 1: one at a time); a task "
                          "sees the cases of the tasks that finished before it started")
    run.add_argument("--files-root", action="append", default=[], metavar="DIR",
                     help="a folder whose files the tasks' `files` may name, besides the task file's own folder "
                          "(repeatable; files are reached without following links)")
    run.add_argument("--json", action="store_true", help="print the summary as JSON (progress goes to stderr)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    for role in ("planner", "executor", "judge"):
        run.add_argument(f"--{role}-model", metavar="PROVIDER:MODEL", help=f"{role} model (default: the config's)")
        run.add_argument(f"--{role}-base-url", metavar="URL", help=f"OpenAI-compatible endpoint for the {role}")
    world = actions.add_parser(
        "make-world", help="write an offline task suite where memory must matter",
        description="Write a task suite (JSONL, and the files its tasks attach, in FILE_files/ beside it) "
                    "that the simulated model can play: families of tasks, each with one right procedure "
                    "among several plausible ones. Answers come from running the real tools.")
    world.add_argument("--seed", type=int, required=True, help="the same seed writes the same suite")
    world.add_argument("--families", type=int, default=9, help="task families (default 9)")
    world.add_argument("--tasks", type=int, default=16,
                       help="tasks per family, training and test together (default 16)")
    world.add_argument("--choices", type=int, default=5, help="plausible procedures per family (2 to 5, default 5)")
    world.add_argument("--misleading", action="store_true",
                       help="families in look-alike groups told apart by one cue word")
    world.add_argument("--group-size", type=int, default=3, metavar="G",
                       help="families per look-alike group with --misleading (2 to --choices, default 3)")
    world.add_argument("--out", required=True, metavar="FILE.jsonl", help="the (training) task file to write")
    world.add_argument("--test-out", metavar="FILE.jsonl",
                       help="also write a test file: other tasks of the same families, with new data and months or "
                            "quarters the family's training tasks never name")
    world.add_argument("--test-tasks", type=int, metavar="N",
                       help="tasks per family that go to the test file (default: half of --tasks)")
    world.add_argument("--cue-wordings", type=int, default=1, metavar="N",
                       help="say each family's cue N ways (synonyms such as retail / in-store / shop-floor), one "
                            "drawn per task (1 to 5; default 1: one cue word)")
    world.add_argument("--noise", type=int, default=0, metavar="N",
                       help="give each task 0 to N irrelevant fragments (who asked, for what, by when) before or "
                            "after its question (0 to 4; default 0)")
    world.add_argument("--reorder", action="store_true",
                       help="word questions from more templates, with the cue at the start, in the middle or at the end")
    world.add_argument("--shared-words", action="store_true",
                       help="pair off the look-alike groups and give each pair shared words (a document qualifier "
                            "and a project name), so word overlap alone misleads")
    world.add_argument("--json", action="store_true", help="print the report as JSON")


def _ks(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--k {text!r}: give whole numbers separated by commas, e.g. 4 or 0,1,2,4,8") from None


def cmd_bench(args: argparse.Namespace) -> int:
    if args.bench_command == "make-world":
        return _make_world(args)
    return _run(args)


def _make_world(args: argparse.Namespace) -> int:
    from memento.bench.world import WorldError, make_world

    try:
        report = make_world(args.seed, args.out, families=args.families, tasks=args.tasks, choices=args.choices,
                            misleading=args.misleading, group_size=args.group_size, test_out=args.test_out,
                            test_tasks=args.test_tasks, cue_wordings=args.cue_wordings, noise=args.noise,
                            reorder=args.reorder, shared_words=args.shared_words)
    except WorldError as exc:
        raise ConfigError(str(exc)) from None
    if args.json:
        print(json.dumps(report))
    else:
        kind = f"misleading, look-alike groups of {report['group_size']}" if report["misleading"] else "plain"
        print(f"wrote {report['tasks']} tasks in {report['families']} families ({kind}, {report['choices']} plausible "
              f"procedures each, seed {report['seed']}) to {report['out']}; files in {report['files']}")
        if "test_out" in report:
            print(f"wrote {report['test_tasks']} test tasks of the same families to {report['test_out']}; files in "
                  f"{report['test_files']}")
        if "wording" in report:
            print("wording: " + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in report["wording"].items()))
    return 0


def _run(args: argparse.Namespace) -> int:
    from memento.bench.harness import Benchmark, settings_for
    from memento.bench.report import plot, summarise, table
    from memento.bench.tasks import load_tasks

    if args.iterations < 1:
        raise ConfigError(f"--iterations must be at least 1, got {args.iterations}")
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        raise ConfigError(f"--concurrency must be between 1 and {MAX_CONCURRENCY}, got {args.concurrency}")
    # Every line checked before anything runs; files only from the task file's folder or a --files-root.
    tasks = load_tasks(args.tasks, files_roots=args.files_root)
    test_tasks = load_tasks(args.test, files_roots=args.files_root) if args.test else None
    if args.cross and not args.test:
        raise ConfigError("--cross runs the test tasks on every arm's bank: give them with --test FILE.jsonl")
    overrides: dict[str, Any] = {}
    for role in ("planner", "executor", "judge"):
        overrides[f"{role}_model"] = getattr(args, f"{role}_model")
        overrides[f"{role}_base_url"] = getattr(args, f"{role}_base_url")
    from memento.cli.main import _overrides

    overrides["checkpointer"] = _overrides(args)["checkpointer"]  # the flag, then MEMENTO_CHECKPOINTER
    base = load_context(args.config, **overrides)
    from memento.llm.factory import check_model_settings

    check_model_settings(base)
    out = Path(args.out).expanduser().absolute()
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else out / "arms"
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    settings = settings_for(args.tasks, args.iterations, arms, _ks(args.k), args.reward, data_dir, base,
                            test_path=args.test, cross=args.cross)
    bench = Benchmark(tasks, settings, base, out, test_tasks=test_tasks)
    bench.prepare()
    already = len(bench.records)
    progress = None if args.quiet else sys.stderr
    if already and progress:
        print(f"[bench] resuming {out}: {already} run(s) already recorded", file=progress, flush=True)
    stats = bench.run(progress_out=progress, concurrency=args.concurrency)
    if not stats["executed"]:  # nothing left to run: the figures of the run that did the work stand
        from memento.bench.harness import SUMMARY

        try:
            stats = json.loads((out / SUMMARY).read_text(encoding="utf-8")).get("run") or stats
        except (OSError, ValueError):
            pass
    summary = summarise(bench.records, [arm.key for arm in bench.arms], args.iterations, len(tasks), stats,
                        test_tasks=len(test_tasks or []))
    summary["out"] = str(out)
    summary["plots"] = [str(p) for p in plot(summary, out)]
    from memento.bench.harness import SUMMARY, write_json

    write_json(out / SUMMARY, summary)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        print(table(summary))
        print(f"results: {out / 'results.jsonl'}\nsummary: {out / SUMMARY}\nplots:   {', '.join(summary['plots'])}")
    return 0
