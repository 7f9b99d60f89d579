"""Memory scopes through a real `langgraph dev` server: the identity a case is written for comes
from the caller's token, never from what it sends."""

import asyncio

import httpx
import pytest

pytest.importorskip("langgraph_api", reason="langgraph-cli[inmem] is not installed")
from langgraph_sdk import get_client  # noqa: E402
from langgraph_sdk.errors import BadRequestError  # noqa: E402

from memento.memory.resources import case_bank_for, release_case_banks  # noqa: E402
from tests.integration.test_langgraph_dev import langgraph_dev, ready  # noqa: E402

pytestmark = pytest.mark.slow


def test_each_caller_reads_its_own_cases_over_the_server(tmp_path):
    async def scenario(url):
        alice = get_client(url=url, headers={"Authorization": "Bearer token-a"})
        bob = get_client(url=url, headers={"Authorization": "Bearer token-b"})
        await ready(alice)

        async def run(client, task, **extra):
            thread = await client.threads.create()
            return await client.runs.wait(thread["thread_id"], "memento", input={"task": task, **extra})

        first = await run(alice, "What is 600 + 67?", ground_truth="667")
        assert first["final_answer"] == "667" and first["cases_used"] == []
        theirs = await run(bob, "What is 600 + 68?", ground_truth="1337")
        assert theirs["cases_used"] == []  # alice's case is not bob's to read
        again = await run(alice, "What is 600 + 66?")
        assert [c["author"] for c in again["cases_used"]] == ["caller:alice"]
        thread = await bob.threads.create()
        with pytest.raises((BadRequestError, httpx.HTTPStatusError)) as refused:  # the server's auth names the author
            await bob.runs.wait(thread["thread_id"], "memento", input={"task": "x"}, context={"author": "caller:alice"})
        assert "'author' is set by the server's operator" in str(refused.value.response.text)
        return first["case_id"], theirs["case_id"]

    with langgraph_dev(tmp_path, MEMENTO_API_TOKEN="alice:token-a,bob:token-b") as url:
        alice_case, bob_case = asyncio.run(scenario(url))
    from memento.graph.context import Context

    ctx = Context(data_dir=str(tmp_path / "data"))
    bank = case_bank_for(ctx)
    assert bank.get(alice_case).author == "caller:alice" and bank.get(alice_case).scope == "caller:alice"
    assert bank.get(bob_case).reward_source == "caller_ground_truth"
    release_case_banks()
