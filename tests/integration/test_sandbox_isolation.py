"""The sandbox backends, run directly (no MCP round trip): what code can and cannot reach.

The bwrap tests need bubblewrap and user namespaces; `make test` installs bubblewrap where it
can, and they are skipped with the reason where it cannot start here.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from memento.mcp_servers.sandbox import Isolation, Limits, Sandbox, SandboxError, bwrap_options, bwrap_problem, tree_memory

PROBLEM = bwrap_problem(*((65534, 65534) if os.geteuid() == 0 else (None, None)))
needs_bwrap = pytest.mark.skipif(PROBLEM is not None, reason=f"bwrap backend not available: {PROBLEM}")


def make_box(tmp_path, name="ws", backend="bwrap", network=False, cgroup=True, **limits):
    chosen = Isolation.choose(backend, network=network)
    if not cgroup:
        chosen = Isolation(chosen.backend, chosen.network, None, chosen.reason)
    settings = {"wall_s": 10, "cpu_s": 8, "memory_mb": 256, **limits}
    return Sandbox(tmp_path / name, Limits(**settings), isolation=chosen)


@pytest.fixture
def boxes(tmp_path):
    made = []

    def factory(*args, **kwargs):
        box = make_box(tmp_path, *args, **kwargs)
        made.append(box)
        return box

    yield factory
    for box in made:  # workspaces moved to the system temp dir for the sandbox user
        if str(box.workspace).startswith(str(Path(os.sep, "tmp", "memento-sandbox"))):
            shutil.rmtree(box.workspace, ignore_errors=True)


def py(box, code, **kwargs):
    return box.run([box.python, "-I", "-"], None, code.encode())


@needs_bwrap
@pytest.mark.parametrize("network", [False, True])
def test_code_reaches_a_loopback_listener_only_when_given_the_network(boxes, network):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted = []

    def accept():
        listener.settimeout(8)
        try:
            conn, _ = listener.accept()
            accepted.append(conn.recv(16))
            conn.close()
        except OSError:
            pass

    waiter = threading.Thread(target=accept)
    waiter.start()
    box = boxes(network=network)
    out = py(box, f"import socket\ntry:\n    s = socket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
                  "    s.sendall(b'hello'); s.close(); print('connected')\nexcept OSError as e:\n    print('refused', e)")
    if not network:
        socket.create_connection(("127.0.0.1", port)).close()  # end the listener's wait
    waiter.join()
    listener.close()
    if network:
        assert "connected" in out.stdout and accepted == [b"hello"]
    else:
        assert "refused" in out.stdout and accepted[0] == b""  # only the test's own wake-up call got in


@needs_bwrap
def test_code_writes_nowhere_on_the_host_but_its_workspace(boxes, tmp_path):
    box = boxes()
    token = secrets.token_hex(6)
    targets = [f"/tmp/leak-{token}", f"/dev/shm/leak-{token}", f"/var/tmp/leak-{token}", str(tmp_path / f"leak-{token}"),
               f"/usr/leak-{token}", f"/leak-{token}", f"/etc/leak-{token}"]
    code = ("import sys\nfor path in sys.argv[1:] or %r:\n    try:\n        open(path, 'w').write('x')\n"
            "        print('wrote', path)\n    except OSError as e:\n        print('refused', path, e.strerror)\n"
            "open('inside.txt', 'w').write('ok')\n" % (targets,))
    out = py(box, code)
    assert out.returncode == 0, out.stderr
    for path in targets:
        assert not os.path.lexists(path), f"{path} reached the host"
    # /tmp and /dev/shm were writable inside (private tmpfs mounts), and gone with the run.
    assert f"wrote /tmp/leak-{token}" in out.stdout and f"wrote /dev/shm/leak-{token}" in out.stdout
    assert f"refused /leak-{token} Read-only file system" in out.stdout  # the sandbox's own root too
    assert (box.workspace / "inside.txt").read_text() == "ok"


@needs_bwrap
def test_code_sees_its_own_processes_and_workspace_only(boxes):
    a, b = boxes("run-a"), boxes("run-b")
    py(a, "open('secret.txt', 'w').write('run A')")
    out = py(b, f"import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n"
                f"print(os.path.exists({str(a.workspace)!r}), os.getpid())\n"
                f"print(os.path.exists('/proc/{os.getpid()}'))")
    pids, seen_a, host = out.stdout.splitlines()
    assert max(eval(pids)) < 10  # a PID namespace of its own: a handful of its own processes
    assert seen_a.startswith("False") and host == "False"


@needs_bwrap
@pytest.mark.skipif("--size" not in bwrap_options(), reason="this bwrap cannot size a tmpfs (needs 0.7 or later)")
def test_private_tmp_is_capped(boxes):
    out = py(boxes(tmp_mb=8), "try:\n    open('/tmp/big', 'wb').write(b'x' * 32 * 2**20)\nexcept OSError as e:\n"
                              "    print('refused', e.strerror)")
    assert "No space left on device" in out.stdout


@pytest.mark.parametrize("backend,cgroup", [("bwrap", True), ("bwrap", False), ("rlimit", True), ("rlimit", False)])
def test_a_runs_processes_together_cannot_exceed_the_memory_limit(boxes, backend, cgroup):
    if backend == "bwrap" and PROBLEM:
        pytest.skip(f"bwrap backend not available: {PROBLEM}")
    box = boxes(backend=backend, cgroup=cgroup)
    if cgroup and box.isolation.memory_parent is None:
        pytest.skip("no memory cgroup may be made here (needs root and a memory controller)")
    # Six processes of 120 MB each: every one is under the 256 MB per-process limit, the six are not.
    code = ("import os, time\nfor _ in range(6):\n    if os.fork() == 0:\n        block = bytearray(120 * 2**20)\n"
            "        time.sleep(3)\n        os._exit(0)\nnormal = sum(os.wait()[1] == 0 for _ in range(6))\n"
            "print('ended normally:', normal)")
    out = py(box, code)
    assert out.stopped and "memory limit of 256 MB reached by the run's processes together" in out.stopped
    # A cgroup's kernel kills only what does not fit (at most two of 120 MB do); the polled limit
    # stops the whole run.
    if "ended normally" in out.stdout:
        assert box.isolation.memory_parent is not None and int(out.stdout.split(":")[1]) <= 2


ORPHANS = """
import json, sys
from pathlib import Path
from memento.mcp_servers.sandbox import Isolation, Limits, Sandbox, become_subreaper
become_subreaper()  # as the code server is: orphans of a run become this process's children
box = Sandbox(Path(sys.argv[1]), Limits(wall_s=10, memory_mb=256), isolation=Isolation("rlimit"))
code = ("import os, time\\nfor _ in range(4):\\n    if os.fork() == 0:\\n        os.setsid()\\n"
        "        if os.fork() == 0:\\n            block = bytearray(90 * 2**20)\\n            time.sleep(6)\\n"
        "        os._exit(0)\\n    os.wait()\\ntime.sleep(6)\\nprint('never stopped')")
print(json.dumps(box.run([box.python, "-I", "-"], None, code.encode()).__dict__))
"""


def test_orphans_count_against_the_polled_memory_limit(tmp_path):
    # Detached grandchildren (setsid, double fork) leave the launcher's tree; the polled limit
    # (no cgroup) must still count them.
    done = subprocess.run([sys.executable, "-c", ORPHANS, str(tmp_path / "ws")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["stopped"] and "memory limit of 256 MB reached by the run's processes together" in out["stopped"]
    moved = Path(os.path.realpath(tmp_path / "ws"))
    if moved != tmp_path / "ws":
        shutil.rmtree(moved, ignore_errors=True)


def test_a_full_workspace_stops_the_run_and_the_next_one_does_not_start(boxes):
    box = boxes(backend="rlimit" if PROBLEM else "bwrap", disk_mb=20)
    # Deeper than PATH_MAX, where a walk by path names cannot follow.
    code = ("import os, time\nfor _ in range(20):\n    os.mkdir('d' * 250)\n    os.chdir('d' * 250)\n"
            "for n in range(4):\n    open(f'f{n}', 'wb').write(b'x' * 8 * 2**20)\ntime.sleep(3)")
    out = py(box, code)
    assert out.stopped == "disk limit of 20 MB for the workspace reached"
    again = py(box, "print('ran')")
    assert again.stopped.startswith("disk limit of 20 MB for the workspace reached; remove files")
    assert "ran" not in again.stdout


def test_bwrap_asked_for_where_it_is_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    with pytest.raises(SandboxError, match=r"bubblewrap \(bwrap\) is not installed: install bubblewrap"):
        Isolation.choose("bwrap")
    fallback = Isolation.choose("auto")
    assert fallback.backend == "rlimit" and "rlimit: resource limits" in fallback.describe()
    assert "bwrap not used: bubblewrap (bwrap) is not installed" in fallback.describe()


def test_tree_memory_counts_descendants():
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; b = bytearray(40 * 2**20); print(1, flush=True); "
                              "time.sleep(30)"], stdout=subprocess.PIPE)
    try:
        child.stdout.readline()
        assert tree_memory(os.getpid()) > 40 * 2**20  # this process's descendants (not itself)
        assert tree_memory(child.pid) > 40 * 2**20  # a process with its descendants
    finally:
        child.kill()
        child.wait()
    assert tree_memory(2**22 + 7) == 0  # no such process
