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
from langgraph_sdk import get_client  # noqa: E402

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


def test_run_over_the_server_api(server, tmp_path):
    async def scenario():
        client = get_client(url=server)
        for _ in range(60):  # the graph loads after the port opens
            try:
                assistants = await client.assistants.search(graph_id="memento")
                if assistants:
                    break
            except Exception:
                pass
            await asyncio.sleep(1)
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
    assert nodes == ["retrieve_cases", "plan", "execute_subtask", "replan", "write_case"]
    assert values["final_answer"] == "42" and values["reward"] == 1.0
