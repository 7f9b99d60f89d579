"""The README as a test: every ```python example runs as written, in a fresh folder, and the commands
of its first lines are Makefile targets.

An example that cannot run here (it needs a server, say) carries an HTML comment just before its
fence, `<!-- example: needs a server -->`, and is skipped with that reason."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAKEFILE = ROOT / "Makefile"
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*#*\s*$")
MARK = re.compile(r"^\s*<!--\s*example:\s*(?P<reason>.+?)\s*-->\s*$")
EXAMPLE_TIMEOUT_S = 600


@dataclass
class Block:
    index: int  # among the blocks of its language, from 0
    lang: str
    heading: str
    line: int  # of the opening fence, from 1
    code: str
    mark: str | None  # the reason of an `<!-- example: ... -->` just before the fence


def fenced_blocks(text: str) -> list[Block]:
    """The fenced code blocks of a Markdown text, in order, each with the nearest heading above it."""
    blocks: list[Block] = []
    counts: dict[str, int] = {}
    heading, previous, opened = "(top)", "", None
    body: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if opened is None:
            found = FENCE.match(line)
            if found:
                opened = (found, number, previous)
                body = []
            else:
                titled = HEADING.match(line)
                if titled:
                    heading = titled["title"]
                if line.strip():
                    previous = line
            continue
        start, first, before = opened
        closing = line.strip()
        if len(closing) >= len(start["fence"]) and set(closing) == {start["fence"][0]}:
            lang = start["lang"].lower()
            mark = MARK.match(before)
            blocks.append(Block(counts.get(lang, 0), lang, heading, first,
                                textwrap.dedent("\n".join(body)) + "\n", mark["reason"] if mark else None))
            counts[lang] = counts.get(lang, 0) + 1
            opened, previous = None, ""
        else:
            body.append(line)
    assert opened is None, f"README.md: the fence opened on line {opened[1]} is never closed"
    return blocks


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


PYTHON_BLOCKS = [b for b in fenced_blocks(README.read_text(encoding="utf-8")) if b.lang in ("python", "py")]


def _environment(folder: Path) -> dict[str, str]:
    """A clean environment: no API keys or tokens, no memento settings, and a HOME (and XDG folders)
    inside the test's folder, so nothing reads or writes the user's data folder."""
    home = folder / "home"
    env = {key: os.environ[key] for key in ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "SYSTEMROOT")
           if key in os.environ}
    env.update({
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "ANONYMIZED_TELEMETRY": "False",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def test_the_readme_has_python_examples():
    assert len(PYTHON_BLOCKS) >= 3, [b.line for b in PYTHON_BLOCKS]


@pytest.mark.slow
@pytest.mark.timeout(EXAMPLE_TIMEOUT_S + 60)
@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[f"{b.index}-{_slug(b.heading)}" for b in PYTHON_BLOCKS])
def test_python_example_runs(block: Block, tmp_path):
    if block.mark:
        compile(block.code, f"README.md line {block.line}", "exec")  # what cannot run here still has to parse
        pytest.skip(f"README.md line {block.line} ({block.heading}): {block.mark}")
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "home").mkdir()
    script = tmp_path / "example.py"
    script.write_text(block.code, encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], cwd=work, env=_environment(tmp_path), capture_output=True,
                          text=True, timeout=EXAMPLE_TIMEOUT_S)
    assert done.returncode == 0, (
        f"README.md line {block.line}, python example {block.index} under '{block.heading}' exited "
        f"{done.returncode}\n--- code ---\n{block.code}--- stdout ---\n{done.stdout[-3000:]}\n"
        f"--- stderr ---\n{done.stderr[-6000:]}")


def _makefile_targets(text: str) -> set[str]:
    targets: set[str] = set()
    for line in text.splitlines():
        rule = re.match(r"^([A-Za-z0-9_.%/$()-][^:=#\t]*?)\s*::?(?!=)", line)
        if rule:
            targets.update(rule.group(1).split())
    return targets


def test_the_readme_first_commands_are_makefile_targets():
    first = fenced_blocks(README.read_text(encoding="utf-8"))[0]
    assert first.lang in ("bash", "sh", "shell", "console"), f"README.md's first block is {first.lang!r}, not bash"
    commands = re.findall(r"^\s*(?:\$\s*)?make\s+([\w.-]+)", first.code, flags=re.MULTILINE)
    assert commands, f"README.md's first block names no make command:\n{first.code}"
    missing = sorted(set(commands) - _makefile_targets(MAKEFILE.read_text(encoding="utf-8")))
    assert not missing, f"README.md's first lines run make {', '.join(missing)}, which the Makefile does not define"


def test_the_block_reader_sees_headings_marks_and_fences():
    text = textwrap.dedent("""\
        # Top
        ```bash
        make demo
        ```
        ## Section A
        <!-- example: needs a server -->

        ```python
        print("a")
        ```
        - item:
          ```python
          print("b")
          ```
        """)
    first, second, third = fenced_blocks(text)
    assert (first.lang, first.heading, first.code) == ("bash", "Top", "make demo\n")
    assert (second.index, second.heading, second.mark, second.code) == (0, "Section A", "needs a server", 'print("a")\n')
    assert (third.index, third.mark, third.code) == (1, None, 'print("b")\n')
    assert {"demo", "test", "setup"} <= _makefile_targets("demo: $(READY)\n\t$(BIN)/memento demo\ntest setup: x\nA := 1\n")
