"""The code server over HTTP: a workspace's owner is recorded on disk and outlives the server."""

import os
import stat
import threading

import pytest

from memento.nodes.execute_subtask import remove_workspace
from tests.integration.conftest import call
from tests.integration.test_mcp_http import http_server, remote

pytestmark = pytest.mark.slow

TOKENS = "name-a:tok-a,name-b:tok-b"
TOOLS = (("read_file", {"path": "notes.txt"}), ("list_files", {}), ("run_shell", {"command": "cat notes.txt"}),
         ("write_file", {"path": "notes.txt", "content": "bob's"}))


def code_server(root):
    return http_server("memento.mcp_servers.code", "--workspace-root", str(root), "--isolation", "rlimit",
                       token=TOKENS)


@pytest.fixture
def root(tmp_path):
    folder = tmp_path / "workspaces"
    folder.mkdir()
    yield folder
    for entry in folder.iterdir():
        if not entry.name.startswith("."):
            remove_workspace(entry)  # and its copy, where it moved to the system temp dir for the sandbox user


def test_after_a_restart_another_client_cannot_take_a_workspace(toolbox_for, root):
    workspace = str(root / "run-1")
    with code_server(root) as (_, url):
        alice = toolbox_for({"c": remote(url, "tok-a")}, workspace=workspace)
        assert call(alice, "write_file", path="notes.txt", content="alice's").status == "success"
    record = root / ".memento-owners" / "run-1"
    assert record.read_text() == "name-a\n"
    assert stat.S_IMODE((root / ".memento-owners").lstat().st_mode) == 0o700
    with code_server(root) as (_, url):  # a new process: nothing of the first one's memory is left
        bob = toolbox_for({"c": remote(url, "tok-b")}, workspace=workspace)  # bob asks first
        for name, args in TOOLS:
            answer = call(bob, name, **args)
            assert answer.status == "error" and "belongs to another client" in answer.text, (name, answer.text)
            assert "alice's" not in answer.text
        alice = toolbox_for({"c": remote(url, "tok-a")}, workspace=workspace)
        assert call(alice, "read_file", path="notes.txt").text == "alice's"
        assert "alice's" in call(alice, "run_shell", command="cat notes.txt").text


def test_a_workspace_with_files_and_no_recorded_owner_is_adopted_by_no_one(toolbox_for, root):
    """Left by an older server or one over stdio: whoever asks first must not get its files."""
    left = root / "run-2"
    left.mkdir()
    (left / "notes.txt").write_text("someone's")
    with code_server(root) as (_, url):
        for token in ("tok-b", "tok-a"):
            box = toolbox_for({"c": remote(url, token)}, workspace=str(left))
            for name, args in TOOLS:
                answer = call(box, name, **args)
                assert answer.status == "error" and "someone's" not in answer.text, (name, answer.text)
                assert "has no recorded owner" in answer.text and ".memento-owners/run-2" in answer.text
        assert (left / "notes.txt").read_text() == "someone's" and not (root / ".memento-owners" / "run-2").exists()
        # The operator says whose it is; that client gets it, the other still does not.
        (root / ".memento-owners" / "run-2").write_text("name-a\n")
        alice = toolbox_for({"c": remote(url, "tok-a")}, workspace=str(left))
        assert call(alice, "read_file", path="notes.txt").text == "someone's"
        bob = toolbox_for({"c": remote(url, "tok-b")}, workspace=str(left))
        assert "belongs to another client" in call(bob, "read_file", path="notes.txt").text
        # An empty workspace left behind is no one's yet: the first client to use it records itself.
        (root / "run-3").mkdir()
        bob_own = toolbox_for({"c": remote(url, "tok-b")}, workspace=str(root / "run-3"))
        assert call(bob_own, "write_file", path="x.txt", content="bob's").status == "success"
        assert (root / ".memento-owners" / "run-3").read_text() == "name-b\n"


def test_owner_records_are_never_read_through_links_or_named_as_workspaces(toolbox_for, root, tmp_path):
    (root / "run-4").mkdir()
    (root / "run-4" / "notes.txt").write_text("alice's")
    forged = tmp_path / "forged"
    forged.write_text("name-b\n")
    (root / ".memento-owners").mkdir(mode=0o700)
    (root / ".memento-owners" / "run-4").symlink_to(forged)  # a record planted as a link
    os.link(forged, root / ".memento-owners" / "run-5")  # and as a hard link to a file elsewhere
    (root / "run-5").mkdir()
    with code_server(root) as (_, url):
        bob = toolbox_for({"c": remote(url, "tok-b")}, workspace=str(root / "run-4"))
        answer = call(bob, "read_file", path="notes.txt")
        assert answer.status == "error" and "owner record" in answer.text and "alice's" not in answer.text
        bob5 = toolbox_for({"c": remote(url, "tok-b")}, workspace=str(root / "run-5"))
        answer = call(bob5, "list_files")
        assert answer.status == "error" and "not a plain file" in answer.text
        for name in (".memento-owners", ".claim-0"):
            dot = toolbox_for({"c": remote(url, "tok-b")}, workspace=str(root / name))
            answer = call(dot, "write_file", path="run-4", content="name-b")
            assert answer.status == "error" and "may not begin with '.'" in answer.text
    assert (root / ".memento-owners" / "run-4").is_symlink() and forged.read_text() == "name-b\n"


def test_two_servers_sharing_a_root_never_both_hand_out_one_workspace(toolbox_for, root):
    workspace = str(root / "run-6")
    with code_server(root) as (_, first), code_server(root) as (_, second):
        boxes = [toolbox_for({"c": remote(first, "tok-a")}, workspace=workspace),
                 toolbox_for({"c": remote(second, "tok-b")}, workspace=workspace)]
        results = [None, None]
        start = threading.Barrier(2)

        def claim(i):
            start.wait()
            results[i] = call(boxes[i], "write_file", path=f"from-{i}.txt", content="mine")

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        statuses = sorted(r.status for r in results)
        assert statuses == ["error", "success"], [r.text for r in results]
        winner = ("name-a", "name-b")[[r.status for r in results].index("success")]
        assert (root / ".memento-owners" / "run-6").read_text() == f"{winner}\n"


def test_the_servers_own_workspace_keeps_its_owner_across_a_restart_too(toolbox_for, root):
    workspace = root / "only"
    args = ("memento.mcp_servers.code", "--workspace", str(workspace), "--isolation", "rlimit")
    with http_server(*args, token=TOKENS) as (_, url):
        assert call(toolbox_for({"c": remote(url, "tok-a")}), "write_file", path="notes.txt",
                    content="alice's").status == "success"
    with http_server(*args, token=TOKENS) as (_, url):
        answer = call(toolbox_for({"c": remote(url, "tok-b")}), "read_file", path="notes.txt")
        assert answer.status == "error" and "belongs to another client" in answer.text
        assert call(toolbox_for({"c": remote(url, "tok-a")}), "read_file", path="notes.txt").text == "alice's"
