"""Telling a disk that cannot take a write from damage."""

import errno
import sqlite3

from memento.graph.storage import folder_condition, storage_problem, what_to_do


def test_errors_from_a_full_or_read_only_disk_are_named(tmp_path):
    assert "is full" in storage_problem(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert "read-only" in storage_problem(OSError(errno.EROFS, "Read-only file system"), tmp_path)
    assert "is full" in storage_problem(sqlite3.OperationalError("database or disk is full"), tmp_path)
    assert "free some space" in what_to_do(storage_problem(OSError(errno.ENOSPC, "x"), tmp_path / "not" / "yet"))
    # Words that only sound like damage depend on the folder's condition; this folder is fine.
    assert storage_problem(sqlite3.OperationalError("disk I/O error"), tmp_path) is None
    assert storage_problem(ValueError("a bug elsewhere"), tmp_path) is None
    assert folder_condition(tmp_path) is None
