"""`write_case`: score the answer, then write the run to the case bank as one case."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.config import get_config, get_stream_writer
from langgraph.func import task
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore

from memento.graph.approval import case_request, run_policy
from memento.graph.context import Context, context_of
from memento.graph.state import State
from memento.llm.factory import make_chat_model, model_call, structured
from memento.mcp_servers.client import TOOLBOXES
from memento.memory.case import SUCCESS_THRESHOLD, Case
from memento.memory.case_bank import CaseBank
from memento.memory.lexical import mismatch_matrix, trimmed
from memento.memory.provenance import memory_access, reward_source
from memento.memory.resources import case_bank_for, encoder_loading, retriever_for
from memento.memory.scoring import Score, score_answer
from memento.nodes import prompts
from memento.nodes.execute_subtask import remove_workspace, run_workspace
from memento.nodes.planner import quote
from memento.nodes.review import ask
from memento.nodes.schemas import JudgeVerdict

SUMMARY_CHARS = 1500


@task(name="judge_model")
def judge_task(ctx: Context, task_text: str, answer: str) -> dict[str, Any]:
    """The judge's score as a LangGraph task: checkpointed, so it is not asked twice when the node
    runs again after the case approval."""
    return dataclasses.asdict(judge(ctx, task_text, answer))


def judge(ctx: Context, task: str, answer: str) -> Score:
    """Score an answer with the judge model when there is no ground truth."""
    model = structured(make_chat_model(ctx, "judge"), JudgeVerdict, ctx, "judge")
    with model_call(ctx, "judge"):
        reply = model.invoke([SystemMessage(prompts.JUDGE_SYSTEM),
                              HumanMessage(prompts.JUDGE_TASK.format(task=task, answer=quote(answer, len(answer))))])
    verdict = reply.get("parsed")
    if verdict is None:
        return Score(reward=0.0, exact_match=None, f1=None, scored_by=f"judge:{ctx.judge_model}",
                     reason="the judge gave no valid verdict")
    return Score(reward=1.0 if verdict.correct else 0.0, exact_match=None, f1=None,
                 scored_by=f"judge:{ctx.judge_model}", reason=verdict.reason)


def summarise_results(state: State) -> str:
    lines = [f"{r['cycle']}.{r['index']} {r['subtask']} -> {' '.join(r['result'].split())[:200]}"
             for r in state.get("results", [])]
    summary = "\n".join(lines)
    return summary if len(summary) <= SUMMARY_CHARS else summary[:SUMMARY_CHARS] + " ..."


def score_run(ctx: Context, state: State, answer: str) -> dict[str, Any]:
    """The answer's score as the run scores it: against its ground truth, else by the judge."""
    truth = state.get("run_ground_truth")
    if truth:
        return dataclasses.asdict(score_answer(answer, truth, ctx.f1_threshold))
    return judge_task(ctx, state["task"], answer).result()


def review_case(ctx: Context, state: State, answer: str, score: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """Ask a human about the case (when the run's policy says so): the answer and score to store,
    or None when the case is discarded. An edited answer without an edited reward is scored again,
    as the run scores answers (against the ground truth, or by the judge)."""
    if not run_policy(state, ctx).case or not ctx.write_cases:
        return answer, score
    request = case_request(state["task"], answer, score)
    while True:
        decision = ask(request, ctx.max_subtasks)[0]
        if not (decision["type"] == "edit" and "reward" in decision["edited_action"]["args"]
                and ctx.caller_rewards == "refuse" and not memory_access(ctx).trusted):
            break
        # Asked again, as for any answer that cannot be used; the thread keeps waiting.
        request = {**request, "error": "this server does not take rewards from its callers (its operator set "
                                       "caller_rewards = refuse): approve, reject, or edit final_answer only"}
    if decision["type"] == "reject":
        return None
    if decision["type"] == "edit":
        edits = decision["edited_action"]["args"]
        if edits.get("final_answer", answer) != answer:
            answer = edits["final_answer"]
            score = score_run(ctx, state, answer)
        if "reward" in edits:
            score = {**score, "reward": edits["reward"], "scored_by": "human",
                     "reason": f"set by a human reviewer (was {score['reward']:g}, {score['scored_by']})"}
    return answer, score


def write_case(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    ctx = context_of(runtime)
    TOOLBOXES.release(state.get("case_id"))  # the run's tools are done: close its MCP sessions
    if state.get("case_written"):
        return {}
    update = _score_and_store(ctx, state, runtime.store)
    # The run has ended (its case written or discarded): its workspace goes, unless kept. A run
    # that failed before this point keeps it, so a resume finds its files.
    if state.get("case_id"):
        workspace = run_workspace(ctx, state["case_id"])
        if not ctx.keep_workspaces:
            remove_workspace(workspace)
        elif workspace.exists():
            update["kept_workspace"] = str(workspace)
    return update


def _score_and_store(ctx: Context, state: State, store: BaseStore | None = None) -> dict[str, Any]:
    answer = state.get("final_answer") or ""
    scored = score_run(ctx, state, answer)
    reviewed = review_case(ctx, state, answer, scored)
    emit = get_stream_writer()
    if reviewed is None:
        emit({"event": "case_discarded", "case_id": state["case_id"]})
        return {"reward": scored["reward"], "score": scored, "case_written": False, "case_discarded": True,
                "case_id": None}
    answer, score = reviewed
    update: dict[str, Any] = {"reward": score["reward"], "case_written": True, "score": score, "final_answer": answer}
    if not ctx.write_cases:
        return {**update, "case_id": None}
    plans = state.get("plans") or [[]]
    access = memory_access(ctx)
    case = Case(id=state["case_id"], task=state["task"], plan=plans[-1], result_summary=summarise_results(state),
                final_answer=answer, reward=score["reward"], scored_by=score["scored_by"],
                thread_id=get_config().get("configurable", {}).get("thread_id"),
                author=access.author, scope=access.write_scope, reward_source=reward_source(access, score["scored_by"]),
                reviewer=access.author if score["scored_by"] == "human" else "")
    from memento.memory.device import torch_threads  # torch: only when there is encoding to do

    with torch_threads(ctx.torch_threads):
        # The id was fixed in retrieve_cases and is checkpointed: a resumed or replayed run
        # overwrites its own case instead of adding a second one.
        if phase := encoder_loading(ctx):
            emit({"event": "phase", "text": phase})
        bank = case_bank_for(ctx, store)
        bank.write(case)
        emit({"event": "case_written", "case_id": case.id, "reward": case.reward})
        if ctx.online_learning and ctx.retrieval_mode != "none":
            learned = learn_from_run(ctx, bank, case, state.get("cases_used", []), state.get("cited_cases") or [],
                                     state.get("abandoned_cases") or [])
            if learned:
                update["transitions"] = learned["transitions"]
                emit({"event": "retriever_updated", **learned})
    return update


def credit(cases_used: list[dict[str, Any]], reward: float, cited: list[str],
           abandoned: list[str]) -> tuple[list[str], list[float], bool]:
    """(case ids, reward for each, whether the planner's citations decided it).

    The cases cited for the final plan (or the answer) carry the run's reward. Of those cited
    only for a plan that was replaced, the successes (the prompt offers them to follow) carry 0:
    followed, and it did not work; the failures (offered to avoid) get no label, since avoiding
    them may have been right while the plan went wrong elsewhere. Cases shown but not cited say
    nothing about their use and get none. When the planner cited nothing at all, every shown case
    carries the run's reward (the paper's rule)."""
    by_id = {c["id"]: c for c in cases_used}
    final = [i for i in by_id if i in set(cited)]
    replaced = [i for i in by_id if i in set(abandoned) and i not in set(cited)]
    if not final and not replaced:
        return list(by_id), [reward] * len(by_id), False
    success = {i: by_id[i]["reward"] >= SUCCESS_THRESHOLD for i in by_id}
    labels = [(i, reward) for i in final] + [(i, 0.0) for i in replaced if success[i]]
    return [i for i, _ in labels], [r for _, r in labels], True


def hindsight(cases_used: list[dict[str, Any]], reward: float, cited: list[str],
              abandoned: list[str]) -> tuple[list[str], list[float]]:
    """The labels the learner trains on (and its fallback's check reads first): `credit`'s, and,
    in a run that succeeded following the cases it cited, 0 for the successes it was offered and
    passed over (their way was not the one that worked for this task). So most runs hold a case
    that helped and one that did not, which the ranking loss compares. The passed-over cases'
    utilities are left alone: their way may be right for their own kind of task."""
    ids, rewards, by_citation = credit(cases_used, reward, cited, abandoned)
    if by_citation and reward >= SUCCESS_THRESHOLD and any(i in set(cited) for i in ids):
        labelled = set(ids)
        passed = [c["id"] for c in cases_used if c["reward"] >= SUCCESS_THRESHOLD and c["id"] not in labelled]
        ids, rewards = ids + passed, rewards + [0.0] * len(passed)
    return ids, rewards


def learn_from_run(ctx: Context, bank: CaseBank, case: Case, cases_used: list[dict[str, Any]],
                   cited: list[str] | None = None, abandoned: list[str] | None = None) -> dict[str, Any] | None:
    """What the run teaches, in both learners whatever the retrieval mode: the (task, case, reward)
    transitions of `hindsight`'s labels are recorded in the learning log (once per run: a resumed
    or replayed run records nothing), the cases `credit` names move their utilities toward their
    rewards, and the learner trains the Q-retriever on every run recorded since its last
    version (`retriever_steps` gradient steps per run) and publishes the next version (see
    `memory.learner`). Without citations, each shown case is weighted by its retrieval
    probability."""
    from memento.memory.learner import learn_pending, learning_log
    from memento.memory.q_retriever import MAX_PER_EPISODE

    access = memory_access(ctx)
    credited, rewards, by_citation = credit(cases_used, case.reward, cited or [], abandoned or [])
    shown = {c["id"]: c for c in cases_used}
    # An untrusted caller's reward moves only the utilities of its own cases; it trains no one's learner.
    own = {i: r for i, r in zip(credited, rewards) if i in shown and access.may_credit(shown[i])}
    labelled, labels = hindsight(cases_used, case.reward, cited or [], abandoned or [])
    ids = [i for i in labelled if i in shown]
    reward_of = dict(zip(labelled, labels))
    q = [shown[i].get("q") for i in ids]
    retriever = retriever_for(ctx)
    weights = retriever.selection_weights(np.asarray(q)).tolist() if ids and None not in q and not by_citation else None
    with_next = retriever.settings.discount > 0 and by_citation  # the next state is every case shown
    pairs = retriever.settings.word_pairs
    mismatch = mismatch_matrix(case.task, [shown[i]["task"] for i in ids],
                               [shown[i]["reward"] >= SUCCESS_THRESHOLD for i in ids], pairs)
    payload = {"task_id": case.id, "ids": ids, "rewards": [reward_of[i] for i in ids], "weights": weights,
               "mismatch": trimmed(mismatch), "steps": ctx.retriever_steps,
               "shown": [c["id"] for c in cases_used] if with_next else None,
               "author": access.author, "trusted": access.trusted, "utility_ids": list(own)}
    log = learning_log(ctx, bank)
    # An untrusted run is recorded (who did what, for `retriever unlearn`) as no transitions to learn.
    recorded = log.record(case.id, payload, min(len(ids), MAX_PER_EPISODE) if access.trusted else 0)
    if recorded is None or (recorded == 0 and access.trusted):
        return None  # this run was recorded before (a resumed or replayed run), or it taught nothing
    if not access.trusted or not ctx.learn_after_run:  # a dedicated learner (`memento retriever learn`) trains
        utilities = bank.update_utilities(own, ctx.utility_rate)
        return {"transitions": recorded, "utilities": len(utilities)}
    learned = learn_pending(ctx, bank, utilities=own)
    return {"transitions": recorded, **(learned or {})}
