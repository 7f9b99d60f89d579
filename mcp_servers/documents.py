"""Read attached files over MCP, as text, with paths confined to allowed roots.

The allowed roots come from `--allow PATH` arguments and from the JSON list in the
`MEMENTO_ALLOWED_PATHS` environment variable (set by the executor to the run's files).
A root may be a file (only it may be read) or a folder (anything inside it).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from mcp.server.fastmcp import FastMCP

MAX_CHARS = 20_000

server = FastMCP("memento-documents", log_level="WARNING", instructions="Read the files attached to the task as text.")
_extra_roots: list[str] = []


def allowed_roots() -> list[Path]:
    raw = json.loads(os.environ.get("MEMENTO_ALLOWED_PATHS") or "[]")
    return [Path(p).expanduser().resolve() for p in [*raw, *_extra_roots]]


def confine(path: str) -> Path:
    """Resolve `path` (symlinks included) and refuse it unless it lies under an allowed root."""
    resolved = Path(path).expanduser().resolve()
    for root in allowed_roots():
        if resolved == root or (root.is_dir() and resolved.is_relative_to(root)):
            return resolved
    raise PermissionError(f"{path} is outside the files this run may read")


@server.tool()
def list_documents() -> list[str]:
    """List the files this run may read."""
    out = []
    for root in allowed_roots():
        out += [str(p) for p in sorted(root.rglob("*")) if p.is_file()] if root.is_dir() else [str(root)]
    return out


@server.tool()
def read_document(path: str, max_chars: int = MAX_CHARS) -> str:
    """Read a text file attached to the task. Output is capped at max_chars, and truncation is stated."""
    target = confine(path)
    if not target.is_file():
        raise FileNotFoundError(f"{path} is not a readable file")
    with target.open("r", encoding="utf-8", errors="replace") as handle:
        text = handle.read(max_chars + 1)
    if len(text) > max_chars:
        return text[:max_chars] + f"\n[truncated at {max_chars} characters]"
    return text


if __name__ == "__main__":
    from memento.mcp_servers._run import serve

    while "--allow" in sys.argv:
        at = sys.argv.index("--allow")
        _extra_roots.append(sys.argv[at + 1])
        del sys.argv[at:at + 2]
    serve(server, "Document reading MCP server (use --allow PATH to allow a file or folder)")
