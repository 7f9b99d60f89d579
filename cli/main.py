"""`memento`: run, resume and demo the agent, and curate its case bank."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Any, NoReturn

from memento.graph.context import ConfigError, Context, load_context
from memento.graph.errors import InputError, RunError
from memento.graph.persistence import CHECKPOINTER_VARIABLE

EXIT_RUN_ERROR = 1
EXIT_CONFIG = 2
EXIT_WAITING = 3  # the run stopped at an approval point: answer with `memento resume`
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C)
EXIT_TERMINATED = 143  # SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the run is checkpointed and `memento resume` continues it."""


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="TOML settings file (see configs/default.toml)")
    common.add_argument("--data-dir", metavar="DIR",
                        help="folder of the case bank and checkpoints (default: the per-user data folder)")
    common.add_argument("--checkpointer", metavar="URL_OR_PATH",
                        help="where runs are checkpointed: a SQLite file (default DATA_DIR/checkpoints.sqlite) or a "
                             "postgresql:// URL (default: $MEMENTO_CHECKPOINTER)")
    return common


def _model_options(parser: argparse.ArgumentParser) -> None:
    for role in ("planner", "executor", "judge"):
        parser.add_argument(f"--{role}-model", metavar="PROVIDER:MODEL",
                            help=f"{role} model, e.g. openai:gpt-4o-mini or simulated")
        parser.add_argument(f"--{role}-base-url", metavar="URL", help=f"OpenAI-compatible endpoint for the {role}")
    methods = ["auto", "function_calling", "tool_required", "json_schema", "json_mode", "text"]
    for role in ("planner", "judge"):
        parser.add_argument(f"--{role}-output-method", choices=methods, metavar="METHOD",
                            help=f"how the {role} returns structured replies: {', '.join(methods)} (default auto)")
    parser.add_argument("--executor-tool-protocol", choices=["auto", "native", "text"],
                        help="native tool calls, text (a JSON tool call in the reply) or auto (default)")
    parser.add_argument("--request-timeout", type=float, metavar="S", help="seconds per attempt of a model request")
    parser.add_argument("--max-cycles", type=int, metavar="N", help="planning cycles before the planner must answer")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error under `--json` is one JSON object on stdout too (exit 2)."""

    json_wanted = False

    def error(self, message: str) -> NoReturn:
        if _Parser.json_wanted:
            print(json.dumps({"status": "error", "error": f"{self.prog}: {message}", "exit": EXIT_CONFIG}))
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(prog="memento", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", parents=[common], help="run a task", description="Run a task to its end, "
                              "streaming progress (node, subtask, tool), then print the final answer.")
    run.add_argument("task", nargs="?", help="the task, in words (or --tasks FILE.jsonl)")
    run.add_argument("--tasks", metavar="FILE.jsonl",
                     help="run every task of a file (id, question, optional answer, files), one result line each "
                          "in --out; the same command continues where it stopped")
    run.add_argument("--out", metavar="RESULTS.jsonl", help="with --tasks: where the result lines go")
    run.add_argument("--concurrency", type=int, default=1, metavar="N",
                     help="with --tasks: run up to N tasks at once through one graph (default 1)")
    run.add_argument("--files-root", action="append", default=[], metavar="DIR",
                     help="with --tasks: a folder whose files the tasks' `files` may name, besides the task file's own "
                          "folder (repeatable; files are reached without following links)")
    run.add_argument("--file", action="append", default=[], metavar="PATH", help="attach a file (repeatable)")
    run.add_argument("--ground-truth", metavar="TEXT", help="expected answer; scores the run without the judge")
    run.add_argument("--thread-id", metavar="ID", help="thread id for the run's checkpoints (default: a new one)")
    run.add_argument("--json", action="store_true", help="print the outcome as JSON (progress goes to stderr)")
    run.add_argument("--keep-workspace", action="store_true",
                     help="keep the run's code workspace when it ends (printed at the end)")
    run.add_argument("--approve-plan", action="store_true", help="ask for approval of the first plan")
    run.add_argument("--approve-replans", action="store_true", help="ask for approval of each new plan")
    run.add_argument("--approve-case", action="store_true", help="ask for approval of the case before it is stored")
    run.add_argument("--approve-tool", action="append", default=[], metavar="PATTERN",
                     help="ask for approval of calls of this tool (a name or glob pattern; repeatable)")
    run.add_argument("--interactive", action="store_true",
                     help="answer approvals at the terminal instead of exiting with status 3")
    _model_options(run)

    resume = commands.add_parser("resume", parents=[common], help="resume an interrupted run",
                                 description="Resume a run from its last checkpoint and finish it.")
    resume.add_argument("thread_id", metavar="THREAD_ID", help="the thread id the run printed")
    resume.add_argument("--json", action="store_true", help="print the outcome as JSON")
    answer = resume.add_mutually_exclusive_group()
    answer.add_argument("--approve", action="store_true", help="approve what the waiting run asks")
    answer.add_argument("--reject", metavar="WHY", help="reject it, saying why (the planner or executor sees it; "
                                                        "a rejected case is discarded)")
    answer.add_argument("--edit", metavar="FILE.json", help="answer with an edit: the new arguments, e.g. "
                                                            '{"subtasks": [...]} or {"reward": 0.5}, or {"decisions": [...]}')
    resume.add_argument("--interactive", action="store_true", help="answer approvals at the terminal")
    _model_options(resume)

    threads = commands.add_parser("threads", parents=[common], help="list runs and what waiting ones ask",
                                  description="List the threads in the data folder's checkpoints, most recent "
                                              "first: id, task, status (running, waiting, done, failed), age.")
    threads.add_argument("--waiting", action="store_true", help="only threads waiting for approval")
    threads.add_argument("--limit", type=int, metavar="N", help="show at most N threads")
    threads.add_argument("--json", action="store_true",
                         help='print one JSON object: {"threads": [...], "count", "waiting_only"} '
                              "(a waiting thread with its interrupt)")

    demo = commands.add_parser("demo", parents=[common], help="run the offline demo",
                               description="Run related tasks offline with the simulated model and show the "
                                           "case bank growing and being used. Uses a new temporary data "
                                           "folder unless --data-dir is given.")
    del demo  # no options beyond the common ones

    cases = commands.add_parser("cases", help="inspect and curate the case bank",
                                description="List, show and delete cases in the case bank.")
    case_commands = cases.add_subparsers(dest="cases_command", required=True, metavar="ACTION")
    listing = case_commands.add_parser("list", parents=[common], help="list cases, oldest first, with provenance")
    listing.add_argument("--limit", type=int, metavar="N", help="show at most N cases")
    _selection(listing, ids=False)
    listing.add_argument("--json", action="store_true", help="print JSON")
    show = case_commands.add_parser("show", parents=[common], help="show one case")
    show.add_argument("case_id", metavar="ID", help="case id, or a unique prefix of it")
    show.add_argument("--json", action="store_true", help="print JSON")
    for name, what in (("delete", "delete cases"),
                       ("quarantine", "keep cases but never retrieve them (undo with release)"),
                       ("release", "retrieve quarantined cases again"),
                       ("promote", "move cases into the shared scope, which callers the operator lists in "
                                   "shared_readers read")):
        action = case_commands.add_parser(name, parents=[common], help=what, description=what[0].upper() + what[1:] +
                                          ": by id, or every case of an author or a scope.")
        _selection(action, ids=True)
        if name == "promote":
            action.add_argument("--reviewer", metavar="NAME", default="operator",
                                help="who reviewed the cases (recorded; must not be their author)")
        action.add_argument("--json", action="store_true", help="print JSON")
    imports = case_commands.add_parser(
        "import", parents=[common], help="import cases from JSONL",
        description="Import cases from a JSONL file in the memento format or the original Memento "
                    "memory.jsonl format (case, plan, case_label). A bad line stops the import with its "
                    "line number and nothing of the file is imported.")
    imports.add_argument("file", metavar="FILE.jsonl", help="the file to import")
    imports.add_argument("--json", action="store_true", help="print JSON")
    export = case_commands.add_parser("export", parents=[common], help="export cases as JSONL",
                                      description="Write every case as one JSON line.")
    export.add_argument("--format", choices=["memento", "original"], default="memento",
                        help="memento (every field) or original (case, plan, case_label)")
    export.add_argument("--out", metavar="FILE", help="write here instead of standard output")

    retriever = commands.add_parser("retriever", help="train and evaluate the Q-retriever",
                                    description="Offline training and evaluation of the parametric retriever.")
    retriever_commands = retriever.add_subparsers(dest="retriever_command", required=True, metavar="ACTION")
    train = retriever_commands.add_parser(
        "train", parents=[common], help="train on (query, case, plan, truth_label) pairs",
        description="Train the Q-retriever on the original Memento training format, holding out a "
                    "validation split by query and stopping early on validation ROC-AUC. Saves to "
                    "retriever_path (default DATA_DIR/retriever.pt).")
    train.add_argument("--data", required=True, metavar="FILE.jsonl", help="training pairs")
    train.add_argument("--epochs", type=int, default=40, help="most epochs (default 40)")
    train.add_argument("--patience", type=int, default=5, help="epochs without improvement before stopping")
    train.add_argument("--val-fraction", type=float, default=0.2, help="share of queries held out (default 0.2)")
    train.add_argument("--json", action="store_true", help="print the report as JSON")
    evaluate = retriever_commands.add_parser("eval", parents=[common], help="evaluate on pairs",
                                             description="Print ROC-AUC, accuracy and F1 of the trained retriever.")
    evaluate.add_argument("--data", required=True, metavar="FILE.jsonl", help="evaluation pairs")
    evaluate.add_argument("--json", action="store_true", help="one JSON object: roc_auc, accuracy, f1, n")
    status = retriever_commands.add_parser(
        "status", parents=[common], help="the learner's version and transitions",
        description="The learning log's newest version of the Q-retriever, the transitions recorded and those "
                    "learned (in the checkpointer's PostgreSQL database, or DATA_DIR/learning.sqlite).")
    status.add_argument("--json", action="store_true",
                        help="one JSON object: version, transitions, learned, pending, runs, log")
    learn = retriever_commands.add_parser(
        "learn", parents=[common], help="train on every run recorded since the newest version, and publish",
        description="Take the learner's turn now: train the Q-retriever on the runs recorded since its newest "
                    "version and publish the next version (workers do this after each run; a dedicated learner "
                    "process can do it instead, with learn_after_run = false in the workers).")
    learn.add_argument("--json", action="store_true", help="one JSON object")
    unlearn = retriever_commands.add_parser(
        "unlearn", parents=[common], help="rebuild the learner and the utilities without one author",
        description="Remove an author's runs from the learning log, then train a new Q-retriever on every trusted "
                    "run left (leaving out transitions to the author's cases), publish it as the next version and "
                    "replay every case's utility the same way. The author's cases stay: quarantine or delete them "
                    "with `memento cases`.")
    unlearn.add_argument("--author", required=True, metavar="NAME", help="operator, or a caller's identity")
    unlearn.add_argument("--json", action="store_true", help="one JSON object")

    from memento.cli.bench import add_parsers

    add_parsers(commands, common)
    return parser


def _selection(parser: argparse.ArgumentParser, ids: bool) -> None:
    """Options that pick cases: ids, and/or all cases of an author or a scope."""
    if ids:
        parser.add_argument("case_ids", nargs="*", metavar="ID", help="case ids, or unique prefixes")
    parser.add_argument("--author", metavar="NAME", help="cases written by NAME (operator, or a caller's identity)")
    parser.add_argument("--scope", metavar="SCOPE", help="cases in SCOPE (shared, or caller:NAME)")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Settings given as options; None where the option was not given."""
    overrides: dict[str, Any] = {"data_dir": args.data_dir, "max_cycles": getattr(args, "max_cycles", None),
                                 "checkpointer": getattr(args, "checkpointer", None)
                                 or os.environ.get(CHECKPOINTER_VARIABLE) or None}  # flag, then environment
    if getattr(args, "keep_workspace", False):
        overrides["keep_workspaces"] = True
    for role in ("planner", "executor", "judge"):
        overrides[f"{role}_model"] = getattr(args, f"{role}_model", None)
        overrides[f"{role}_base_url"] = getattr(args, f"{role}_base_url", None)
    for name in ("planner_output_method", "judge_output_method", "executor_tool_protocol", "request_timeout"):
        overrides[name] = getattr(args, name, None)
    return overrides


def _context(args: argparse.Namespace) -> Context:
    ctx = load_context(args.config, **_overrides(args))
    flags = {key: True for key in ("plan", "replans", "case") if getattr(args, f"approve_{key}", False)}
    if flags or getattr(args, "approve_tool", None):
        policy = ctx.to_dict()["approval"]
        # Patterns given on the command line come first (the first match decides); a pattern the
        # config already limits keeps its limits.
        added = {pattern: policy["tools"].get(pattern, ["approve", "edit", "reject"]) for pattern in args.approve_tool}
        policy["tools"] = added | {k: v for k, v in policy["tools"].items() if k not in added}
        ctx = ctx.replace(approval={**policy, **flags})
    return ctx


def _answer_options(args: argparse.Namespace) -> list[str]:
    """The options a printed `memento resume` command needs to find this run again."""
    options = []
    if args.data_dir:
        options += ["--data-dir", args.data_dir]
    if args.config:
        options += ["--config", args.config]
    if getattr(args, "checkpointer", None):
        from memento.graph.persistence import redact_url

        options += ["--checkpointer", redact_url(args.checkpointer)]  # a password is given again, not printed
    return options


def _drive(ctx: Context, thread_id: str, graph_input: Any, args: argparse.Namespace) -> int:
    """Run until the thread ends; at an approval, ask at the terminal (--interactive) or say what
    is asked and how to answer, and exit with EXIT_WAITING."""
    from langgraph.types import Command

    from memento.cli.approval import ask_terminal, print_waiting
    from memento.cli.render import print_outcome
    from memento.cli.runner import progress_stream, stream_run

    out = progress_stream(args.json)
    while True:
        outcome = stream_run(ctx, thread_id, graph_input, out)
        if outcome.status != "waiting":
            print_outcome(outcome.state, thread_id, ctx, args.json)
            return EXIT_RUN_ERROR if outcome.status == "failed" else 0
        if args.interactive:
            try:
                graph_input = Command(resume=ask_terminal(outcome.request, ctx.max_subtasks, out=out))
                continue
            except EOFError:  # no one at the terminal after all: say what is asked, as without --interactive
                print(file=out)
        print_waiting(sys.stdout, thread_id, outcome.request, _answer_options(args), args.json)
        return EXIT_WAITING


def cmd_run(args: argparse.Namespace) -> int:
    from memento.llm.factory import check_model_settings
    from memento.nodes.retrieve_cases import unreadable_file

    ctx = _context(args)
    check_model_settings(ctx)
    if args.files_root and not args.tasks:
        raise ConfigError("--files-root names where a task file's files may be: give it with --tasks FILE.jsonl "
                          "(a --file is read as given)")
    if args.tasks:
        if args.task or args.file or args.ground_truth or args.thread_id:
            raise ConfigError("--tasks takes the tasks from its file: give no task, --file, --ground-truth or "
                              "--thread-id with it")
        from memento.cli.batch import run_task_file

        return run_task_file(ctx, args)
    if not args.task:
        raise ConfigError("give the task to run, in words, or a task file with --tasks FILE.jsonl")
    files = [os.path.abspath(os.path.expanduser(p)) for p in args.file]
    if problem := ctx.task_problem(args.task) or unreadable_file(files):
        raise ConfigError(problem)
    thread_id = args.thread_id = args.thread_id or str(uuid.uuid4())
    print(f"[memento] thread {thread_id}", file=sys.stderr if args.json else sys.stdout, flush=True)
    return _drive(ctx, thread_id, {"task": args.task, "files": files, "ground_truth": args.ground_truth}, args)


def cmd_resume(args: argparse.Namespace) -> int:
    from langgraph.types import Command

    from memento.cli.approval import print_waiting, response_from_options
    from memento.cli.render import print_outcome
    from memento.cli.runner import progress_stream, resume_context
    from memento.llm.factory import check_model_settings

    ctx, (snapshot, status) = resume_context(_context(args), args.thread_id, _overrides(args), args.config)
    check_model_settings(ctx)
    out = progress_stream(args.json)
    answered = args.approve or args.reject is not None or args.edit is not None
    if status == "waiting":
        request = snapshot.interrupts[0].value
        if answered:
            response = response_from_options(request, args.approve, args.reject, args.edit, ctx.max_subtasks)
            print(f"[memento] answering thread {args.thread_id} ({request.get('point')})", file=out, flush=True)
            return _drive(ctx, args.thread_id, Command(resume=response), args)
        if args.interactive:
            return _drive(ctx, args.thread_id, None, args)
        print(f"[memento] thread {args.thread_id} waits for approval", file=out, flush=True)
        print_waiting(sys.stdout, args.thread_id, request, _answer_options(args), args.json)
        return EXIT_WAITING
    if answered:
        raise ConfigError(f"thread {args.thread_id} is not waiting for approval (it is {status}): "
                          "resume it without --approve, --reject or --edit")
    if snapshot.tasks:
        where = ", ".join(dict.fromkeys(t.name for t in snapshot.tasks))
        print(f"[memento] resuming thread {args.thread_id} at {where}", file=out, flush=True)
        return _drive(ctx, args.thread_id, None, args)
    print(f"[memento] thread {args.thread_id} already finished", file=out, flush=True)
    print_outcome(dict(snapshot.values), args.thread_id, ctx, args.json)
    return EXIT_RUN_ERROR if status == "failed" else 0


def cmd_threads(args: argparse.Namespace) -> int:
    from memento.cli.render import thread_row
    from memento.cli.runner import list_threads

    rows = list_threads(_context(args), waiting_only=args.waiting, limit=args.limit)
    if args.json:
        print(json.dumps({"threads": rows, "count": len(rows), "waiting_only": bool(args.waiting)},
                         ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("no threads" + (" waiting for approval" if args.waiting else ""))
    for row in rows:
        print(thread_row(row))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from memento.cli.demo import run_demo

    return run_demo(load_context(args.config, checkpointer=_overrides(args)["checkpointer"]), args.data_dir)


def _find(bank: Any, prefix: str) -> Any:
    case = bank.get(prefix)
    if case is not None:
        return case
    matches = [c for c in bank.list() if c.id.startswith(prefix)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ConfigError(f"no case with id {prefix!r}: see memento cases list")
    raise ConfigError(f"case id prefix {prefix!r} matches {len(matches)} cases: give more characters")


def cmd_cases(args: argparse.Namespace) -> int:
    from memento.cli.render import case_row, case_text
    from memento.memory.resources import case_bank_for

    bank = case_bank_for(_context(args))
    if args.cases_command == "list":
        chosen = _selected_ids(bank, args) if args.author or args.scope else None
        cases = bank.list() if chosen is not None else bank.list(limit=args.limit)
        if chosen is not None:
            cases = [c for c in cases if c.id in chosen][:args.limit]
        if args.json:
            print(json.dumps({"cases": [c.model_dump() for c in cases], "count": len(cases),
                              "total": bank.count(), "location": str(bank.location)}, ensure_ascii=False, indent=2))
        else:
            print(f"{bank.count()} case(s) in {bank.location}")
            for case in cases:
                print(case_row(case))
        return 0
    if args.cases_command == "show":
        case = _find(bank, args.case_id)
        print(json.dumps(case.model_dump(), ensure_ascii=False, indent=2) if args.json else case_text(case))
        return 0
    if args.cases_command == "import":
        return _import_cases(bank, args, _context(args).max_task_chars)
    if args.cases_command == "export":
        return _export_cases(bank, args)
    return _curate(bank, args)


def _selected_ids(bank: Any, args: argparse.Namespace) -> set[str]:
    from memento.memory.provenance import author_name

    if args.author is not None and not args.author.strip():
        raise ConfigError("--author is empty: give operator or a caller's identity")
    return set(bank.select(author=author_name(args.author) if args.author else None, scope=args.scope))


def _curate(bank: Any, args: argparse.Namespace) -> int:
    """delete, quarantine, release or promote the cases the ids, --author and --scope pick (all of them
    must match when several are given)."""
    from memento.memory.provenance import OPERATOR, SHARED_SCOPE, author_name

    action = args.cases_command
    if not args.case_ids and not args.author and not args.scope:
        raise ConfigError(f"cases {action} needs case ids, --author or --scope: say which cases")
    ids = [_find(bank, prefix).id for prefix in args.case_ids]
    if args.author or args.scope:
        chosen = _selected_ids(bank, args)
        ids = [i for i in ids if i in chosen] if args.case_ids else sorted(chosen)
    if action == "delete":
        done = bank.delete(ids)
    elif action in ("quarantine", "release"):
        done = bank.set_provenance(ids, quarantined=action == "quarantine")
    else:
        reviewer = author_name(args.reviewer) if args.reviewer != OPERATOR else OPERATOR
        cases = [bank.get(i) for i in ids]
        own = [c.id for c in cases if c is not None and c.author == reviewer and c.author != OPERATOR]
        if own:
            raise ConfigError(f"{reviewer} wrote case {own[0]}: a case is promoted by someone other than its author "
                              "(give --reviewer)")
        done = bank.set_provenance(ids, scope=SHARED_SCOPE, promoted_by=reviewer)
    past = {"delete": "deleted", "quarantine": "quarantined", "release": "released", "promote": "promoted"}[action]
    print(json.dumps({past: done}) if args.json else "\n".join(f"{past} {i}" for i in done) or f"no cases {past}")
    return 0


def _import_cases(bank: Any, args: argparse.Namespace, max_task_chars: int) -> int:
    from memento.memory.interchange import read_case_file

    # The last copy of a repeated line wins.
    cases = list({case.id: case for case in read_case_file(args.file, max_task_chars)}.values())
    before = bank.count()
    bank.write_all(cases)  # every line was checked; now all of them are written, or none
    report = {"read": len(cases), "added": bank.count() - before, "total": bank.count()}
    print(json.dumps(report) if args.json else
          f"imported {report['read']} case(s) ({report['added']} new); the bank holds {report['total']}")
    return 0


def _export_cases(bank: Any, args: argparse.Namespace) -> int:
    from memento.memory.interchange import export_lines

    lines = export_lines(bank.list(), args.format)
    if not args.out:
        for line in lines:
            print(line)
        return 0
    out = Path(args.out).expanduser()
    tmp = out.with_name(f".{out.name}.partial")
    tmp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    os.replace(tmp, out)
    print(f"exported {bank.count()} case(s) to {out}", file=sys.stderr)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from memento.cli.bench import cmd_bench as run_bench

    return run_bench(args)


def _retriever_log(args: argparse.Namespace) -> int:
    from memento.memory.learner import learn_pending, learning_log
    from memento.memory.resources import case_bank_for

    ctx = _context(args)
    if args.retriever_command == "learn":
        learned = learn_pending(ctx, case_bank_for(ctx)) or {}
        report = {**learning_log(ctx).status(), "runs_learned": learned.get("runs", 0)}
    else:
        report = learning_log(ctx).status()
    print(json.dumps(report) if args.json else
          f"version {report['version']}: {report['learned']} of {report['transitions']} transitions learned "
          f"({report['runs']} runs recorded) in {report['log']}")
    return 0


def _unlearn(args: argparse.Namespace) -> int:
    from memento.memory.learner import unlearn
    from memento.memory.provenance import author_name
    from memento.memory.resources import case_bank_for

    if not args.author.strip():
        raise ConfigError("--author is empty: give operator or a caller's identity")
    ctx = _context(args)
    report = unlearn(ctx, case_bank_for(ctx), author_name(args.author))
    print(json.dumps(report) if args.json else
          f"removed {report['runs_removed']} run(s) by {report['author']}; version {report['version']} learned "
          f"{report['learned']} transition(s) from {report['runs_kept']} run(s), leaving out "
          f"{report['cases_left_out']} case(s) by {report['author']}")
    return 0


def cmd_retriever(args: argparse.Namespace) -> int:
    from memento.memory.q_retriever import QRetriever

    if args.retriever_command in ("status", "learn"):
        return _retriever_log(args)
    if args.retriever_command == "unlearn":
        return _unlearn(args)
    from memento.memory.resources import forget_retriever, shared_encoder
    from memento.memory.training import evaluate, featurize, offline_settings, read_pairs, train_offline

    ctx = _context(args)
    path = ctx.retriever_checkpoint()
    encoder = shared_encoder(ctx.encoder, ctx.encoder_device)
    rows = read_pairs(args.data)
    # Load before the slow part, so a missing or mismatched checkpoint fails at once.
    trained = QRetriever.load(path, ctx.encoder, ctx.retriever_device) if args.retriever_command == "eval" else None
    print(f"encoding the texts of {len(rows)} pairs with {ctx.encoder}", file=sys.stderr, flush=True)
    features = featurize(rows, encoder)
    if trained is not None:
        metrics = evaluate(trained, features)
        print(json.dumps(metrics) if args.json else
              f"ROC-AUC {metrics['roc_auc']:.4f}  accuracy {metrics['accuracy']:.4f}  F1 {metrics['f1']:.4f}  "
              f"n {metrics['n']}")
        return 0
    from memento.memory.learner import learning_log, log_position, publish_offline

    log = learning_log(ctx) if learning_log(ctx).exists() else None
    position = log_position(log) if log else None  # runs recorded from here on are learned later
    retriever = QRetriever(encoder.dim, ctx.encoder, ctx.retriever_device, offline_settings())
    report = train_offline(retriever, features, val_fraction=args.val_fraction, epochs=args.epochs,
                           patience=args.patience, progress=not args.json)
    retriever.save(path)
    forget_retriever(ctx)
    version = publish_offline(log, retriever, position) if log else None
    payload = {**report.__dict__, "checkpoint": str(path), "device": str(retriever.device), "version": version}
    print(json.dumps(payload) if args.json else
          f"held-out ROC-AUC {report.val_roc_auc:.4f} (best epoch {report.best_epoch} of {report.epochs}); "
          f"{report.n_train} train / {report.n_val} validation pairs; {report.wall_s:.1f} s; saved {path}")
    return 0


COMMANDS = {"run": cmd_run, "resume": cmd_resume, "threads": cmd_threads, "demo": cmd_demo, "cases": cmd_cases,
            "retriever": cmd_retriever, "bench": cmd_bench}


def _fail(args: argparse.Namespace, message: str) -> None:
    """One line on stderr; with --json also one JSON object on stdout, so scripts see every outcome."""
    from memento.graph.persistence import redact_text

    message = redact_text(message)  # a Postgres URL's password, wherever an error quoted one
    print(f"memento: error: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"status": "error", "error": message}))


def _storage_message(args: argparse.Namespace, exc: BaseException) -> str | None:
    """One line for a failure that comes from the disk under the data folder, or None."""
    from memento.graph.storage import storage_problem, what_to_do

    try:
        folder = _context(args).resolved_data_dir()
    except Exception:  # noqa: BLE001 - the settings may be what failed; the current folder is a fair guess
        folder = Path.cwd()
    problem = storage_problem(exc, folder)
    if problem is None or str(exc).startswith(problem):
        return None
    return f"{problem}: {what_to_do(problem)}, then run the command again; nothing stored was lost"


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _Parser.json_wanted = "--json" in (sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    # The two bases, not each module's error class: importing those would import torch, Chroma
    # and the rest even for a command that needs none of them.
    try:
        return COMMANDS[args.command](args)
    except InputError as exc:
        _fail(args, str(exc))
        return EXIT_CONFIG
    except RunError as exc:
        _fail(args, _storage_message(args, exc) or str(exc))
        if args.command == "bench" and getattr(args, "out", None):
            print("memento: what ran is recorded; fix the cause, then run the same command to continue", file=sys.stderr)
        if getattr(args, "thread_id", None):
            print(f"memento: the run is checkpointed; fix the cause, then `memento resume {args.thread_id}`",
                  file=sys.stderr)
        return EXIT_RUN_ERROR
    except KeyboardInterrupt as stop:
        code = EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED
        if args.command == "bench":
            print("memento: interrupted; run the same command to continue", file=sys.stderr)
            return code
        if getattr(args, "thread_id", None):
            print(f"memento: interrupted; continue with `memento resume {args.thread_id}`", file=sys.stderr)
        if getattr(args, "json", False):
            print(json.dumps({"status": "interrupted", "thread_id": getattr(args, "thread_id", None), "exit": code}))
        return code
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # anything unforeseen: one line, the traceback only on request
        if os.environ.get("MEMENTO_DEBUG"):
            raise
        if stored := _storage_message(args, exc):  # a full disk, a read-only folder: not a crash, not damage
            _fail(args, stored)
            if getattr(args, "thread_id", None):
                print(f"memento: the run is checkpointed; fix the cause, then `memento resume {args.thread_id}`",
                      file=sys.stderr)
            return EXIT_RUN_ERROR
        reason = " ".join(str(exc).split())[:300]
        _fail(args, f"unexpected {type(exc).__name__}: {reason} (set MEMENTO_DEBUG=1 for the traceback)")
        if getattr(args, "thread_id", None):
            print(f"memento: the run is checkpointed; `memento resume {args.thread_id}` continues it",
                  file=sys.stderr)
        return EXIT_RUN_ERROR


if __name__ == "__main__":
    sys.exit(main())
