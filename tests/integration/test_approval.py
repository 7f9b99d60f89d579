"""Human approval through the Python API with a SQLite checkpointer: every answer at every point,
malformed answers, a resume from another process, and counts showing nothing runs twice."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command

from memento.graph import Context, build_graph
from memento.llm.factory import ModelError
from memento.mcp_servers.client import Toolbox
from memento.memory.case_bank import CaseBank
from memento.memory.q_retriever import QRetriever
from memento.memory.resources import case_bank_for
from tests.fixtures.scripted_openai import ScriptedOpenAI, tool_call

TOTAL = "What is the total of the numbers in the attached file?"
EVERY_POINT = {"plan": True, "replans": True, "case": True, "tools": ["*"]}


class ModelCalls(BaseCallbackHandler):
    """Counts chat model calls by the graph node (or task) that made them."""

    def __init__(self, counts: Counter) -> None:
        self.counts = counts

    def on_chat_model_start(self, serialized, messages, *, metadata=None, **kwargs) -> None:
        self.counts[f"model:{(metadata or {}).get('langgraph_node')}"] += 1


@pytest.fixture
def counts(monkeypatch) -> Counter:
    """Every tool call, case write and retriever update made in this process, counted."""
    seen: Counter = Counter()

    def counting(cls, name, key):
        original = getattr(cls, name)

        def wrapper(self, *args, **kwargs):
            seen[key(args) if callable(key) else key] += 1
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, wrapper)

    counting(Toolbox, "call", lambda args: f"tool:{args[0]['name']}")
    counting(CaseBank, "write", "case_write")
    counting(QRetriever, "update", "retriever_update")
    return seen


@pytest.fixture
def saver(tmp_path):
    with SqliteSaver.from_conn_string(str(tmp_path / "checkpoints.sqlite")) as checkpoints:
        yield checkpoints


def drive(graph, ctx, thread, value, counts):
    config = {"configurable": {"thread_id": thread}, "callbacks": [ModelCalls(counts)]}
    graph.invoke(value, config, context=ctx)
    return graph.get_state({"configurable": {"thread_id": thread}})


def approve_all(snapshot):
    request = snapshot.interrupts[0].value
    return Command(resume={"decisions": [{"type": "approve"} for _ in request["action_requests"]]})


def finish(graph, ctx, thread, first, counts, answer=approve_all):
    """Run from `first` to the end, answering each interrupt with `answer`; the points asked, in order."""
    points = []
    snapshot = drive(graph, ctx, thread, first, counts)
    while snapshot.interrupts:
        points.append(snapshot.interrupts[0].value["point"])
        snapshot = drive(graph, ctx, thread, answer(snapshot), counts)
    return points, snapshot.values


def seeded(tmp_path, name, numbers_file, saver, counts, **settings):
    """A data folder whose bank holds one case of the task (so the next run learns from it)."""
    ctx = Context(data_dir=str(tmp_path / name), **settings)
    finish(build_graph(saver), ctx.replace(approval={}), f"{name}-seed", {"task": TOTAL, "files": [numbers_file]},
           Counter())
    return ctx


def test_approving_at_every_point_repeats_no_call_write_or_update(tmp_path, numbers_file, saver, counts):
    graph = build_graph(saver)
    plain = seeded(tmp_path, "plain", numbers_file, saver, counts)
    counts.clear()
    _, expected = finish(graph, plain, "plain", {"task": TOTAL, "files": [numbers_file]}, counts)
    baseline = Counter(counts)
    assert baseline["case_write"] == 1 and baseline["retriever_update"] == 1 and baseline["tool:read_document"] == 1

    reviewed = seeded(tmp_path, "reviewed", numbers_file, saver, counts, approval=EVERY_POINT)
    counts.clear()
    points, values = finish(graph, reviewed, "reviewed", {"task": TOTAL, "files": [numbers_file]}, counts)
    # The seeded case taught the planner to plan the sum up front: one plan, the tool call of each
    # subtask, then the case.
    assert points == ["plan", "tools", "tools", "case"]
    assert values["final_answer"] == expected["final_answer"] == "49"
    assert counts == baseline, "an approval made something run twice (or not at all)"
    assert case_bank_for(reviewed).count() == 2


def test_plan_edit_runs_the_edited_plan(tmp_path, saver, counts):
    ctx = Context(data_dir=str(tmp_path / "data"), approval={"plan": True})
    graph = build_graph(saver)
    snapshot = drive(graph, ctx, "t", {"task": "What is 2 + 3 * 4?"}, counts)
    assert snapshot.interrupts[0].value["action_requests"][0]["args"]["subtasks"] == [
        "Evaluate 2 + 3 * 4 with the calculator."]
    edit = {"type": "edit", "edited_action": {"name": "plan", "args": {"subtasks": ["Evaluate 5 * 5 with the calculator."]}}}
    snapshot = drive(graph, ctx, "t", Command(resume={"decisions": [edit]}), counts)
    assert not snapshot.interrupts
    assert snapshot.values["plans"] == [["Evaluate 5 * 5 with the calculator."]]
    assert snapshot.values["final_answer"] == "25"
    assert case_bank_for(ctx).list()[0].plan == ["Evaluate 5 * 5 with the calculator."]


def test_plan_reject_sends_feedback_to_the_planner_and_reviews_the_new_plan(tmp_path, saver, counts):
    ctx = Context(data_dir=str(tmp_path / "data"), approval={"plan": True}, max_cycles=3)
    graph = build_graph(saver)
    drive(graph, ctx, "t", {"task": "What is 2 + 3 * 4?"}, counts)
    reject = {"decisions": [{"type": "reject", "message": "use the calculator twice"}]}
    snapshot = drive(graph, ctx, "t", Command(resume=reject), counts)
    # Rejecting must not let an unreviewed plan run: the new plan (cycle 2) is asked about too.
    request = snapshot.interrupts[0].value
    assert request["point"] == "plan" and request["action_requests"][0]["args"]["cycle"] == 2
    assert "after reviewer feedback: plan for cycle 1: use the calculator twice" in snapshot.values["planner_notes"][-1]
    assert counts["tool:calculate"] == 0
    points, values = finish(graph, ctx, "t", approve_all(snapshot), counts)
    assert values["final_answer"] == "14" and len(values["plans"]) == 1  # the rejected plan never ran


def test_the_last_cycles_plan_may_be_approved_or_edited_not_rejected(tmp_path, saver, counts):
    ctx = Context(data_dir=str(tmp_path / "data"), approval={"plan": True}, max_cycles=2)
    graph = build_graph(saver)
    snapshot = drive(graph, ctx, "t", {"task": "What is 2 + 3 * 4?"}, counts)
    reject = Command(resume={"decisions": [{"type": "reject", "message": "no"}]})
    snapshot = drive(graph, ctx, "t", reject, counts)
    request = snapshot.interrupts[0].value
    assert request["action_requests"][0]["args"]["cycle"] == 2
    assert request["review_configs"][0]["allowed_decisions"] == ["approve", "edit"]
    snapshot = drive(graph, ctx, "t", reject, counts)  # no cycle is left to plan again
    assert "reject is not allowed" in snapshot.interrupts[0].value["error"] and counts["tool:calculate"] == 0
    edit = {"type": "edit", "edited_action": {"name": "plan", "args": {"subtasks": ["Evaluate 1 + 1 with the calculator."]}}}
    snapshot = drive(graph, ctx, "t", Command(resume={"decisions": [edit]}), counts)
    assert snapshot.values["final_answer"] == "2" and counts["tool:calculate"] == 1


def test_a_resume_keeps_the_policy_the_run_started_with(tmp_path, saver, counts):
    graph = build_graph(saver)
    data = str(tmp_path / "data")
    drive(graph, Context(data_dir=data, approval={"case": True}), "t", {"task": "What is 6 * 7?"}, counts)
    # Resumed with the default settings (a server client that sends no context, a config file
    # without the table): the case is still asked about, and a reject still discards it.
    snapshot = drive(graph, Context(data_dir=data), "t", Command(resume={"decisions": [{"type": "reject"}]}), counts)
    assert snapshot.values["case_discarded"] is True and counts["case_write"] == 0


def test_an_answer_on_disk_is_not_asked_again_after_the_process_failed(tmp_path, saver, counts):
    from memento.cli.runner import answered, thread_status

    replies = [{"content": None, "tool_calls": [tool_call("c1", "calculate", {"expression": "6 * 7"})]}]
    with ScriptedOpenAI(replies) as server:  # then no reply: the model call after the tool fails
        ctx = Context(data_dir=str(tmp_path / "data"), executor_model="openai-compatible:scripted",
                      executor_base_url=server.url, approval={"tools": ["calculate"]})
        graph = build_graph(saver)
        drive(graph, ctx, "t", {"task": "What is 6 * 7?"}, counts)
        with pytest.raises(ModelError):
            drive(graph, ctx, "t", Command(resume={"decisions": [{"type": "approve"}]}), counts)
        assert counts["tool:calculate"] == 1
        snapshot = graph.get_state({"configurable": {"thread_id": "t"}})
        assert snapshot.interrupts  # the old question still shows...
        assert answered(graph, "t") and thread_status(snapshot, answered(graph, "t")) == "failed"  # ...answered
        server.replies.append({"content": "42"})
        snapshot = drive(graph, ctx, "t", None, counts)  # continues with the answer on disk
    assert snapshot.values["final_answer"] == "42" and not snapshot.interrupts
    assert counts["tool:calculate"] == 1


def test_tool_edit_runs_the_edited_arguments_and_reject_is_the_tools_error(tmp_path, saver, counts):
    ctx = Context(data_dir=str(tmp_path / "data"), approval={"tools": ["calc*"]})
    graph = build_graph(saver)
    snapshot = drive(graph, ctx, "edit", {"task": "What is 2 + 3 * 4?"}, counts)
    request = snapshot.interrupts[0].value
    assert request["point"] == "tools"
    assert request["action_requests"][0]["name"] == "calculate"
    assert request["action_requests"][0]["args"] == {"expression": "2 + 3 * 4"}
    assert counts["tool:calculate"] == 0  # nothing ran before the answer
    edit = {"type": "edit", "edited_action": {"name": "calculate", "args": {"expression": "6 * 7"}}}
    snapshot = drive(graph, ctx, "edit", Command(resume={"decisions": [edit]}), counts)
    assert snapshot.values["final_answer"] == "42" and counts["tool:calculate"] == 1
    assert snapshot.values["results"][0]["tool_calls"][0]["args"] == {"expression": "6 * 7"}

    drive(graph, ctx, "reject", {"task": "What is 2 + 3 * 4?"}, counts)
    snapshot = drive(graph, ctx, "reject", Command(resume={"decisions": [{"type": "reject", "message": "not now"}]}),
                     counts)
    result = snapshot.values["results"][0]
    assert counts["tool:calculate"] == 1  # the rejected call never reached the server
    assert result["tool_calls"][0]["status"] == "rejected" and not result["ok"]
    assert "rejected this call (not now)" in result["result"]


def test_several_tool_calls_in_one_turn_are_asked_together_in_order(tmp_path, saver, counts):
    replies = [
        {"content": None, "tool_calls": [tool_call("c1", "calculate", {"expression": "2 + 2"}),
                                         tool_call("c2", "calculate", {"expression": "3 + 3"}),
                                         tool_call("c3", "calculate", {"expression": "4 + 4"})]},
        {"content": "4, and the other calls were refused"},
    ]
    with ScriptedOpenAI(replies) as server:
        ctx = Context(data_dir=str(tmp_path / "data"), executor_model="openai-compatible:scripted",
                      executor_base_url=server.url, approval={"tools": ["calculate"]})
        graph = build_graph(saver)
        snapshot = drive(graph, ctx, "t", {"task": "What is 2 + 2?"}, counts)
        request = snapshot.interrupts[0].value
        assert [a["args"]["expression"] for a in request["action_requests"]] == ["2 + 2", "3 + 3", "4 + 4"]
        assert len(snapshot.interrupts) == 1 and counts["tool:calculate"] == 0
        decisions = [{"type": "approve"}, {"type": "reject", "message": "one is enough"},
                     {"type": "edit", "edited_action": {"name": "calculate", "args": {"expression": "5 + 5"}}}]
        snapshot = drive(graph, ctx, "t", Command(resume={"decisions": decisions}), counts)
        assert counts["tool:calculate"] == 2 and len(server.requests) == 2
        tool_messages = [m for m in server.requests[1]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["c1", "c2", "c3"]
    assert tool_messages[0]["content"] == "4" and "one is enough" in tool_messages[1]["content"]
    assert tool_messages[2]["content"] == "10"
    assert [c["status"] for c in snapshot.values["results"][0]["tool_calls"]] == ["success", "rejected", "success"]
    # The executor is shown the calls as they ran: the third with the reviewer's arguments.
    (asked,) = [m for m in server.requests[1]["messages"] if m["role"] == "assistant"]
    assert [json.loads(c["function"]["arguments"]) for c in asked["tool_calls"]] == [
        {"expression": "2 + 2"}, {"expression": "3 + 3"}, {"expression": "5 + 5"}]


def test_case_edit_stores_the_reviewers_reward_and_discard_writes_nothing(tmp_path, saver, counts):
    graph = build_graph(saver)
    ctx = Context(data_dir=str(tmp_path / "data"), approval={"case": True})
    snapshot = drive(graph, ctx, "edit", {"task": "What is 6 * 7?", "ground_truth": "42"}, counts)
    args = snapshot.interrupts[0].value["action_requests"][0]["args"]
    assert args["final_answer"] == "42" and args["reward"] == 1.0 and args["score"]["scored_by"] == "ground_truth"
    assert counts["case_write"] == 0
    edit = {"type": "edit", "edited_action": {"name": "write_case", "args": {"reward": 0.25,
                                                                              "final_answer": "forty-two"}}}
    snapshot = drive(graph, ctx, "edit", Command(resume={"decisions": [edit]}), counts)
    (case,) = case_bank_for(ctx).list()
    assert case.reward == 0.25 and case.scored_by == "human" and case.final_answer == "forty-two"
    assert snapshot.values["reward"] == 0.25

    # An edited answer without an edited reward is scored again.
    drive(graph, ctx, "rescored", {"task": "What is 6 * 9?", "ground_truth": "54"}, counts)
    fix = {"type": "edit", "edited_action": {"name": "write_case", "args": {"final_answer": "55"}}}
    snapshot = drive(graph, ctx, "rescored", Command(resume={"decisions": [fix]}), counts)
    assert snapshot.values["reward"] == 0.0 and snapshot.values["final_answer"] == "55"

    updates_before = counts["retriever_update"]
    drive(graph, ctx, "discard", {"task": "What is 6 * 8?", "ground_truth": "48"}, counts)
    snapshot = drive(graph, ctx, "discard", Command(resume={"decisions": [{"type": "reject"}]}), counts)
    assert snapshot.values["case_discarded"] is True and snapshot.values["case_id"] is None
    assert case_bank_for(ctx).count() == 2 and counts["case_write"] == 2
    assert counts["retriever_update"] == updates_before  # nothing learned from a discarded run


BAD_ANSWERS = {
    "plan": [{"decisions": [{"type": "maybe"}]},
             {"decisions": []},
             {"decisions": [{"type": "edit", "edited_action": {"name": "plan", "args": {"subtasks": []}}}]},
             {"decisions": [{"type": "edit", "edited_action": {"name": "plan", "args": {"subtasks": ["x"] * 9}}}]},
             "approve"],
    "tools": [{"decisions": [{"type": "edit", "edited_action": {"name": "calculate", "args": {"expression": "1"}}}]},
              {"decisions": [{"type": "edit", "edited_action": {"name": "run_python", "args": {}}}]},
              {"decisions": [{"type": "approve"}, {"type": "approve"}]}],
    "case": [{"decisions": [{"type": "edit", "edited_action": {"name": "write_case", "args": {"reward": 1.5}}}]},
             {"decisions": [{"type": "edit", "edited_action": {"name": "write_case", "args": {"reward": True}}}]},
             {"decisions": [{"type": "edit", "edited_action": {"name": "write_case", "args": {"plan": []}}}]},
             {"decisions": [{"type": "reject", "message": 7}]}],
}


def test_a_malformed_answer_leaves_the_thread_waiting_at_the_same_point(tmp_path, saver, counts):
    # Calls of calculate may be approved or rejected, not edited.
    ctx = Context(data_dir=str(tmp_path / "data"),
                  approval={"plan": True, "case": True, "tools": {"calculate": ["approve", "reject"]}})
    graph = build_graph(saver)
    snapshot = drive(graph, ctx, "t", {"task": "What is 2 + 3 * 4?"}, counts)
    for point in ("plan", "tools", "case"):
        assert snapshot.interrupts[0].value["point"] == point
        before = Counter(counts)
        for bad in BAD_ANSWERS[point]:
            snapshot = drive(graph, ctx, "t", Command(resume=bad), counts)
            request = snapshot.interrupts[0].value
            assert request["point"] == point, f"{bad!r} moved the run on"
            assert request["error"], f"{bad!r} was not refused with a reason"
        assert counts == before, "a refused answer ran something"
        assert case_bank_for(ctx).count() == 0
        snapshot = drive(graph, ctx, "t", approve_all(snapshot), counts)
    assert snapshot.values["final_answer"] == "14" and case_bank_for(ctx).count() == 1
    assert counts["tool:calculate"] == 1 and counts["case_write"] == 1


SECOND_PROCESS = textwrap.dedent("""
    import json, sys
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.types import Command
    from memento.graph import Context, build_graph
    path, data = sys.argv[1], sys.argv[2]
    ctx = Context(data_dir=data, approval={"plan": True, "case": True})
    with SqliteSaver.from_conn_string(path) as saver:
        graph = build_graph(saver)
        config = {"configurable": {"thread_id": "t"}}
        if sys.argv[3] == "start":
            graph.invoke({"task": "What is 6 * 7?", "ground_truth": "42"}, config, context=ctx)
        else:
            graph.invoke(Command(resume=json.loads(sys.argv[3])), config, context=ctx)
        state = graph.get_state(config)
        print(json.dumps({"interrupts": [i.value for i in state.interrupts], "answer": state.values.get("final_answer")}))
""")


def test_a_thread_stopped_at_an_approval_is_resumed_by_another_process(tmp_path):
    path, data = str(tmp_path / "checkpoints.sqlite"), str(tmp_path / "data")

    def process(arg: str) -> dict:
        done = subprocess.run([sys.executable, "-c", SECOND_PROCESS, path, data, arg], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.splitlines()[-1])

    first = process("start")
    assert [i["point"] for i in first["interrupts"]] == ["plan"] and first["answer"] is None
    second = process(json.dumps({"decisions": [{"type": "approve"}]}))
    assert [i["point"] for i in second["interrupts"]] == ["case"] and second["answer"] == "42"
    with SqliteSaver.from_conn_string(path) as saver:  # the third answer from this process
        graph = build_graph(saver)
        ctx = Context(data_dir=data, approval={"plan": True, "case": True})
        graph.invoke(Command(resume={"decisions": [{"type": "approve"}]}), {"configurable": {"thread_id": "t"}},
                     context=ctx)
        assert not graph.get_state({"configurable": {"thread_id": "t"}}).interrupts
    assert [c.final_answer for c in case_bank_for(ctx).list()] == ["42"]
