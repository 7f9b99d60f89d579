"""How the executor reaches its tools: held sessions, crash recovery, configuration."""

import os
import socket
import subprocess
import sys
import time

import pytest

from memento.graph.context import ConfigError
from memento.mcp_servers.client import TOOLBOXES, Toolbox, ToolboxPool, ToolServerError
from memento.memory.resources import case_bank_for
from tests.conftest import run
from tests.integration.conftest import call, stdio

CRASHY = {"transport": "stdio", "command": sys.executable, "args": ["-m", "tests.fixtures.crashy_server"],
          "cwd": str(__import__("pathlib").Path(__file__).resolve().parents[2])}


def pid_of(box):
    return call(box, "echo", text="hi").text.split("pid ")[1].rstrip(")")


def test_one_session_is_held_for_many_calls(toolbox_for):
    box = toolbox_for({"crashy": CRASHY})
    pids = {pid_of(box) for _ in range(5)}
    assert len(pids) == 1


def test_a_crashed_server_is_restarted_once(toolbox_for, tmp_path):
    box = toolbox_for({"crashy": CRASHY})
    first = pid_of(box)
    survived = call(box, "crash_once", marker=str(tmp_path / "marker"))
    assert survived.status == "success" and survived.text == "survived"  # after one restart, the retry worked
    assert pid_of(box) != first


def test_a_server_that_crashes_again_is_reported_failed(toolbox_for):
    box = toolbox_for({"crashy": CRASHY, "math": stdio("memento.mcp_servers.math")})
    out = call(box, "crash")
    assert out.status == "error" and "stopped answering" in out.text and "restarted once already" in out.text
    later = call(box, "echo", text="anyone?")
    assert later.status == "error" and "unavailable" in later.text
    assert call(box, "calculate", expression="2 + 2").text == "4"  # other servers carry on


def test_tool_errors_are_results_not_exceptions(toolbox_for):
    box = toolbox_for({"math": stdio("memento.mcp_servers.math")})
    assert call(box, "calculate", expression="1 / 0").status == "error"
    bad_args = box.call({"name": "calculate", "args": {"nope": 1}, "id": "x"}, 1000)
    assert bad_args.status == "error" and "expression" in bad_args.text and "required" in bad_args.text
    assert call(box, "no_such_tool").status == "error"


def test_a_third_party_http_server_by_configuration_alone(toolbox_for, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("TEST_MCP_TOKEN", "tok-for-math")
    server = subprocess.Popen([sys.executable, "-m", "memento.mcp_servers.math", "--transport", "streamable-http",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "MEMENTO_MCP_TOKEN": "tok-for-math"})
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        box = toolbox_for({"remote-math": {"transport": "streamable_http", "url": f"http://127.0.0.1:{port}/mcp",
                                           "headers": {"Authorization": "Bearer ${TEST_MCP_TOKEN}"}}})
        assert call(box, "calculate", expression="6 * 7").text == "42"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_enabled_and_tools_settings(toolbox_for):
    box = toolbox_for({"math": stdio("memento.mcp_servers.math", tools=["calculate"]),
                       "code": stdio("memento.mcp_servers.code", enabled=False),
                       "documents": stdio("memento.mcp_servers.documents", tools=["list_documents"])})
    assert sorted(t.name for t in box.tools) == ["calculate", "list_documents"]


def test_a_tool_name_offered_twice_is_a_config_error():
    with pytest.raises(ConfigError, match="offered by both mcp_servers.a and mcp_servers.b"):
        Toolbox({"a": stdio("memento.mcp_servers.math"), "b": stdio("memento.mcp_servers.math")}).open()


def test_a_server_that_cannot_start_is_named():
    with pytest.raises(ToolServerError, match="cannot start MCP server 'broken'"):
        Toolbox({"broken": {"transport": "stdio", "command": sys.executable, "args": ["-c", "raise SystemExit(1)"]}}).open()


def test_pool_holds_a_box_per_run_and_closes_idle_ones():
    pool = ToolboxPool(idle_close_s=0.5)
    made = []

    def make():
        made.append(Toolbox({"math": stdio("memento.mcp_servers.math")}))
        return made[-1]

    first = pool.acquire("run-1", make)
    assert pool.acquire("run-1", make) is first and len(made) == 1
    deadline = time.monotonic() + 10
    while pool.open_runs() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pool.open_runs() == []


def test_a_run_holds_its_tools_until_it_ends(graph, ctx, numbers_file):
    out = run(graph, ctx, "What is the total of the numbers in the attached file?", files=[numbers_file])
    assert len(out["results"]) == 2 and out["final_answer"] == "49"
    assert out["case_id"] not in TOOLBOXES.open_runs()
    assert case_bank_for(ctx).count() == 1


def test_runs_share_one_server_and_each_sees_only_its_own_files(session_pool, tmp_path):
    mine, theirs = tmp_path / "mine.txt", tmp_path / "theirs.txt"
    mine.write_text("mine 1\n")
    theirs.write_text("theirs 2\n")
    servers = {"documents": stdio("memento.mcp_servers.documents")}
    with Toolbox(servers, [str(mine)], pool=session_pool) as a, Toolbox(servers, [str(theirs)], pool=session_pool) as b:
        assert len(session_pool.open_sessions()) == 1  # one server process serves both runs
        assert call(a, "read_document", path=str(mine)).text.strip() == "mine 1"
        refused = call(a, "read_document", path=str(theirs))
        assert refused.status == "error" and "outside the files this run may read" in refused.text
        assert call(b, "read_document", path=str(theirs)).text.strip() == "theirs 2"
        assert call(a, "list_documents").text.strip() == str(mine)
    assert [s.starts for s in session_pool.open_sessions()] == [1]  # still open for the next run


def test_each_run_gets_its_own_code_workspace_in_a_shared_server(session_pool, tmp_path):
    servers = {"code": stdio("memento.mcp_servers.code", "--sandbox-user", "", "--workspace-root", "{workspaces}")}
    with Toolbox(servers, [], str(tmp_path / "a"), pool=session_pool) as a, \
            Toolbox(servers, [], str(tmp_path / "b"), pool=session_pool) as b:
        assert call(a, "write_file", path="note.txt", content="from a").status == "success"
        assert "note.txt" in call(a, "list_files").text
        assert call(b, "list_files").text == "(empty)"
        assert call(b, "read_file", path="note.txt").status == "error"
        out = call(b, "run_shell", command="pwd; ls")
        assert str((tmp_path / "b").resolve()) in out.text and "note.txt" not in out.text
    assert (tmp_path / "a" / "note.txt").read_text() == "from a"


def test_sessions_outlive_a_run_and_serve_the_next(graph, ctx, numbers_file):
    from memento.mcp_servers.client import SESSIONS

    run(graph, ctx, "What is the total of the numbers in the attached file?", files=[numbers_file], thread="a")
    before = {s.key: (s.starts, s.generation) for s in SESSIONS.open_sessions()}
    assert before and all(s.users == 0 for s in SESSIONS.open_sessions())  # given back, still open
    out = run(graph, ctx, "What is the total of the numbers in the attached file?", files=[numbers_file], thread="b")
    assert out["final_answer"] == "49"
    assert {s.key: (s.starts, s.generation) for s in SESSIONS.open_sessions()} == before  # reused, not restarted


def test_a_slow_call_is_an_error_not_a_crash(toolbox_for, monkeypatch):
    from memento.mcp_servers import client

    box = toolbox_for({"crashy": CRASHY})
    first = pid_of(box)
    monkeypatch.setattr(client, "CALL_TIMEOUT_S", 1.0)
    out = call(box, "slow", seconds=4)
    assert out.status == "error" and "timed out after 1 s" in out.text
    monkeypatch.setattr(client, "CALL_TIMEOUT_S", 300.0)
    assert pid_of(box) == first  # not restarted: other runs' calls on the shared server go on
