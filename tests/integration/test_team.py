"""From one laptop to a team, with the real servers: worker processes sharing one PostgreSQL
(checkpoints and the learning log) and one `chroma run` server (the case bank)."""

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

pytestmark = pytest.mark.slow

TASKS = [f"What is {a} * {b} + {c}?" for a, b, c in
         [(17, 23, 4), (12, 11, 9), (31, 3, 8), (17, 23, 5), (14, 15, 2), (9, 9, 9), (21, 4, 6), (13, 7, 1),
          (17, 22, 4), (12, 12, 3), (40, 2, 2), (6, 7, 8)]]


def _truth(task: str) -> str:
    a, _, b, _, c = task.removeprefix("What is ").rstrip("?").split()
    return str(int(a) * int(b) + int(c))


def _memento(*args, env, timeout=300):
    return subprocess.run([sys.executable, "-m", "memento.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def _env(postgres_url):
    return {**os.environ, "MEMENTO_CHECKPOINTER": postgres_url, "OMP_NUM_THREADS": "1"}


def _config(tmp_path, chroma_url, **extra):
    values = {"chroma_url": chroma_url, "retrieval_mode": "parametric", "retrieval_temperature": 0.0, **extra}
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = tmp_path / "team.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_four_workers_share_checkpoints_cases_and_one_learner(tmp_path, postgres_url, chroma_server):
    config = _config(tmp_path, chroma_server.url)
    env = _env(postgres_url)
    password = postgres_url.split(":")[2].split("@")[0]

    def worker(n):
        outs = []
        for task in TASKS[n::4]:  # three tasks each, one after another, as a worker takes its queue
            done = _memento("run", task, "--ground-truth", _truth(task), "--config", config,
                            "--data-dir", str(tmp_path / f"worker{n}"), "--json", env=env)
            assert done.returncode == 0, done.stderr
            assert password not in done.stdout + done.stderr
            outs.append(json.loads(done.stdout))
        return outs

    with ThreadPoolExecutor(4) as pool:
        outcomes = [o for outs in pool.map(worker, range(4)) for o in outs]
    assert len(outcomes) == 12

    # 12 cases, none duplicated, all in the one Chroma server.
    listed = _memento("cases", "list", "--config", config, "--data-dir", str(tmp_path / "reader"), "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    cases = json.loads(listed.stdout)["cases"]
    assert len(cases) == 12 and len({c["id"] for c in cases}) == 12
    assert sorted(c["task"] for c in cases) == sorted(TASKS)
    assert sorted(c["id"] for c in cases) == sorted(o["case_id"] for o in outcomes)
    assert not (tmp_path / "worker0" / "chroma").exists()  # nothing went to an embedded bank

    # The 12 threads, listed from Postgres by a process that ran none of them.
    threads = _memento("threads", "--data-dir", str(tmp_path / "reader"), "--json", env=env)
    assert threads.returncode == 0, threads.stderr
    listed_threads = json.loads(threads.stdout)
    assert listed_threads["count"] == 12
    assert {t["thread_id"] for t in listed_threads["threads"]} == {o["thread_id"] for o in outcomes}
    assert {t["status"] for t in listed_threads["threads"]} == {"done"}

    # Every transition the runs reported is in the log, and the learner has learned them all.
    status = _memento("retriever", "status", "--config", config, "--data-dir", str(tmp_path / "reader"), "--json",
                      env=env)
    assert status.returncode == 0, status.stderr
    learner = json.loads(status.stdout)
    reported = sum(o["transitions"] for o in outcomes)
    assert reported > 0
    assert learner["transitions"] == reported and learner["runs"] == 12
    assert learner["learned"] == reported and learner["pending"] == 0
    assert learner["version"] >= 1

    # Caught up: each worker now ranks with the newest version (and learns nothing more).
    after = []
    for n in range(4):
        done = _memento("run", TASKS[n], "--ground-truth", _truth(TASKS[n]), "--config", config,
                        "--data-dir", str(tmp_path / f"worker{n}"), "--json", env=env)
        assert done.returncode == 0, done.stderr
        after.append(json.loads(done.stdout))
    versions = [o["retriever_version"] for o in after]
    assert versions[0] >= learner["version"]
    final = json.loads(_memento("retriever", "status", "--config", config, "--data-dir", str(tmp_path / "reader"),
                                "--json", env=env).stdout)
    # Each ranked with what was newest when it started: never older than the version before it.
    assert versions == sorted(versions) and versions[-1] <= final["version"]
    assert final["transitions"] == reported + sum(o["transitions"] for o in after) == final["learned"]

    # The password is nowhere in what was stored: checkpoints (with their metadata) and cases.
    with psycopg.connect(postgres_url) as conn:
        stored = conn.execute("SELECT string_agg(metadata::text, '') FROM checkpoints").fetchone()[0]
        blobs = conn.execute("SELECT count(*) FROM checkpoint_blobs WHERE position(%s::bytea in blob) > 0",
                             (password.encode(),)).fetchone()[0]
    assert stored and "memento_settings" in stored and password not in stored and blobs == 0
    assert password not in listed.stdout


def test_a_killed_run_is_resumed_by_another_process_with_one_case(tmp_path, postgres_url, chroma_server,
                                                                 numbers_file):
    config = _config(tmp_path, chroma_server.url, retrieval_mode="similarity")
    env = _env(postgres_url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "memento.cli.main", "run", "What is the total of the numbers in the attached file?",
         "--file", numbers_file, "--ground-truth", "49", "--thread-id", "killme", "--config", config,
         "--data-dir", str(tmp_path / "first")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        for line in proc.stdout:
            if line.strip().startswith("subtask 1/1 (cycle 2)"):
                os.killpg(proc.pid, signal.SIGKILL)
                break
        proc.stdout.read()
    finally:
        proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL

    # Another process, another data folder: it finds the run in Postgres and finishes it.
    waiting = _memento("threads", "--data-dir", str(tmp_path / "second"), "--json", env=env)
    assert [(t["thread_id"], t["status"]) for t in json.loads(waiting.stdout)["threads"]] == [("killme", "running")]
    done = _memento("resume", "killme", "--config", config, "--data-dir", str(tmp_path / "second"), "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert "resuming thread killme at execute_subtask" in done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["final_answer"] == "49" and len(outcome["results"]) == 2
    again = _memento("resume", "killme", "--config", config, "--data-dir", str(tmp_path / "third"), "--json", env=env)
    assert again.returncode == 0 and "already finished" in again.stderr
    cases = json.loads(_memento("cases", "list", "--config", config, "--data-dir", str(tmp_path / "second"), "--json",
                                env=env).stdout)["cases"]
    assert [(c["thread_id"], c["final_answer"]) for c in cases] == [("killme", "49")]


def test_servers_down_or_refusing_give_one_line_and_store_nothing(tmp_path, postgres_url, chroma_server):
    from memento.bench.servers import free_port

    env = _env(postgres_url)
    # The Chroma server down: one line naming it; no thread, no case.
    down = _config(tmp_path, f"http://127.0.0.1:{free_port()}")
    run = _memento("run", "What is 2 + 2?", "--config", down, "--data-dir", str(tmp_path / "d"), "--json", env=env)
    assert run.returncode != 0
    error = json.loads(run.stdout.strip().splitlines()[-1])["error"]
    assert "cannot reach the Chroma server at http://127.0.0.1:" in error and "Traceback" not in run.stderr
    # The Postgres checkpointer down: one line, without the password.
    password = postgres_url.split(":")[2].split("@")[0]
    dead = f"postgresql://memento:{password}@127.0.0.1:{free_port()}/postgres"
    failed = _memento("threads", "--checkpointer", dead, "--json", env=env)
    assert failed.returncode != 0 and password not in failed.stdout + failed.stderr
    assert "cannot reach the Postgres checkpointer at postgresql://memento:***@127.0.0.1:" in \
        json.loads(failed.stdout)["error"]
    # A malformed URL.
    bad = _memento("threads", "--checkpointer", "postgresql://memento@127.0.0.1:notaport/x", "--json", env=env)
    assert bad.returncode == 2 and "is malformed" in json.loads(bad.stdout)["error"]
    # A collection made with another encoder: refused, nothing written to it.
    from memento.memory.case_bank import CaseBank, CaseBankError, ServerAccess
    from memento.memory.encoder import TextEncoder

    CaseBank(chroma_server.url, TextEncoder("all-MiniLM-L6-v2"), collection="memento_cases", access=ServerAccess())
    with pytest.raises(CaseBankError, match="was embedded with encoder 'all-MiniLM-L6-v2', not the configured"):
        CaseBank(chroma_server.url, TextEncoder("some/other-encoder"), collection="memento_cases",
                 access=ServerAccess())
    # The run that met the server down is kept as failed (resumable once the server is up); nothing
    # says a case was written.
    assert "case written" not in run.stderr + run.stdout
    listed = json.loads(_memento("threads", "--data-dir", str(tmp_path / "d"), "--json", env=env).stdout)
    assert [t["status"] for t in listed["threads"]] == ["failed"]
    assert "cannot reach the Chroma server" in listed["threads"][0]["error"]


def test_a_chroma_server_behind_a_token_gets_the_token_and_a_wrong_one_is_one_line(tmp_path, chroma_server,
                                                                                   monkeypatch):
    from memento.graph import Context
    from memento.memory.case import Case
    from memento.memory.resources import case_bank_for
    from tests.fixtures.token_proxy import TokenProxy

    with TokenProxy(chroma_server.url, "s3cret-token") as proxy:
        ctx = Context(data_dir=str(tmp_path / "d"), chroma_url=proxy.url, chroma_token_env="TEAM_CHROMA_TOKEN",
                      collection="guarded_cases")
        monkeypatch.setenv("TEAM_CHROMA_TOKEN", "s3cret-token")
        bank = case_bank_for(ctx)
        bank.write(Case(id="c1", task="What is 2 + 2?", plan=["add"], final_answer="4", reward=1.0))
        assert [c.id for c in bank.retrieve("What is 2 + 3?", 1)] == ["c1"]
        assert set(proxy.seen) == {"Bearer s3cret-token"}

        # A wrong token, then none: one line each, naming the variable; the CLI says the same.
        env = {**os.environ, "TEAM_CHROMA_TOKEN": "bad-t0ken-value"}
        config = tmp_path / "guarded.toml"
        config.write_text(f'chroma_url = "{proxy.url}"\nchroma_token_env = "TEAM_CHROMA_TOKEN"\n'
                          'collection = "guarded_cases"\n', encoding="utf-8")
        for environ in (env, {k: v for k, v in env.items() if k != "TEAM_CHROMA_TOKEN"}):
            listed = _memento("cases", "list", "--config", str(config), "--data-dir", str(tmp_path / "d2"), "--json",
                              env=environ)
            assert listed.returncode == 1, listed.stdout
            error = json.loads(listed.stdout)["error"]
            assert f"the Chroma server at {proxy.url} refused" in error and "TEAM_CHROMA_TOKEN" in error
            assert "bad-t0ken-value" not in error and "\n" not in error
