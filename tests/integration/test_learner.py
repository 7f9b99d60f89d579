"""The learning log and its one learner: every transition recorded once, learned once, versions in
order; two banks in one database kept apart; the URL's password nowhere."""

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from memento.graph import Context
from memento.graph.persistence import redact_text, redact_url
from memento.memory.case import Case
from memento.memory.learner import learn_pending, learning_log
from memento.memory.resources import case_bank_for, current_retriever, retriever_for
from memento.nodes.write_case import learn_from_run


def _shown(bank, n):
    cases = [Case(id=f"old{i}", task=f"What is {i} + {i}?", plan=["add"], final_answer=str(2 * i), reward=float(i % 2))
             for i in range(n)]
    bank.write_many(cases)
    return [{"id": c.id, "task": c.task, "reward": c.reward, "similarity": 0.9} for c in cases]


def test_concurrent_runs_record_and_learn_every_transition_once(tmp_path):
    ctx = Context(data_dir=str(tmp_path / "data"), retriever_steps=2)
    bank = case_bank_for(ctx)
    shown = _shown(bank, 4)
    runs = [Case(id=f"run{i}", task=f"What is {i} * 3?", plan=["multiply"], final_answer=str(3 * i), reward=1.0)
            for i in range(16)]
    bank.write_many(runs)

    def learn(case):
        return learn_from_run(ctx, bank, case, shown, cited=["old1", "old3"])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(learn, runs))
    assert all(r["transitions"] == 2 for r in results)
    status = learning_log(ctx).status()
    assert status == {**status, "transitions": 32, "runs": 16, "learned": 32, "pending": 0}
    retriever = retriever_for(ctx)
    assert retriever.updates == 16 * 2  # each run's steps once, none doubled
    assert retriever.buffer.size == 32 and retriever.version == status["version"]
    assert sorted(set(retriever.episodes)) == sorted(c.id for c in runs)
    # Replays record nothing, and there is nothing left to learn.
    assert learn_from_run(ctx, bank, runs[0], shown, cited=["old1"]) is None
    assert learn_pending(ctx, bank) is None
    # The local file is the newest version.
    from memento.memory.q_retriever import QRetriever

    assert QRetriever.load(ctx.retriever_checkpoint(), ctx.encoder).updates == 32


def test_a_worker_takes_up_the_version_another_published(tmp_path):
    shared = tmp_path / "shared.sqlite"
    ctx = Context(data_dir=str(tmp_path / "data"), checkpointer=str(shared), retriever_steps=1)
    bank = case_bank_for(ctx)
    shown = _shown(bank, 2)
    bank.write(Case(id="mine", task="What is 5 * 3?", plan=["multiply"], final_answer="15", reward=1.0))
    learn_from_run(ctx, bank, bank.get("mine"), shown, cited=["old1"])
    version = learning_log(ctx).latest().version
    # Another process publishes the next version (same log, same bank).
    script = (f"import json; from memento.graph import Context; from memento.memory.learner import learn_pending, "
              f"learning_log; from memento.memory.resources import case_bank_for, release_case_banks\n"
              f"ctx = Context(data_dir={ctx.data_dir!r}, checkpointer={str(shared)!r}, retriever_steps=1)\n"
              f"log = learning_log(ctx)\n"
              f"log.record('other', {{'task_id': 'mine', 'ids': ['old0'], 'rewards': [0.0], 'weights': None, "
              f"'mismatch': [[0] * 64], 'steps': 1, 'shown': None}}, 1)\n"
              f"print(json.dumps(learn_pending(ctx, case_bank_for(ctx))))")
    from memento.memory.resources import release_case_banks

    release_case_banks()  # the other process opens the same embedded bank folder
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["version"] == version + 1
    assert retriever_for(ctx).version == version  # not yet looked
    assert current_retriever(ctx).version == version + 1
    assert current_retriever(ctx).updates == 2


def test_two_banks_in_one_database_keep_their_own_learners(tmp_path):
    shared = str(tmp_path / "one.sqlite")
    first = Context(data_dir=str(tmp_path / "a"), checkpointer=shared, retriever_steps=1)
    second = Context(data_dir=str(tmp_path / "b"), checkpointer=shared, retriever_steps=1)
    for ctx, runs in ((first, 3), (second, 1)):
        bank = case_bank_for(ctx)
        shown = _shown(bank, 2)
        for i in range(runs):
            bank.write(Case(id=f"r{i}", task=f"What is {i} - 1?", plan=["subtract"], final_answer=str(i - 1),
                            reward=1.0))
            learn_from_run(ctx, bank, bank.get(f"r{i}"), shown, cited=["old0", "old1"])
    assert (learning_log(first).status()["transitions"], learning_log(second).status()["transitions"]) == (6, 2)
    assert (learning_log(first).status()["version"], learning_log(second).status()["version"]) == (3, 1)
    assert retriever_for(first).updates == 3 and retriever_for(second).updates == 1


def test_retriever_status_and_run_json_report_transitions(tmp_path):
    data = str(tmp_path / "data")

    def memento(*args):
        return subprocess.run([sys.executable, "-m", "memento.cli.main", *args, "--data-dir", data, "--json"],
                              capture_output=True, text=True, timeout=300)

    empty = memento("retriever", "status")
    assert empty.returncode == 0 and json.loads(empty.stdout)["transitions"] == 0
    outcomes = []
    for task, truth in (("What is 17 * 23 + 4?", "395"), ("What is 17 * 23 + 5?", "396")):
        done = memento("run", task, "--ground-truth", truth)
        assert done.returncode == 0, done.stderr
        outcomes.append(json.loads(done.stdout))
    assert outcomes[0]["transitions"] == 0 and outcomes[1]["transitions"] >= 1  # the first saw no case
    status = json.loads(memento("retriever", "status").stdout)
    assert status["transitions"] == status["learned"] == outcomes[1]["transitions"]
    assert status["version"] == 1 and status["runs"] == 2


def test_a_postgres_url_password_is_redacted_everywhere_it_is_shown():
    url = "postgresql://team:pa55word@db.example:5432/memento?sslmode=require"
    assert redact_url(url) == "postgresql://team:***@db.example:5432/memento?sslmode=require"
    assert redact_url("postgresql://team@db/x") == "postgresql://team@db/x"
    assert "pa55word" not in redact_text(f"could not connect to {url}: refused")
    assert redact_url("postgresql://team@db/x?sslmode=require&password=pa55word") == \
        "postgresql://team@db/x?sslmode=require&password=***"
    assert not Context(checkpointer=url).checkpoint_path().name.startswith("postgres")
    assert Context(checkpointer=url).checkpointer_target() == url
    assert Context(checkpointer="/tmp/x.sqlite").checkpointer_target() == "/tmp/x.sqlite"


def test_a_dedicated_learner_trains_what_workers_only_recorded(tmp_path):
    ctx = Context(data_dir=str(tmp_path / "data"), retriever_steps=2, learn_after_run=False)
    bank = case_bank_for(ctx)
    shown = _shown(bank, 3)
    for i in range(4):
        bank.write(Case(id=f"w{i}", task=f"What is {i} * 9?", plan=["multiply"], final_answer=str(9 * i), reward=1.0))
        assert learn_from_run(ctx, bank, bank.get(f"w{i}"), shown, cited=["old1"])["transitions"] == 1
    status = learning_log(ctx).status()
    assert (status["transitions"], status["learned"], status["pending"], status["version"]) == (4, 0, 4, 0)
    assert retriever_for(ctx).updates == 0 and bank.get("old1") is not None
    learned = learn_pending(ctx, bank)  # what `memento retriever learn` does
    assert learned["runs"] == 4 and learned["version"] == 1
    assert learning_log(ctx).status()["pending"] == 0 and retriever_for(ctx).updates == 4 * 2


def test_a_learners_turn_that_fails_leaves_no_trace_and_the_next_learns_once(tmp_path, monkeypatch):
    from memento.memory import learner

    ctx = Context(data_dir=str(tmp_path / "data"), retriever_steps=3)
    bank = case_bank_for(ctx)
    shown = _shown(bank, 2)
    bank.write(Case(id="first", task="What is 4 * 4?", plan=["multiply"], final_answer="16", reward=1.0))
    learn_from_run(ctx, bank, bank.get("first"), shown, cited=["old0"])
    assert retriever_for(ctx).updates == 3
    publish = learner.LearningSession.publish

    def dropped(self, *args, **kwargs):  # the connection drops at the publish: the turn rolls back
        raise learner.LearnerError("the learning log failed: connection lost")

    monkeypatch.setattr(learner.LearningSession, "publish", dropped)
    bank.write(Case(id="second", task="What is 5 * 5?", plan=["multiply"], final_answer="25", reward=1.0))
    with pytest.raises(learner.LearnerError):
        learn_from_run(ctx, bank, bank.get("second"), shown, cited=["old1"])
    status = learning_log(ctx).status()
    # recorded, not learned; 3 transitions: the first run's cited old0 and the success it passed over (old1, at 0)
    assert (status["version"], status["transitions"], status["pending"]) == (1, 3, 1)
    monkeypatch.setattr(learner.LearningSession, "publish", publish)
    assert learn_pending(ctx, bank)["version"] == 2
    # Learned once from the published weights: the failed turn's in-memory steps were dropped.
    assert retriever_for(ctx).updates == 6 and learning_log(ctx).status()["pending"] == 0
    assert sorted(retriever_for(ctx).episodes) == ["first", "second"]


def test_an_unreachable_learning_log_is_one_line_without_the_password(tmp_path):
    from memento.bench.servers import free_port

    url = f"postgresql://team:pa55word@127.0.0.1:{free_port()}/memento"
    done = subprocess.run([sys.executable, "-m", "memento.cli.main", "retriever", "status", "--checkpointer", url,
                           "--data-dir", str(tmp_path / "d"), "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "pa55word" not in done.stdout + done.stderr
    error = json.loads(done.stdout)["error"]
    assert error.startswith("cannot open the learning log at postgresql://team:***@127.0.0.1:")
    assert "start the database, or fix the checkpointer setting" in error and "\n" not in error
