"""`langgraph dev` serves the module-level graph; a run over the LangGraph server API completes."""

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("langgraph_api", reason="langgraph-cli[inmem] is not installed")
from langgraph.pregel.remote import RemoteGraph  # noqa: E402
from langgraph.types import Command  # noqa: E402
from langgraph_sdk import get_client, get_sync_client  # noqa: E402
from langgraph_sdk.errors import (  # noqa: E402
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
)

from memento.bench.servers import stop_group  # noqa: E402
from memento.graph import NODES  # noqa: E402

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def langgraph_dev(folder: Path, **env: str):
    """`langgraph dev` on a free loopback port, with the operator's settings in its environment."""
    port = _free_port()
    cli = shutil.which("langgraph", path=os.path.dirname(sys.executable))
    env = {**os.environ, "LANGGRAPH_CLI_NO_ANALYTICS": "1", "LANGGRAPH_NO_VERSION_CHECK": "true",
           "MEMENTO_DATA_DIR": str(folder / "data"), **env}
    proc = subprocess.Popen([cli, "dev", "--port", str(port), "--no-browser", "--no-reload",
                             "--config", str(REPO / "langgraph.json")], cwd=folder, env=env,
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
        stop_group(proc, signal.SIGTERM, 30)


@pytest.fixture
def server(tmp_path):
    with langgraph_dev(tmp_path) as url:
        yield url


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
                                             input={"task": "What is 6 * 7?", "ground_truth": "42"}):
            if part.event == "updates":
                nodes += list(part.data)
        state = await client.threads.get_state(thread["thread_id"])
        return nodes, state["values"]

    nodes, values = asyncio.run(scenario())
    assert [n for n in nodes if n in NODES] == ["retrieve_cases", "plan", "execute_subtask", "replan", "write_case"]
    assert values["final_answer"] == "42" and values["reward"] == 1.0


def test_approvals_over_the_server_with_the_sdk_and_remote_graph(server, tmp_path):
    # The policy comes with each run as its context, as Studio sends it; the data folder is the server's.
    context = {"approval": {"plan": True, "case": True}}

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


class Listener:
    """A loopback HTTP listener that records every request it gets (it should get none)."""

    def __init__(self):
        import http.server
        import threading

        self.requests: list[str] = []
        seen = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self):
                seen.append(f"{self.command} {self.path} {self.headers.get('Authorization')}")
                self.send_response(500)
                self.end_headers()

            do_GET = do_POST = _any

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_caller_chooses_its_own_run_settings_and_nothing_of_the_operators(server, tmp_path, monkeypatch):
    planted = tmp_path / "planted-by-caller"
    listener = Listener()
    attacks = {
        "mcp_servers": {"x": {"transport": "stdio", "command": "/bin/sh", "args": ["-c", f"id > {planted}"]}},
        "planner_base_url": listener.url,
        "planner_api_key_env": "HOME",
        "data_dir": str(tmp_path / "elsewhere"),
        "judge_model": "openai-compatible:x",
        "retriever_path": str(tmp_path / "stolen.pt"),
    }

    async def scenario():
        client = get_client(url=server)
        await ready(client)
        refused, runs = {}, []
        task = {"task": "What is 6 * 7?", "ground_truth": "42"}
        for field, value in attacks.items():
            thread = (await client.threads.create())["thread_id"]
            for road in ({"context": {"top_k": 2, field: value}}, {"config": {"configurable": {field: value}}}):
                try:
                    await client.runs.create(thread, "memento", input=task, **road)
                except Exception as exc:  # noqa: BLE001 - the refusal is the point
                    refused.setdefault(field, []).append(f"{type(exc).__name__}: {exc}")
            runs += await client.runs.list(thread)
        thread = (await client.threads.create())["thread_id"]
        done = await client.runs.wait(thread, "memento", input=task,
                                      context={"top_k": 2, "retrieval_mode": "utility", "max_cycles": 2})
        bounded = []
        for context in ({"top_k": 10_000}, {"retrieval_temperature": "NaN"}, {"max_cycles": True},
                        {"model_profile": "gpt-unknown"}, {"approval": {"plan": "yes"}}):
            try:
                await client.runs.create(thread, "memento", input=task, context=context)
            except Exception as exc:  # noqa: BLE001
                bounded.append(str(exc))
        return refused, runs, done, bounded

    try:
        refused, runs, done, bounded = asyncio.run(scenario())
    finally:
        listener.close()
    for field in attacks:
        assert len(refused.get(field, [])) == 2, (field, refused.get(field))  # on both roads
        assert all("BadRequest" in e and f"'{field}'" in e and "operator" in e for e in refused[field]), refused[field]
    assert runs == []  # no run was even created
    assert not planted.exists()  # the would-be command never ran
    assert listener.requests == []  # and no secret went anywhere
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "stolen.pt").exists()
    assert done["final_answer"] == "42" and done["reward"] == 1.0  # a caller's own fields still work
    assert len(bounded) == 5 and "at most 16" in bounded[0] and "model profile" in bounded[3]


def test_callers_present_tokens_and_see_only_their_own_threads(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "numbers.txt").write_text("apples 12 pears 30 plums 7\n")
    (inbox / "link.txt").symlink_to("/etc/passwd")
    config = tmp_path / "server.toml"
    config.write_text(f'[server]\ninput_roots = ["{inbox}"]\n')
    with langgraph_dev(tmp_path, MEMENTO_API_TOKEN="alice:token-a, token-b", MEMENTO_CONFIG=str(config)) as url:
        alice = get_client(url=url, headers={"Authorization": "Bearer token-a"})
        bob = get_client(url=url, headers={"Authorization": "Bearer token-b"})
        nobody = get_client(url=url)
        stranger = get_client(url=url, headers={"Authorization": "Bearer not-a-token"})

        async def scenario():
            await ready(alice)
            for client, why in ((nobody, "needs a token"), (stranger, "not accepted")):
                with pytest.raises(AuthenticationError, match=why):
                    await client.threads.create()
            thread = (await alice.threads.create(metadata={"owner": "bob"}))["thread_id"]
            await alice.runs.wait(thread, "memento", input={"task": "What is 6 * 7?", "ground_truth": "42"},
                                  context={"approval": {"case": True}})
            mine = await alice.threads.get(thread)
            with pytest.raises(NotFoundError):
                await bob.threads.get(thread)
            with pytest.raises(NotFoundError):
                await bob.threads.get_state(thread)
            with pytest.raises((NotFoundError, PermissionDeniedError)):
                await bob.runs.create(thread, "memento", command={"resume": {"decisions": [{"type": "approve"}]}})
            # Knowing a thread's id (it is in every case's thread_id) gives nothing: "create or return" refuses.
            with pytest.raises((ConflictError, NotFoundError, PermissionDeniedError)):
                await bob.threads.create(thread_id=thread, if_exists="do_nothing")
            # A run that creates its thread makes it the caller's, whatever owner it names.
            planted = str(uuid.uuid4())
            await bob.runs.wait(planted, "memento", input={"task": "What is 1 + 1?"}, if_not_exists="create",
                                metadata={"owner": "alice"})
            with pytest.raises(NotFoundError):
                await alice.threads.get(planted)
            seen_by_bob = await bob.threads.search()
            waiting = await alice.threads.get_state(thread)
            # Files a caller attaches come only from the operator's input_roots, without links.
            attached = {}
            for path in (str(inbox / "numbers.txt"), str(inbox / "link.txt"), "/etc/passwd", str(inbox / "../server.toml")):
                other = (await alice.threads.create())["thread_id"]
                try:
                    attached[path] = await alice.runs.wait(other, "memento", input={
                        "task": "What is the total of the numbers in the attached file?", "files": [path]})
                except Exception as exc:  # noqa: BLE001 - a refused run raises its error here
                    attached[path] = {"refused": str(exc)}
                attached[path]["state"] = (await alice.threads.get_state(other))["values"]
            return mine, seen_by_bob, waiting, attached

        mine, seen_by_bob, waiting, attached = asyncio.run(scenario())
    assert mine["metadata"]["owner"] == "alice"  # stamped by the server, whatever the caller sent
    assert [t["metadata"]["owner"] for t in seen_by_bob] == [bob_identity()]  # only the thread bob made
    assert waiting["interrupts"]  # bob neither saw alice's thread nor answered its approval
    allowed, *refused = attached.values()
    assert allowed["final_answer"] == "49"
    for out in refused:
        assert "attached file" in out["refused"] and "refused" in out["refused"], out
        assert "root:" not in str(out) and not out["state"].get("results"), out  # nothing was read


def bob_identity() -> str:
    from memento.graph.tokens import accepted_tokens

    return accepted_tokens("token-b")["token-b"]


def test_a_caller_cannot_write_state_send_webhooks_or_call_from_a_web_page(server, tmp_path):
    import httpx

    victim = tmp_path / "victim"
    victim.mkdir()

    async def scenario():
        client = get_client(url=server)
        await ready(client)
        thread = (await client.threads.create())["thread_id"]
        refused = []
        goto = {"node": "write_case", "input": {"task": "x", "final_answer": "x", "run_ground_truth": "x",
                                                 "case_id": str(victim)}}
        for road in ({"command": {"goto": goto}}, {"command": {"update": {"run_files": ["/etc/passwd"]}}},
                     {"command": {"resume": {"decisions": []}, "goto": "write_case"}},
                     {"input": {"task": "What is 1 + 1?"}, "webhook": "http://10.0.0.5:8080/hook"}):
            with pytest.raises(BadRequestError) as error:
                await client.runs.create(thread, "memento", **road)
            refused.append(str(error.value))
        with pytest.raises(PermissionDeniedError):
            await client.threads.update_state(thread, {"case_id": str(victim)}, as_node="retrieve_cases")
        with pytest.raises(PermissionDeniedError):
            await client.threads.update(thread, metadata={"owner": "someone-else"})
        return refused

    refused = asyncio.run(scenario())
    assert victim.exists()  # nothing reached write_case with a planted case id
    assert "command.resume" in refused[0] and "webhook" in refused[3]
    # Without a token, only requests addressed to localhost from localhost are answered: Studio's
    # site and its header only where the operator opts in (MEMENTO_ALLOW_STUDIO=1, below).
    studio = {"x-auth-scheme": "langsmith"}
    threads_before = httpx.post(f"{server}/threads/search", json={}).json()
    for headers in ({"Origin": "https://attacker.example"}, {"Host": "attacker.example"},
                    {"Origin": "http://127.0.0.1.attacker.example"}, {"Origin": "https://smith.langchain.com"},
                    studio, {**studio, "Origin": "https://attacker.example"},
                    {**studio, "Origin": "https://smith.langchain.com"}, {**studio, "Authorization": "Bearer any"}):
        for path in ("/threads/search", "/threads"):
            answer = httpx.post(f"{server}{path}", json={}, headers=headers)
            assert answer.status_code == 403, (path, headers, answer.status_code)
        assert httpx.get(f"{server}/metrics", headers=headers).status_code == 403, headers
    assert "MEMENTO_ALLOW_STUDIO=1" in httpx.post(f"{server}/threads", json={}, headers=studio).json()["detail"]
    for headers in ({}, {"Origin": "http://localhost:3000"}):
        assert httpx.post(f"{server}/threads/search", json={}, headers=headers).status_code == 200, headers
        assert httpx.get(f"{server}/metrics", headers=headers).status_code == 200, headers
    # A cross-site page is not even allowed to send the header (or anything else): the preflight fails.
    assert not preflight_allows(server, "https://attacker.example", "x-auth-scheme,content-type")
    assert not preflight_allows(server, "http://localhost.attacker.example", "content-type")
    assert preflight_allows(server, "https://smith.langchain.com", "x-auth-scheme,content-type")
    assert preflight_allows(server, "http://localhost:3000", "authorization,content-type")
    assert httpx.post(f"{server}/threads/search", json={}).json() == threads_before  # no refused request made one


def preflight_allows(url: str, origin: str, headers: str) -> bool:
    """Whether the server's CORS preflight lets a page from `origin` POST with `headers`."""
    import httpx

    answer = httpx.options(f"{url}/threads", headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                                       "Access-Control-Request-Headers": headers})
    allowed = answer.headers.get("access-control-allow-origin") in (origin, "*")
    assert allowed == (answer.status_code == 200), (origin, answer.status_code, answer.text)
    return allowed and set(headers.split(",")) <= set(answer.headers.get("access-control-allow-headers", "").split(","))


def test_studio_on_this_machine_only_where_the_operator_allows_it(tmp_path):
    import httpx

    with langgraph_dev(tmp_path, MEMENTO_ALLOW_STUDIO="1") as url:
        asyncio.run(ready(get_client(url=url)))
        studio = {"x-auth-scheme": "langsmith", "Origin": "https://smith.langchain.com"}
        # Studio may send its own LangSmith token: it is not this server's, and the local developer it is.
        for headers in (studio, {**studio, "Authorization": "Bearer a-langsmith-token"},
                        {**studio, "Origin": "http://localhost:5173"}, {"Origin": "https://smith.langchain.com"}):
            made = httpx.post(f"{url}/threads", json={"metadata": {"owner": "someone"}}, headers=headers)
            assert made.status_code == 200 and made.json()["metadata"]["owner"] == "local-developer", (headers, made.text)
        ran = httpx.post(f"{url}/threads/{made.json()['thread_id']}/runs/wait", headers=studio,
                         json={"assistant_id": "memento", "input": {"task": "What is 6 * 7?", "ground_truth": "42"}},
                         timeout=120)
        assert ran.status_code == 200 and ran.json()["final_answer"] == "42"
        # Still only this machine's requests: a web page elsewhere, or a request addressed to another name.
        for headers in ({**studio, "Origin": "https://attacker.example"}, {**studio, "Host": "attacker.example"},
                        {"x-auth-scheme": "langsmith", "Origin": "null"}):
            refused = httpx.post(f"{url}/threads", json={}, headers=headers)
            assert refused.status_code == 403 and "MEMENTO_ALLOW_STUDIO=1" in refused.json()["detail"], headers
            assert httpx.get(f"{url}/metrics", headers=headers).status_code == 403
        assert not preflight_allows(url, "https://attacker.example", "x-auth-scheme,content-type")


SLOW_CALCULATOR = '''\
import sys
import time
from pathlib import Path

from mcp.server.fastmcp import FastMCP

folder = Path(sys.argv[1])
server = FastMCP("slow-math")


@server.tool()
def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression."""
    (folder / "entered").touch()
    deadline = time.monotonic() + 120
    while not (folder / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return "42"


server.run()
'''


def test_a_token_server_answers_studio_and_metrics_only_with_a_token_and_owners_cancel_their_runs(tmp_path):
    import httpx

    # The operator's calculator holds its call until the test releases it, so a run is still running.
    (tmp_path / "slow_math.py").write_text(SLOW_CALCULATOR)
    config = tmp_path / "server.toml"
    config.write_text(f'[mcp_servers.math]\ntransport = "stdio"\ncommand = "{{python}}"\n'
                      f'args = ["{tmp_path / "slow_math.py"}", "{tmp_path}"]\n')
    with langgraph_dev(tmp_path, MEMENTO_API_TOKEN="alice:token-a,bob:token-b", MEMENTO_CONFIG=str(config)) as url:
        alice = get_client(url=url, headers={"Authorization": "Bearer token-a"})
        bob = get_client(url=url, headers={"Authorization": "Bearer token-b"})
        studio = {"x-auth-scheme": "langsmith"}
        local = {"Origin": "https://smith.langchain.com"}
        for headers, status in (({**studio}, 401), ({**studio, **local}, 401), ({**studio, "Authorization": "Bearer nope"}, 401),
                                ({**studio, "Authorization": "Bearer token-a"}, 200)):
            assert httpx.post(f"{url}/threads", json={}, headers=headers).status_code == status, headers
            assert httpx.get(f"{url}/metrics", headers=headers).status_code == status, headers
        for headers, status in (({}, 401), ({"Authorization": "Bearer nope"}, 401), ({"Authorization": "Bearer token-b"}, 200)):
            for path in ("/metrics", "/metrics?format=json", "/metrics/"[:None if status == 401 else -1]):
                answer = httpx.get(f"{url}{path}", headers=headers)
                assert answer.status_code == status, (path, headers, answer.status_code)
        metrics = httpx.get(f"{url}/metrics?format=json", headers={"Authorization": "Bearer token-a"}).json()
        assert "queue" in metrics
        threads = httpx.post(f"{url}/threads/search", json={}, headers={"Authorization": "Bearer token-a"}).json()
        assert len(threads) == 1  # only the one made with alice's token; none by the refused requests

        async def scenario():
            await ready(alice)
            thread = (await alice.threads.create())["thread_id"]
            run = await alice.runs.create(thread, "memento", input={"task": "What is 6 * 7?", "ground_truth": "42"})
            for _ in range(600):  # until the run is inside the slow tool call
                if (tmp_path / "entered").exists():
                    break
                await asyncio.sleep(0.1)
            assert (await alice.runs.get(thread, run["run_id"]))["status"] == "running"
            # Another caller can neither cancel it by its ids nor by "all my running runs".
            with pytest.raises(NotFoundError):
                await bob.runs.cancel(thread, run["run_id"])
            with pytest.raises(NotFoundError):
                await bob.runs.cancel_many(status="running")
            with pytest.raises(NotFoundError):
                await bob.runs.cancel_many(thread_id=thread, run_ids=[run["run_id"]], action="rollback")
            after_bob = (await alice.runs.get(thread, run["run_id"]))["status"]
            # The owner still may not write the thread's state or metadata.
            with pytest.raises(PermissionDeniedError):
                await alice.threads.update_state(thread, {"case_id": "planted"}, as_node="retrieve_cases")
            with pytest.raises(PermissionDeniedError):
                await alice.threads.update(thread, metadata={"owner": "bob"})
            cancelled = httpx.post(f"{url}/threads/{thread}/runs/{run['run_id']}/cancel",
                                   headers={"Authorization": "Bearer token-a"})
            final = (await alice.runs.get(thread, run["run_id"]))["status"]
            # Cancelling "all my pending and running runs" reaches the caller's own runs only.
            runs = []
            for client in (alice, bob):
                other = (await client.threads.create())["thread_id"]
                runs.append((client, other, (await client.runs.create(other, "memento", input={"task": "1 + 2?"}))["run_id"]))
            everything = httpx.post(f"{url}/runs/cancel", json={"status": "all"}, headers={"Authorization": "Bearer token-a"})
            statuses = [(await client.runs.get(other, run_id))["status"] for client, other, run_id in runs]
            (tmp_path / "release").touch()
            return after_bob, cancelled.status_code, final, everything.status_code, statuses, await alice.threads.get(thread)

        try:
            after_bob, cancelled, final, everything, statuses, thread = asyncio.run(scenario())
        finally:
            (tmp_path / "release").touch()
    assert after_bob == "running"
    assert cancelled == 202 and final == "interrupted"
    assert everything == 204 and statuses[0] == "interrupted" and statuses[1] in ("pending", "running"), statuses
    assert thread["metadata"]["owner"] == "alice"
