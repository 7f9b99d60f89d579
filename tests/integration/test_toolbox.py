"""How the executor reaches its tools: held sessions, crash recovery, configuration."""

import socket
import subprocess
import sys
import time

import pytest

from memento.graph.context import ConfigError
from memento.nodes.resources import case_bank_for
from memento.nodes.toolbox import TOOLBOXES, Toolbox, ToolboxPool, ToolServerError
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


def test_a_third_party_http_server_by_configuration_alone(toolbox_for):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "memento.mcp_servers.math", "--transport", "streamable-http",
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        box = toolbox_for({"remote-math": {"transport": "streamable_http", "url": f"http://127.0.0.1:{port}/mcp"}})
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
