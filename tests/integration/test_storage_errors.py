"""A full disk and a read-only folder are said as such (never as damage), and nothing is lost:
once space is free, the run resumes and writes exactly one case."""

import json
import os
import shutil
import subprocess

import pytest

from tests.integration.test_cli import memento

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MB tmpfs of the test's own (root only: skipped, saying why, elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk, keep_kb: int) -> None:
    free_kb = shutil.disk_usage(disk).free // 1024
    with open(disk / "filler", "wb") as handle:
        handle.truncate(0)
        chunk = b"\0" * 1024 * 64
        for _ in range(max(0, free_kb - keep_kb) // 64):
            try:
                handle.write(chunk)
                handle.flush()
            except OSError:
                break


def cases(data) -> int:
    listed = memento("cases", "list", "--data-dir", str(data), "--json")
    return len(json.loads(listed.stdout)["cases"])


def says_full(proc, data) -> None:
    assert proc.returncode == 1, proc.stderr
    first = proc.stderr.splitlines()[0]
    assert first.startswith("memento: error: the disk holding") and "is full" in first and "free some space" in first
    for scary in ("corrupt", "damaged", "unreadable", "move it aside", "delete", "remove"):
        assert scary not in proc.stderr.lower()


@pytest.mark.parametrize("keep_kb", [0, 200])  # full before the resume opens anything, or during the case write
def test_a_full_disk_is_said_and_the_run_resumes_to_exactly_one_case(small_disk, keep_kb):
    data = small_disk / "data"
    waiting = memento("run", "What is 2 + 3?", "--ground-truth", "5", "--thread-id", "full", "--data-dir", str(data),
                      "--approve-case", "--json")
    assert waiting.returncode == 3, waiting.stderr
    fill(small_disk, keep_kb)
    says_full(memento("resume", "full", "--approve", "--data-dir", str(data)), data)
    (small_disk / "filler").unlink()
    done = memento("resume", "full", "--data-dir", str(data), "--json")
    if done.returncode != 0:  # the answer did not reach the disk: it is asked again, and given again
        done = memento("resume", "full", "--approve", "--data-dir", str(data), "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["status"] == "done", done.stderr
    assert cases(data) == 1


def test_a_new_run_on_a_full_disk_and_a_read_only_folder(small_disk):
    data = small_disk / "data"
    first = memento("run", "What is 2 + 3?", "--ground-truth", "5", "--data-dir", str(data))
    assert first.returncode == 0, first.stderr
    fill(small_disk, 0)
    says_full(memento("run", "What is 4 + 4?", "--ground-truth", "8", "--data-dir", str(data)), data)
    (small_disk / "filler").unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    read_only = memento("run", "What is 4 + 4?", "--ground-truth", "8", "--data-dir", str(data))
    assert read_only.returncode == 1 and "read-only" in read_only.stderr.splitlines()[0], read_only.stderr
    assert "move it aside" not in read_only.stderr and "corrupt" not in read_only.stderr
    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert cases(data) == 1
