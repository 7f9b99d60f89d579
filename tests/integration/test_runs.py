"""Whole runs through the real graph (Chroma, encoder, MCP servers over stdio), simulated model."""

from tests.conftest import run


def test_one_subtask_plan(graph, ctx):
    out = run(graph, ctx, "What is 17 * 23 + 4?", ground_truth="395")
    assert out["plans"] == [["Evaluate 17 * 23 + 4 with the calculator."]]
    assert out["results"][0]["tool_calls"][0]["name"] == "calculate"
    assert out["final_answer"] == "395"
    assert out["reward"] == 1.0 and out["error"] is None


def test_multi_subtask_plan(graph, ctx):
    out = run(graph, ctx, "Compute 6 * 7 and 100 - 58.", ground_truth="42, 42")
    assert len(out["plans"]) == 1 and len(out["plans"][0]) == 2
    assert [r["index"] for r in out["results"]] == [1, 2]
    assert out["final_answer"] == "42, 42"
    assert out["reward"] == 1.0


def test_replan_cycle_uses_what_the_first_cycle_found(graph, ctx, numbers_file):
    out = run(graph, ctx, "What is the total of the numbers in the attached file?",
              files=[numbers_file], ground_truth="49")
    assert len(out["plans"]) == 2
    assert out["plans"][1] == ["Add up all the numbers in the earlier results with the calculator."]
    assert out["results"][1]["tool_calls"][0]["args"]["expression"] == "12 + 30 + 7"
    assert out["final_answer"] == "49"


def test_max_cycles_runs_out_and_still_gives_an_answer(graph, ctx):
    out = run(graph, ctx.replace(planner_model="simulated:indecisive"), "What is 2 ** 10?")
    assert len(out["plans"]) == ctx.max_cycles == 3
    assert isinstance(out["final_answer"], str) and out["final_answer"] == "1024"
    assert out["error"] is None


def test_one_cycle_allowed_forces_a_real_answer_not_a_plan(graph, ctx, numbers_file):
    out = run(graph, ctx.replace(max_cycles=1), "What is the total of the numbers in the attached file?",
              files=[numbers_file], ground_truth="49")
    assert len(out["plans"]) == 1
    assert "apples 12" in out["final_answer"]  # the best it had: the file, not a plan
    assert "Add up" not in out["final_answer"]
    assert out["reward"] == 0.0


def test_malformed_planner_reply_is_retried_and_recovers(graph, ctx):
    out = run(graph, ctx.replace(planner_model="simulated:malformed-once"), "What is 3 + 4?", ground_truth="7")
    assert out["error"] is None
    assert out["final_answer"] == "7"


def test_planner_that_stays_malformed_ends_cleanly_without_a_case(graph, ctx):
    from memento.memory.resources import case_bank_for

    out = run(graph, ctx.replace(planner_model="simulated:malformed-always"), "What is 3 + 4?")
    assert out["final_answer"] is None
    assert "no valid decision in 3 attempt(s)" in out["error"]
    assert "subtasks or a final answer" in out["error"]
    assert case_bank_for(ctx).count() == 0


def test_executor_tool_loop_is_bounded(graph, ctx):
    out = run(graph, ctx.replace(executor_model="simulated:tool-loop", max_tool_calls=3), "What is 3 + 4?")
    assert [len(r["tool_calls"]) for r in out["results"]] == [3]
    assert out["error"] is None and out["final_answer"]


def test_judge_scores_when_no_ground_truth(graph, ctx):
    out = run(graph, ctx, "Who wrote the play Hamlet?")
    assert out["score"]["scored_by"] == "judge:simulated"
    assert out["reward"] == 0.0


def test_unreadable_attached_file_ends_with_clear_error(graph, ctx, tmp_path):
    out = run(graph, ctx, "Sum the file", files=[str(tmp_path / "missing.txt")])
    assert out["error"].startswith("attached file") and "missing.txt" in out["error"]
    assert out["plans"] == []


def test_thread_reused_for_a_new_task_starts_clean(graph, ctx, numbers_file):
    run(graph, ctx, "What is the total of the numbers in the attached file?", files=[numbers_file])
    out = run(graph, ctx, "What is 1 + 1?")
    assert out["plans"] == [["Evaluate 1 + 1 with the calculator."]]
    assert len(out["results"]) == 1


def test_a_run_that_died_does_not_leak_its_inputs_into_the_next(graph, ctx, numbers_file):
    import pytest

    from memento.llm.factory import ModelError

    broken = ctx.replace(planner_model="openai-compatible:m", planner_base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ModelError, match="planner_base_url"):
        run(graph, broken, "Sum the file", files=[numbers_file], ground_truth="49")
    out = run(graph, ctx, "Who wrote the play Hamlet?")
    state = graph.get_state({"configurable": {"thread_id": "t1"}}).values
    assert state["run_files"] == [] and state["run_ground_truth"] is None
    assert out["score"]["scored_by"] == "judge:simulated"  # not scored against the dead run's "49"


def test_a_task_over_the_limit_ends_with_a_clear_error(graph, ctx):
    state = run(graph, ctx.replace(max_task_chars=10), "What is 2 + 2, said at length?")
    assert "at most 10 are accepted (setting max_task_chars)" in state["error"]
    assert state.get("final_answer") is None
