"""The file tools against code that races them: a folder swapped for a symlink while the server
reads and writes through it, and FIFOs, sockets and devices where a file is expected."""

import os
import socket
import stat
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import call, stdio
from tests.integration.test_code_server import alive, code  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow
RACE_SECONDS = 4


# Another process swaps `FOLDER/d` (a real folder) and `FOLDER/s` (a symlink to OUTSIDE) with
# renameat2(RENAME_EXCHANGE), one atomic system call per swap, as fast as it goes.
SWAPPER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
d, s = (os.path.join(sys.argv[1], name).encode() for name in ("d", "s"))
os.symlink(sys.argv[2], s)
while True:
    if libc.renameat2(-100, d, -100, s, 2) != 0:
        sys.exit(f"renameat2: {os.strerror(ctypes.get_errno())}")
"""


def swapping(folder, outside):
    return subprocess.Popen([sys.executable, "-c", SWAPPER, str(folder), str(outside)], stderr=subprocess.PIPE,
                            text=True)


@pytest.fixture
def outside(tmp_path):
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret").write_text("TOP SECRET")
    return folder


@pytest.fixture
def docs_over(toolbox_for):
    def make(root):
        return toolbox_for({"documents": stdio("memento.mcp_servers.documents")}, allowed_paths=[str(root)])
    return make


def test_a_folder_swapped_for_a_link_never_leads_out(code, outside, docs_over):  # noqa: F811
    workspace = code.workspace.resolve()
    assert call(code, "write_file", path="d/secret", content="inside").status == "success"
    (outside / "only-outside.txt").write_text("x")
    docs = docs_over(workspace)
    racer = swapping(workspace, outside)
    tries, inside = 0, 0
    try:
        deadline = time.monotonic() + RACE_SECONDS
        while time.monotonic() < deadline:
            for out in (call(code, "read_file", path="d/secret"),
                        call(docs, "read_document", path=str(workspace / "d" / "secret")),
                        call(code, "write_file", path="d/planted", content="x"),
                        call(code, "list_files", path="d")):
                assert "TOP SECRET" not in out.text and "only-outside" not in out.text
                inside += "inside" in out.text
            tries += 1
        assert racer.poll() is None, racer.stderr.read()
    finally:
        racer.kill()
        racer.wait()
    assert tries >= 20, f"only {tries} rounds in {RACE_SECONDS} s"
    assert inside > 0  # the race was on: some reads found the real folder
    assert sorted(p.name for p in outside.iterdir()) == ["only-outside.txt", "secret"]  # nothing written there


def test_fifos_sockets_and_devices_are_refused_and_the_servers_keep_answering(code, docs_over):  # noqa: F811
    workspace = code.workspace.resolve()
    os.mkfifo(workspace / "fifo")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(workspace / "sock"))
    names = ["fifo", "sock"]
    try:
        os.mknod(workspace / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        names.append("null")
    except PermissionError:
        pass  # not root: code in the sandbox cannot make a device either
    docs = docs_over(workspace)
    try:
        for name in names:
            for out in (call(code, "read_file", path=name), call(code, "write_file", path=name, content="x"),
                        call(docs, "read_document", path=str(workspace / name))):
                assert out.status == "error" and "not a regular file" in out.text, (name, out.text)
        alive(code)
        assert call(docs, "list_documents").status == "success"
    finally:
        listener.close()


def test_hard_links_are_refused(code, outside):  # noqa: F811
    workspace = code.workspace.resolve()
    try:
        os.link(outside / "secret", workspace / "hard")
    except OSError:
        pytest.skip("hard links across these folders are not allowed here")
    out = call(code, "read_file", path="hard")
    assert out.status == "error" and "hard links" in out.text
    assert call(code, "write_file", path="hard", content="x").status == "error"
    assert (outside / "secret").read_text() == "TOP SECRET"
