"""Paths confined to a root folder: no absolute paths, no `..`, no symlinks that lead out."""

from __future__ import annotations

from pathlib import Path, PurePath


class PathRefused(PermissionError):
    pass


def confine(root: Path, relative: str) -> Path:
    """`relative` resolved inside `root`, or PathRefused naming the reason."""
    if not relative or relative.strip() in {"", "."}:
        return root.resolve()
    pure = PurePath(relative)
    if pure.is_absolute() or relative.startswith("~"):
        raise PathRefused(f"{relative}: absolute paths are refused; give a path inside the workspace")
    if ".." in pure.parts:
        raise PathRefused(f"{relative}: '..' is refused; give a path inside the workspace")
    resolved = (root / pure).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise PathRefused(f"{relative}: leads outside the workspace (through a symlink) and is refused")
    return resolved


def under_any(roots: list[Path], path: str) -> Path:
    """`path` (absolute, symlinks resolved) if it is one of `roots` or inside a folder among them."""
    resolved = Path(path).expanduser().resolve()
    for root in roots:
        root = root.resolve()
        if resolved == root or (root.is_dir() and resolved.is_relative_to(root)):
            return resolved
    raise PathRefused(f"{path} is outside the files this run may read")
