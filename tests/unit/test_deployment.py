"""The deployment files: `langgraph dockerfile` makes an image with the CPU build of torch and
bubblewrap, the build leaves this machine's files out, the compose file keeps its services apart
and behind passwords, and the served config refuses the sandbox's rlimit fallback."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def dockerfile(tmp_path: Path) -> str:
    """The Dockerfile `langgraph build` would build, as `langgraph dockerfile` prints it."""
    cli = shutil.which("langgraph", path=str(Path(sys.executable).parent))
    if cli is None:
        pytest.skip("langgraph-cli is not installed (it comes with the test extras)")
    out = tmp_path / "Dockerfile"
    subprocess.run([cli, "dockerfile", str(out)], cwd=ROOT, check=True, capture_output=True, timeout=120,
                   env={**os.environ, "LANGGRAPH_CLI_NO_ANALYTICS": "1"})
    return out.read_text()


def test_the_dockerfile_installs_cpu_torch_before_the_package(tmp_path):
    text = dockerfile(tmp_path)
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


def test_the_image_installs_bubblewrap_and_serves_with_the_auth_settings(tmp_path):
    text = dockerfile(tmp_path)
    # Debian's package, in the image the server runs from (the default distro; its tag has no suffix).
    assert re.search(r"^FROM langchain/langgraph-api:3\.11$", text, re.M)
    install = next(line for line in text.splitlines() if "bubblewrap" in line)
    assert install.startswith("RUN apt-get update && apt-get install -y") and "rm -rf /var/lib/apt/lists" in install
    # Before the project is copied in (its folder is named after the checkout's, whatever that is).
    assert text.index(install) < re.search(r"^ADD \. /deps/", text, re.M).start()
    auth = json.loads(re.search(r"^ENV LANGGRAPH_AUTH='(.*)'$", text, re.M).group(1))
    assert auth == {"path": "memento.graph.auth:auth", "disable_studio_auth": True}
    http = json.loads(re.search(r"^ENV LANGGRAPH_HTTP='(.*)'$", text, re.M).group(1))
    assert http["app"] == "memento.graph.auth:app"
    assert "*" not in http["cors"]["allow_origins"] and not http["cors"].get("allow_credentials")
    from starlette.applications import Starlette

    from memento.graph import auth as auth_module

    assert isinstance(auth_module.app, Starlette)
    # The build context is the folder of langgraph.json: its .dockerignore decides what goes in.
    assert f"ADD . /deps/{ROOT.name}" in text and (ROOT / "langgraph.json").is_file()


def docker_ignores(patterns: list[str], path: str) -> bool:
    """Whether Docker leaves `path` (relative to the build context) out: a pattern matches the path
    or a folder above it; `*` and `?` stay within one path component, `**` spans any number."""
    for pattern in patterns:
        expression = ""
        for token in re.findall(r"\*\*/|\*\*|\*|\?|[^*?]+", pattern.strip("/")):
            expression += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(token) or re.escape(token)
        parts = path.split("/")
        if any(re.fullmatch(expression, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            return True
    return False


def test_the_build_leaves_out_environments_history_secrets_data_and_caches():
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert not any(p.startswith("!") for p in patterns)  # nothing taken back in
    for path in (".venv/bin/python", ".git/config", ".langgraph_api/.langgraph_checkpoint.1.pckl", ".env",
                 ".env.local", "configs/.env", ".memento/chroma/chroma.sqlite3", "data/checkpoints.sqlite",
                 "graph/__pycache__/auth.cpython-311.pyc", ".pytest_cache/v/cache/lastfailed", ".ruff_cache/x",
                 "memento_langgraph.egg-info/PKG-INFO", "build/lib/x.py", "dist/x.whl", "retriever.pt",
                 "tests/integration/test_langgraph_dev.py", "somewhere/data/learning.sqlite"):
        assert docker_ignores(patterns, path), path
    # What `pip install .` in the image needs stays: the project's metadata, readme and packages.
    packages = ["pyproject.toml", "README.md", "langgraph.json", "configs/team.toml", "configs/default.toml"]
    packages += [str(p.relative_to(ROOT)) for p in ROOT.glob("*/__init__.py") if p.parent.name != "tests"]
    assert len(packages) > 10
    for path in packages:
        assert not docker_ignores(patterns, path), path


def test_the_compose_file_keeps_each_service_apart_and_behind_a_password():
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    server = services["memento-server"]
    # Redis asks for a password from the environment, kept off its command line, and the server sends it.
    redis = services["redis"]
    assert redis["environment"]["REDIS_PASSWORD"] == "${REDIS_PASSWORD:?set REDIS_PASSWORD}"
    started = " ".join(redis["command"])
    assert "requirepass %s" in started and '"$$REDIS_PASSWORD"' in started and "${REDIS_PASSWORD" not in started
    assert "REDISCLI_AUTH" in redis["healthcheck"]["test"][1] and "grep -q PONG" in redis["healthcheck"]["test"][1]
    assert server["environment"]["REDIS_URI"] == "redis://:${REDIS_PASSWORD}@redis:6379"
    # Each backing service alone on an internal network of its own, which only the server joins; no published port.
    for name in ("postgres", "chroma", "redis"):
        assert services[name]["networks"] == [name] and "ports" not in services[name], name
        assert compose["networks"][name] == {"internal": True}, name
        members = [other for other, service in services.items() if name in service.get("networks", ["default"])]
        assert sorted(members) == sorted([name, "memento-server"]), (name, members)
    assert "default" in server["networks"]  # its published port and the model endpoints
    # bubblewrap's namespaces inside the container.
    assert set(server["security_opt"]) == {"seccomp=unconfined", "apparmor=unconfined", "systempaths=unconfined"}


def test_the_served_config_refuses_the_rlimit_fallback(tmp_path):
    import yaml

    from memento.graph.context import default_mcp_servers, load_context
    from memento.mcp_servers.client import connections

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounted = compose["services"]["memento-server"]["volumes"][0].split(":")[0]
    servers = load_context(ROOT / mounted).mcp_servers
    assert servers["code"].get("enabled", True)
    # The built-in code server's settings, but bwrap only (the config replaces the whole entry).
    assert [a if a != "bwrap" else "auto" for a in servers["code"]["args"]] == default_mcp_servers()["code"]["args"]
    code = connections(servers, str(tmp_path / "workspaces" / "run"))["code"]
    assert code["args"][code["args"].index("--isolation") + 1] == "bwrap"

    def start(args: list[str]) -> subprocess.CompletedProcess:
        # A machine without bubblewrap (the image's is on PATH): no stdin, so a server that starts ends at once.
        return subprocess.run([code["command"], *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                              env={"PATH": str(tmp_path / "no-bwrap-here"), "HOME": str(tmp_path)})

    refused = start(code["args"])
    assert refused.returncode == 2, refused
    assert refused.stderr.strip().splitlines()[-1] == ("memento-code: bubblewrap (bwrap) is not installed: install "
                                                      "bubblewrap (apt install bubblewrap) or use --isolation rlimit")
    # The built-in setting on the same machine falls back to rlimit, keeping the network: what the config refuses.
    fallback = start([arg if arg != "bwrap" else "auto" for arg in code["args"]])
    assert "memento-code: sandbox rlimit:" in fallback.stderr, fallback


def test_in_the_image_the_studio_header_needs_a_token_whatever_else_is_set():
    """The image is not `langgraph dev` (no LANGSMITH_LANGGRAPH_API_VARIANT=local_dev): Studio's
    scheme gets no one in there, not even with MEMENTO_ALLOW_STUDIO=1 or MEMENTO_ALLOW_UNAUTHENTICATED=1."""
    from langgraph_sdk import Auth

    from memento.graph.auth import caller_identity

    studio = {b"x-auth-scheme": b"langsmith", b"host": b"localhost:8123", b"origin": b"https://smith.langchain.com"}
    for environ in ({"MEMENTO_ALLOW_STUDIO": "1"}, {"MEMENTO_ALLOW_UNAUTHENTICATED": "1"},
                    {"MEMENTO_ALLOW_UNAUTHENTICATED": "1", "MEMENTO_ALLOW_STUDIO": "1"},
                    {"MEMENTO_API_TOKEN": "alice:token-a", "MEMENTO_ALLOW_STUDIO": "1"}):
        for authorization in (None, "Bearer a-langsmith-token"):
            with pytest.raises(Auth.exceptions.HTTPException) as refused:
                caller_identity(authorization, "127.0.0.1", studio, environ)
            assert refused.value.status_code == 403 and "MEMENTO_ALLOW_STUDIO" in refused.value.detail, environ
    tokens = {"MEMENTO_API_TOKEN": "alice:token-a"}
    assert caller_identity("Bearer token-a", "10.1.2.3", studio, tokens) == "alice"
    assert caller_identity("Bearer token-a", "10.1.2.3", studio, {**tokens, "MEMENTO_ALLOW_STUDIO": "1"}) == "alice"
    assert caller_identity(None, "10.1.2.3", {}, {"MEMENTO_ALLOW_UNAUTHENTICATED": "1"}) == "anonymous"
