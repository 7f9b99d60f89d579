"""`langgraph dev` serves the module-level graph; a run over the LangGraph server API completes."""

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("langgraph_api", reason="langgraph-cli[inmem] is not installed")
from langgraph.pregel.remote import RemoteGraph  # noqa: E402
from langgraph.types import Command  # noqa: E402
from langgraph_sdk import get_client, get_sync_client  # noqa: E402

from memento.graph import NODES  # noqa: E402

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = _free_port()
    cli = shutil.which("langgraph", path=os.path.dirname(sys.executable))
    env = {**os.environ, "LANGGRAPH_CLI_NO_ANALYTICS": "1", "LANGGRAPH_NO_VERSION_CHECK": "true"}
    proc = subprocess.Popen([cli, "dev", "--port", str(port), "--no-browser", "--no-reload",
                             "--config", str(REPO / "langgraph.json")], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert proc.poll() is None, "langgraph dev exited early"
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def ready(client) -> None:
    for _ in range(90):  # the graph loads after the port opens
        try:
            if await client.assistants.search(graph_id="memento"):
                return
        except Exception:
            pass
        await asyncio.sleep(1)
    raise AssertionError("the memento graph never appeared on the server")


def test_run_over_the_server_api(server, tmp_path):
    async def scenario():
        client = get_client(url=server)
        await ready(client)
        thread = await client.threads.create()
        nodes = []
        async for part in client.runs.stream(thread["thread_id"], "memento", stream_mode="updates",
                                             input={"task": "What is 6 * 7?", "ground_truth": "42"},
                                             context={"data_dir": str(tmp_path / "data")}):
            if part.event == "updates":
                nodes += list(part.data)
        state = await client.threads.get_state(thread["thread_id"])
        return nodes, state["values"]

    nodes, values = asyncio.run(scenario())
    assert [n for n in nodes if n in NODES] == ["retrieve_cases", "plan", "execute_subtask", "replan", "write_case"]
    assert values["final_answer"] == "42" and values["reward"] == 1.0


def test_approvals_over_the_server_with_the_sdk_and_remote_graph(server, tmp_path):
    # The policy and the data folder come with each run as its context, as Studio sends them.
    context = {"data_dir": str(tmp_path / "data"), "approval": {"plan": True, "case": True}}

    async def sdk():
        client = get_client(url=server)
        await ready(client)
        thread = (await client.threads.create())["thread_id"]
        await client.runs.wait(thread, "memento", input={"task": "What is 6 * 7?", "ground_truth": "42"},
                               context=context)
        state = await client.threads.get_state(thread)
        asked = [state["interrupts"][0]["value"]]
        events = []
        async for part in client.runs.stream(thread, "memento", command={"resume": {"decisions": [{"type": "approve"}]}},
                                             context=context, stream_mode=["updates", "custom"]):
            if part.event == "custom":
                events.append(part.data["event"])
        state = await client.threads.get_state(thread)
        asked.append(state["interrupts"][0]["value"])
        edit = {"type": "edit", "edited_action": {"name": "write_case", "args": {"reward": 0.5}}}
        await client.runs.wait(thread, "memento", command={"resume": {"decisions": [edit]}}, context=context)
        return asked, events, (await client.threads.get_state(thread))

    asked, events, state = asyncio.run(sdk())
    assert [a["point"] for a in asked] == ["plan", "case"]
    assert asked[0]["action_requests"][0]["args"]["subtasks"] == ["Evaluate 6 * 7 with the calculator."]
    assert asked[0]["review_configs"][0]["allowed_decisions"] == ["approve", "edit", "reject"]
    assert asked[1]["action_requests"][0]["args"]["reward"] == 1.0
    assert {"node_started", "subtask_started", "tool_call", "tool_result", "approval_requested"} <= set(events)
    assert not state["interrupts"] and state["values"]["reward"] == 0.5

    remote = RemoteGraph("memento", url=server)
    thread = get_sync_client(url=server).threads.create()["thread_id"]
    config = {"configurable": {"thread_id": thread}}
    first = remote.invoke({"task": "What is 6 * 8?", "ground_truth": "48"}, config, context=context)
    assert first["__interrupt__"][0]["value"]["point"] == "plan"
    assert remote.get_state(config).next == ("review_plan",)
    chunks = list(remote.stream(Command(resume={"decisions": [{"type": "approve"}]}), config, context=context,
                                stream_mode="updates"))
    assert any("execute_subtask" in chunk for chunk in chunks)
    assert remote.get_state(config).next == ("write_case",)
    remote.invoke(Command(resume={"decisions": [{"type": "reject", "message": "not worth keeping"}]}), config,
                  context=context)
    final = remote.get_state(config)
    assert not final.next and final.values["final_answer"] == "48" and final.values["case_discarded"] is True
