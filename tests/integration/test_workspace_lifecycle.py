"""A run's code workspace: made by the real code server on first use, there while the run waits
for approval (so a resume finds its files), removed when the run ends unless it is kept."""

from __future__ import annotations

import os

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command

from memento.graph import Context, build_graph
from memento.nodes.execute_subtask import remove_workspace, run_workspace
from tests.fixtures.scripted_openai import ScriptedOpenAI, tool_call

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("keep", [False, True])
def test_the_workspace_lives_as_long_as_the_run(tmp_path, keep):
    replies = [{"content": None, "tool_calls": [tool_call("c1", "write_file", {"path": "notes/n.txt",
                                                                                "content": "made in the run"})]},
               {"content": "wrote the note"}]
    with ScriptedOpenAI(replies) as server, SqliteSaver.from_conn_string(str(tmp_path / "ck.sqlite")) as saver:
        ctx = Context(data_dir=str(tmp_path / "data"), executor_model="openai-compatible:scripted",
                      executor_base_url=server.url, approval={"case": True}, keep_workspaces=keep)
        graph = build_graph(saver)
        config = {"configurable": {"thread_id": "t"}}
        graph.invoke({"task": "Write a short note to a file."}, config, context=ctx)
        snapshot = graph.get_state(config)
        assert snapshot.interrupts and snapshot.interrupts[0].value["point"] == "case"
        workspace = run_workspace(ctx, snapshot.values["case_id"])
        # Waiting for approval, the run has not ended: its files are there.
        assert (workspace / "notes" / "n.txt").read_text() == "made in the run"
        moved_to = os.path.realpath(workspace)  # the sandbox user's copy, when memento runs as root
        graph.invoke(Command(resume={"decisions": [{"type": "approve"}]}), config, context=ctx)
        values = graph.get_state(config).values
    assert values["case_written"]
    if keep:
        assert values["kept_workspace"] == str(workspace)
        assert (workspace / "notes" / "n.txt").read_text() == "made in the run"
        remove_workspace(workspace)
    else:
        assert not values.get("kept_workspace")
        assert not os.path.lexists(workspace) and not os.path.exists(moved_to)
    assert workspace.parent.is_dir()  # the folder of workspaces itself stays
