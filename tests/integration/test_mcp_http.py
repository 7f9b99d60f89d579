"""MCP servers over streamable HTTP: tokens, and a call's `_meta` that may only narrow."""

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import httpx
import pytest

from memento.nodes.execute_subtask import remove_workspace
from tests.integration.conftest import call

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def http_server(module: str, *args: str, token: str | None = "name-a:tok-a,tok-b"):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "MEMENTO_MCP_TOKEN"}
    if token is not None:
        env["MEMENTO_MCP_TOKEN"] = token
    proc = subprocess.Popen([sys.executable, "-m", module, "--transport", "streamable-http", "--port", str(port), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        yield proc, f"http://127.0.0.1:{port}/mcp"
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)


def remote(url: str, token: str | None) -> dict:
    conn = {"transport": "streamable_http", "url": url}
    if token:
        conn["headers"] = {"Authorization": f"Bearer {token}"}
    return conn


def test_a_server_refuses_to_serve_http_without_a_token():
    with http_server("memento.mcp_servers.documents", token=None) as (proc, _):
        proc.wait(timeout=30)
        assert proc.returncode != 0 and "MEMENTO_MCP_TOKEN" in proc.stderr.read()


def test_requests_without_an_accepted_token_reach_nothing(toolbox_for):
    with http_server("memento.mcp_servers.math") as (_, url):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic tok-a"}):
            answer = httpx.post(url, headers={"Accept": "application/json, text/event-stream", **headers},
                                json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}})
            assert answer.status_code == 401 and "MEMENTO_MCP_TOKEN" in answer.text
        assert call(toolbox_for({"m": remote(url, "tok-b")}), "calculate", expression="6 * 7").text == "42"


def test_over_http_a_calls_meta_only_narrows_the_servers_own_roots(toolbox_for, tmp_path):
    shared, private = tmp_path / "shared", tmp_path / "private"
    (shared / "sub").mkdir(parents=True)
    private.mkdir()
    (shared / "sub" / "ok.txt").write_text("readable")
    (shared / "other.txt").write_text("outside the call's narrowing")
    secret = private / "planted-secret.txt"
    secret.write_text("root only")
    secret.chmod(0o600)
    (shared / "escape").symlink_to(private)
    with http_server("memento.mcp_servers.documents", "--allow", str(shared)) as (_, url):
        wide = toolbox_for({"d": remote(url, "tok-a")}, allowed_paths=["/etc", str(private), "/"])
        for path in ("/etc/shadow", "/etc/passwd", str(secret), str(shared / "escape" / "planted-secret.txt")):
            answer = call(wide, "read_document", path=path)
            assert answer.status == "error" and "root only" not in answer.text and "root:" not in answer.text, path
        listing = call(wide, "list_documents").text
        assert "passwd" not in listing and "planted-secret" not in listing
        narrow = toolbox_for({"d": remote(url, "tok-a")}, allowed_paths=[str(shared / "sub")])
        assert call(narrow, "read_document", path=str(shared / "sub" / "ok.txt")).text == "readable"
        refused = call(narrow, "read_document", path=str(shared / "other.txt"))
        assert refused.status == "error" and "outside" in refused.text
        assert call(narrow, "list_documents").text.strip() == str(shared / "sub" / "ok.txt")
        plain = toolbox_for({"d": remote(url, "tok-b")})  # no `_meta` roots: the server's own
        assert call(plain, "read_document", path=str(shared / "other.txt")).text == "outside the call's narrowing"


def test_over_http_a_workspace_belongs_to_the_client_that_made_it(toolbox_for, tmp_path):
    root = tmp_path / "workspaces"
    root.mkdir()
    workspace = str(root / "run-1")
    with http_server("memento.mcp_servers.code", "--workspace-root", str(root), "--isolation", "rlimit") as (_, url):
        try:
            alice = toolbox_for({"c": remote(url, "tok-a")}, workspace=workspace)
            assert call(alice, "write_file", path="notes.txt", content="alice's").status == "success"
            bob = toolbox_for({"c": remote(url, "tok-b")}, workspace=workspace)
            for name, args in (("read_file", {"path": "notes.txt"}), ("run_shell", {"command": "echo hi > x"}),
                               ("write_file", {"path": "notes.txt", "content": "bob's"})):
                answer = call(bob, name, **args)
                assert answer.status == "error" and "another client" in answer.text, (name, answer.text)
            assert call(alice, "read_file", path="notes.txt").text == "alice's"
            outside = toolbox_for({"c": remote(url, "tok-b")}, workspace=str(tmp_path / "elsewhere"))
            assert call(outside, "list_files").status == "error"
        finally:
            remove_workspace(root / "run-1")
