"""The deployment files: `langgraph dockerfile` makes an image with the CPU build of torch."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_dockerfile_installs_cpu_torch_before_the_package(tmp_path):
    cli = shutil.which("langgraph", path=str(Path(sys.executable).parent))
    if cli is None:
        pytest.skip("langgraph-cli is not installed (it comes with the test extras)")
    out = tmp_path / "Dockerfile"
    subprocess.run([cli, "dockerfile", str(out)], cwd=ROOT, check=True, capture_output=True, timeout=120)
    text = out.read_text()
    torch_line = text.index("torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu")
    assert torch_line < text.index("pip install --system --no-cache-dir -c /api/constraints.txt -e .")
    assert text.startswith("FROM langchain/langgraph-api:3.11")


def test_the_torch_pin_matches_the_projects():
    config = json.loads((ROOT / "langgraph.json").read_text())
    pyproject = (ROOT / "pyproject.toml").read_text()
    pinned = next(part for part in pyproject.split('"') if part.startswith("torch=="))
    assert any(pinned in line for line in config["dockerfile_lines"])
    makefile = (ROOT / "Makefile").read_text()
    assert f"TORCH_VERSION := {pinned.split('==')[1]}" in makefile
