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
    # `env` in langgraph.json reaches `dev` and `up` only: a built image carries the offline settings itself.
    config = json.loads((ROOT / "langgraph.json").read_text())
    env_line = next(line for line in text.splitlines() if line.startswith("ENV HF_HUB_OFFLINE"))
    for name, value in config["env"].items():
        assert f"{name}={value}" in env_line


def test_the_compose_file_wires_the_servers_the_settings_name():
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "chroma", "redis", "memento-server"} <= set(services)
    server = services["memento-server"]["environment"]
    assert server["MEMENTO_CHECKPOINTER"].startswith("postgresql://") and "@postgres:5432/" in server["MEMENTO_CHECKPOINTER"]
    assert server["DATABASE_URI"].startswith("postgres") and "MEMENTO_API_TOKEN" in server
    mounted = services["memento-server"]["volumes"][0].split(":")[0]
    config = (ROOT / mounted).resolve()
    assert config.is_file() and 'chroma_url = "http://chroma:8000"' in config.read_text()
    from memento.graph.context import load_context

    assert load_context(config).chroma_url == "http://chroma:8000"
    chroma_image = services["chroma"]["image"]
    from importlib.metadata import version

    tag = chroma_image.rsplit(":", 1)[1]
    assert tag.split(".")[0] == version("chromadb").split(".")[0]  # the server speaks the client's protocol


def test_the_torch_pin_matches_the_projects():
    config = json.loads((ROOT / "langgraph.json").read_text())
    pyproject = (ROOT / "pyproject.toml").read_text()
    pinned = next(part for part in pyproject.split('"') if part.startswith("torch=="))
    assert any(pinned in line for line in config["dockerfile_lines"])
    makefile = (ROOT / "Makefile").read_text()
    assert f"TORCH_VERSION := {pinned.split('==')[1]}" in makefile
