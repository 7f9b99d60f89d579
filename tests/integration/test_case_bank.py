"""The case bank for real: Chroma on disk, the packaged encoder, SQLite checkpoints."""

import json
import subprocess
import sys
import textwrap

from langgraph.checkpoint.sqlite import SqliteSaver

from memento.graph import build_graph
from memento.memory.case import Case
from memento.memory.resources import case_bank_for, release_case_banks
from memento.nodes.planner import planner_messages
from tests.conftest import run


def test_write_then_retrieve_from_a_second_process(ctx):
    bank = case_bank_for(ctx)
    bank.write(Case(id="c-sum", task="Add up the numbers in the sales report", plan=["read", "sum"],
                    final_answer="245", reward=1.0))
    bank.write(Case(id="c-poem", task="Write a haiku about autumn leaves", plan=["write"], reward=0.0))
    script = textwrap.dedent(f"""
        import json
        from memento.graph import Context
        from memento.memory.resources import case_bank_for
        bank = case_bank_for(Context(data_dir={ctx.data_dir!r}))
        print(json.dumps([[c.id, c.plan, c.reward] for c in bank.retrieve("What is the total of the sales figures?", 2)]))
    """)
    # While this process has the embedded bank open, a second one is refused, saying how to share it.
    refused = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0
    assert "is open in another process" in refused.stderr and "chroma run --path" in refused.stderr
    release_case_banks()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert [row[0] for row in found] == ["c-sum", "c-poem"]
    assert found[0][1:] == [["read", "sum"], 1.0]


def test_successes_and_failures_render_as_separate_sections(graph, ctx):
    run(graph, ctx, "What is 17 * 23 + 4?", thread="a", ground_truth="395")
    run(graph, ctx, "What is 17 * 23 + 5?", thread="b", ground_truth="1")  # answered 396: a failure
    out = run(graph, ctx, "What is 17 * 23 + 6?", thread="c")
    assert sorted(c["reward"] for c in out["cases_used"]) == [0.0, 1.0]
    prompt = planner_messages(out | {"results": []}, ctx, "# Instruction\nplan")[1].text
    good, bad = prompt.index("# Successful past cases"), prompt.index("# Failed past cases")
    assert good < prompt.index("Task:\n> What is 17 * 23 + 4?") < bad < prompt.index("Task:\n> What is 17 * 23 + 5?")


def test_retrieval_embeds_only_the_query(ctx):
    bank = case_bank_for(ctx)
    for n in range(30):
        bank.write(Case(id=f"c{n}", task=f"task number {n} about topic {n % 5}", plan=["x"], reward=n % 2))
    before = (bank.encoder.calls, bank.encoder.texts_encoded)
    hits = bank.retrieve("a task about topic 3", 4)
    assert len(hits) == 4
    assert (bank.encoder.calls - before[0], bank.encoder.texts_encoded - before[1]) == (1, 1)


def test_one_case_per_run_after_resume_and_replay(ctx, tmp_path):
    with SqliteSaver.from_conn_string(str(tmp_path / "cp.sqlite")) as saver:
        graph = build_graph(saver, interrupt_before=["write_case"])
        config = {"configurable": {"thread_id": "once"}}
        graph.invoke({"task": "What is 2 + 2?", "ground_truth": "4"}, config, context=ctx)
        assert graph.get_state(config).next == ("write_case",)
        before_write = graph.get_state(config).config
        graph.invoke(None, config, context=ctx)  # resume: the case is written
        graph.invoke(None, before_write, context=ctx)  # replay write_case from its checkpoint
        graph.invoke(None, config, context=ctx)  # resume a finished thread: nothing to do
    cases = case_bank_for(ctx).list()
    assert len(cases) == 1
    assert cases[0].thread_id == "once" and cases[0].final_answer == "4"


def test_case_bank_refuses_a_different_encoder(ctx):
    import pytest

    from memento.memory.case_bank import CaseBank, CaseBankError
    from memento.memory.encoder import TextEncoder

    case_bank_for(ctx)
    with pytest.raises(CaseBankError, match="embedded with encoder 'all-MiniLM-L6-v2'"):
        CaseBank(ctx.case_bank_location(), TextEncoder("some/other-encoder"))


def test_a_runs_task_is_encoded_once_for_retrieval_and_the_case_write(ctx):
    bank = case_bank_for(ctx)
    bank.write(Case(id="old", task="an earlier task about invoices", plan=["x"], reward=1.0))
    before = bank.encoder.texts_encoded
    task = "a new task about invoices, encoded once"
    bank.retrieve(task, 4)
    bank.write(Case(id="new", task=task, plan=["read the invoices, then add them up"], reward=1.0))
    assert bank.encoder.texts_encoded - before == 2  # the task once, then the plan
    assert bank.encoder.encode([task]).shape == (1, bank.encoder.dim) and bank.encoder.texts_encoded - before == 2
