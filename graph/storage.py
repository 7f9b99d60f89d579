"""What went wrong with the disk, in one line that says what to do.

A full disk, a read-only file system and a missing permission make SQLite, Chroma and plain file
writes fail with messages ("disk I/O error", "unable to open database file") that read like
damage. They are not: nothing stored is lost, and once the cause is fixed the run resumes. So the
condition of the folder is looked at before anything is called damaged, and no message here ever
advises moving or deleting data.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

FULL_BYTES = 1 << 20  # less free space than this counts as full: SQLite needs room for its journal
_FULL_WORDS = ("no space left", "disk is full", "database or disk is full", "quota exceeded")
_READ_ONLY_WORDS = ("read-only file system", "readonly database")
_DENIED_WORDS = ("permission denied", "operation not permitted")
_STORAGE_WORDS = ("disk i/o error", "unable to open database file")


def _existing(folder: Path) -> Path:
    folder = Path(folder).expanduser().absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def folder_condition(folder: str | Path) -> str | None:
    """Why nothing can be written in `folder` right now (full, read-only, not permitted), or None."""
    where = _existing(Path(folder))
    try:
        stats = os.statvfs(where)
    except OSError:
        return None
    if stats.f_flag & os.ST_RDONLY:
        return f"the file system holding {where} is read-only"
    if stats.f_bavail * stats.f_frsize < FULL_BYTES:
        return f"the disk holding {where} is full"
    if not os.access(where, os.W_OK | os.X_OK):
        return f"memento may not write in {where} (permission denied)"
    return None


def storage_problem(exc: BaseException, folder: str | Path) -> str | None:
    """A one-line account of a failure that comes from the disk under `folder`, or None when it
    does not look like one (then it is someone else's error to report)."""
    code = getattr(exc, "errno", None)
    where = _existing(Path(folder))
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return f"the disk holding {where} is full"
    if code == errno.EROFS:
        return f"the file system holding {where} is read-only"
    text = " ".join(str(exc).split()).lower()
    if any(w in text for w in _FULL_WORDS):
        return f"the disk holding {where} is full"
    if code in (errno.EACCES, errno.EPERM) or any(w in text for w in (*_READ_ONLY_WORDS, *_DENIED_WORDS, *_STORAGE_WORDS)):
        return folder_condition(where) or (f"memento may not write in {where} (permission denied)"
                                           if code in (errno.EACCES, errno.EPERM) else None)
    # A store's own words for it vary (Chroma: "Failed to apply logs to the metadata segment"):
    # a failure while the folder cannot be written is put down to that.
    return folder_condition(where)


def what_to_do(problem: str) -> str:
    if "full" in problem:
        return "free some space on it"
    if "read-only" in problem:
        return "make it writable (or use another --data-dir)"
    return "give memento's user write access to it (or use another --data-dir)"
