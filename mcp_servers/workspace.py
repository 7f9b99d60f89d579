"""Paths confined to a root folder: no absolute paths, no `..`, no symlinks that lead out."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path, PurePath
from typing import Callable


class PathRefused(PermissionError):
    pass


# -- race-free opening ---------------------------------------------------------------------
#
# Checking a path and opening it later leaves a gap: code in the sandbox can swap
# a folder on the way for a symlink in between. The functions below never look a path up twice:
# they walk it one component at a time from a held folder descriptor, refusing any symlink
# (O_NOFOLLOW at every step), and open only regular files (O_NONBLOCK, so a FIFO never blocks;
# checked with fstat on the open descriptor).

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def relative_parts(relative: str) -> list[str]:
    """The components of a path inside a root; PathRefused for absolute paths and '..'."""
    pure = PurePath(relative)
    if pure.is_absolute() or relative.startswith("~"):
        raise PathRefused(f"{relative}: absolute paths are refused; give a path inside the workspace")
    if ".." in pure.parts:
        raise PathRefused(f"{relative}: '..' is refused; give a path inside the workspace")
    parts = [p for p in pure.parts if p not in ("", ".")]
    if not parts:
        raise PathRefused(f"{relative!r} names no file")
    return parts


def _refused(shown: str, exc: OSError) -> PathRefused:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        return PathRefused(f"{shown}: a component is a symlink or not a folder; refused")
    if exc.errno == errno.ENXIO:
        return PathRefused(f"{shown} is not a regular file (a FIFO or a socket); refused")
    return PathRefused(f"{shown}: {exc.strerror}")


def open_beneath(root: str | Path, parts: list[str], flags: int, mode: int = 0o644, *, shown: str = "",
                 make_folders: Callable[[int, str], None] | None = None) -> int:
    """A descriptor for the regular file at `parts` under the folder `root`, opened with `flags`.

    No component may be a symlink, and the file must be a regular file with one link (a hard
    link could lead anywhere). With `make_folders`, missing folders on the way are created and
    handed to it (folder descriptor, name) to take ownership. The caller closes the descriptor."""
    shown = shown or "/".join(parts)
    folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the root itself is trusted
    try:
        for name in parts[:-1]:
            try:
                step = os.open(name, _DIR_FLAGS, dir_fd=folder)
            except FileNotFoundError:
                if make_folders is None:
                    raise FileNotFoundError(f"{shown} does not exist") from None
                os.mkdir(name, 0o755, dir_fd=folder)
                make_folders(folder, name)
                step = os.open(name, _DIR_FLAGS, dir_fd=folder)
            except OSError as exc:
                raise _refused(shown, exc) from None
            os.close(folder)
            folder = step
        try:
            # Never O_TRUNC here: the file is checked first, and truncated by the caller.
            fd = os.open(parts[-1], (flags & ~os.O_TRUNC) | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode,
                         dir_fd=folder)
        except FileNotFoundError:
            raise FileNotFoundError(f"{shown} does not exist") from None
        except OSError as exc:
            raise _refused(shown, exc) from None
    finally:
        os.close(folder)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        what = "has other hard links" if stat.S_ISREG(info.st_mode) else "is not a regular file"
        raise PathRefused(f"{shown} {what}; refused")
    return fd


def read_beneath(root: str | Path, parts: list[str], limit: int, shown: str = "") -> bytes:
    """At most `limit` + 1 bytes of the regular file at `parts` under `root` (see `open_beneath`)."""
    fd = open_beneath(root, parts, os.O_RDONLY, shown=shown)
    with os.fdopen(fd, "rb") as handle:
        return handle.read(limit + 1)


def locate(roots: list[Path], path: str) -> tuple[Path, list[str]]:
    """(root folder, components below it) of an absolute `path` inside one of `roots`, matched
    lexically (nothing below a root is looked up here); a root that is a file is its own match."""
    # '..' is folded lexically, and what is left is walked without following links: no escape.
    wanted = PurePath(os.path.normpath(os.path.abspath(os.path.expanduser(path))))
    for root in roots:
        for form in dict.fromkeys([PurePath(os.path.abspath(root)), PurePath(os.path.realpath(root))]):
            if wanted == form and os.path.isfile(root):
                real = Path(os.path.realpath(root))
                return real.parent, [real.name]
            if wanted.is_relative_to(form) and wanted != form and os.path.isdir(root):
                return Path(os.path.realpath(root)), list(wanted.relative_to(form).parts)
    raise PathRefused(f"{path} is outside the files this run may read")


def list_beneath(root: str | Path, relative: str, max_entries: int, max_scanned: int = 20_000,
                 max_depth: int = 32) -> tuple[list[str], bool]:
    """Paths under the folder `relative` in `root` (folders end with /), sorted folder by folder,
    and whether the listing was cut. The walk holds folder descriptors and never follows a link
    (a link is listed as a file, never entered); it stops at `max_entries` listed, `max_scanned`
    seen or `max_depth` folders down, so a huge or very deep tree costs bounded work."""
    parts = [p for p in PurePath(relative or ".").parts if p not in ("", ".")]
    if parts:
        relative_parts(relative)  # refuses absolute paths and '..'
    start = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the root itself is trusted
    try:
        for name in parts:
            try:
                step = os.open(name, _DIR_FLAGS, dir_fd=start)
            except FileNotFoundError:
                raise FileNotFoundError(f"{relative} does not exist") from None
            except OSError as exc:
                raise (PathRefused(f"{relative} is not a folder in the workspace") if exc.errno == errno.ENOTDIR
                       else _refused(relative, exc)) from None
            os.close(start)
            start = step
    except BaseException:
        os.close(start)
        raise
    listed: list[str] = []
    scanned = 0
    prefix = "/".join(parts)
    stack: list[tuple[int, str, int]] = [(start, prefix, 0)]  # (folder descriptor, its path, depth) to list
    deeper = False
    try:
        while stack and len(listed) < max_entries and scanned < max_scanned:
            folder, shown, depth = stack.pop()
            try:
                with os.scandir(folder) as found:
                    entries = []
                    for entry in found:
                        scanned += 1
                        entries.append(entry)
                        if scanned >= max_scanned:
                            break
                entries.sort(key=lambda e: e.name)
                below = []
                for entry in entries:
                    path = f"{shown}/{entry.name}" if shown else entry.name
                    is_dir = entry.is_dir(follow_symlinks=False)
                    listed.append(path + ("/" if is_dir else ""))
                    if is_dir:
                        below.append((entry.name, path))
                if below and depth + 1 >= max_depth:
                    deeper = True
                    below = []
                # Folders are listed in order: push them reversed so the first is walked first.
                for name, path in reversed(below):
                    try:
                        stack.append((os.open(name, _DIR_FLAGS, dir_fd=folder), path, depth + 1))
                    except OSError:
                        continue  # swapped for a link or removed meanwhile: not entered
            finally:
                os.close(folder)
    finally:
        for folder, _, _ in stack:
            os.close(folder)
    cut = len(listed) > max_entries or scanned >= max_scanned or bool(stack) or deeper
    return listed[:max_entries], cut


# -- who owns a workspace ------------------------------------------------------------------
#
# Over HTTP a workspace belongs to the client that first used it. That must outlive the server:
# after a restart, the first client to name a folder full of someone else's files would otherwise
# be handed them. The owner is recorded beside the workspace, in ROOT/.memento-owners/NAME (one
# line, the client's name), out of reach of the code that runs in the workspace (the sandbox sees
# only the workspace; the records folder is the server user's, mode 0700). A record is published
# with link(2), which fails if one exists, so two servers sharing a root cannot both claim a name.

OWNERS_FOLDER = ".memento-owners"
MAX_OWNER_BYTES = 1024


class OwnerUnknown(PermissionError):
    """A workspace that holds files but has no owner record: no client may adopt it."""


def _owners_folder(root: Path) -> int:
    """A descriptor for ROOT/.memento-owners, made private to this user if missing; refused if it
    is a link, or another user's, or writable by others (records there decide who reads what)."""
    root.mkdir(parents=True, exist_ok=True)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the root itself is trusted
    try:
        try:
            os.mkdir(OWNERS_FOLDER, 0o700, dir_fd=root_fd)
        except FileExistsError:
            pass
        try:
            folder = os.open(OWNERS_FOLDER, _DIR_FLAGS, dir_fd=root_fd)
        except OSError as exc:
            raise PathRefused(f"{root / OWNERS_FOLDER} is not a folder (a link or a file): the server records "
                              "workspace owners there; make it a folder of the server's user") from exc
    finally:
        os.close(root_fd)
    info = os.fstat(folder)
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        os.close(folder)
        raise PathRefused(f"{root / OWNERS_FOLDER} belongs to another user or others may write it: the server "
                          "records workspace owners there; give it to the server's user, mode 0700")
    return folder


def _read_owner(folder: int, name: str, shown: Path) -> str | None:
    """The client named in the owner record `name` of the records folder, or None if there is none."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PathRefused(f"owner record {shown} is not a regular file ({exc.strerror}): the operator writes the "
                          "owning client's name there") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_uid != os.geteuid():
            raise PathRefused(f"owner record {shown} is not a plain file of the server's user: the operator writes "
                              "the owning client's name there")
        data = handle.read(MAX_OWNER_BYTES + 1)
    try:
        owner = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        owner = ""
    if not owner or len(data) > MAX_OWNER_BYTES or "\n" in owner:
        raise PathRefused(f"owner record {shown} does not hold one client's name: the operator writes the owning "
                          "client's name there, on one line")
    return owner


def _holds_files(root: Path, name: str) -> bool:
    """Whether the workspace `name` under `root` is anything but missing or an empty folder (a
    workspace the server moved for its sandbox user is a link to the real folder: followed)."""
    try:
        fd = os.open(root / name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return os.path.lexists(root / name)  # a dangling link is something there, not nothing
    except OSError:
        return True  # a file, a FIFO, a loop: not an empty folder
    try:
        with os.scandir(fd) as entries:
            return next(entries, None) is not None
    finally:
        os.close(fd)


def workspace_owner(root: Path, name: str, client: str) -> str:
    """The client that owns the workspace `name` directly inside `root`: the one its owner record
    names, else `client`, recorded now. A workspace that already holds files and has no record
    (made before owners were recorded, or by a server over stdio) is adopted by no one: OwnerUnknown."""
    folder = _owners_folder(root)
    shown = root / OWNERS_FOLDER / name
    try:
        owner = _read_owner(folder, name, shown)
        if owner is not None:
            return owner
        if _holds_files(root, name):
            raise OwnerUnknown(f"workspace {root / name} holds files but has no recorded owner (made before this "
                               "server recorded owners, or by a server over stdio), so no client may take it: name "
                               f"another workspace, or the operator writes the owning client's name to {shown}")
        temporary = f".claim-{secrets.token_hex(16)}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(client.encode("utf-8") + b"\n")
                handle.flush()
                os.fsync(fd)
            try:
                os.link(temporary, name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
            except FileExistsError:
                pass  # another server sharing this root claimed it a moment ago: its record stands
        finally:
            os.unlink(temporary, dir_fd=folder)
        os.fsync(folder)  # the record survives a crash of the machine, not only of the server
        owner = _read_owner(folder, name, shown)
        if owner is None:
            raise PathRefused(f"owner record {shown} vanished while it was written: try the call again")
        return owner
    finally:
        os.close(folder)
