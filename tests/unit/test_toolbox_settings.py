import json
import sys

import pytest

from memento.cli.runner import thread_config
from memento.graph.context import ConfigError, Context
from memento.mcp_servers.client import REDACTED, connections, redact_secrets

SERVERS = {"search": {"transport": "stdio", "command": "{python}", "args": ["-m", "x", "--region=${MEMENTO_TEST_REGION}"],
                      "env": {"SEARCH_KEY": "sk-literal-secret", "REGION": "${MEMENTO_TEST_REGION}"}},
           "remote": {"transport": "streamable_http", "url": "https://h.example/mcp?region=${MEMENTO_TEST_REGION}",
                      "headers": {"Authorization": "Bearer ${MEMENTO_TEST_REGION}", "X-Literal": "token-123"}}}


def test_stored_run_settings_hold_no_literal_secrets():
    stored = thread_config("t", Context(mcp_servers=SERVERS))["configurable"]["memento_settings"]
    assert "sk-literal-secret" not in stored
    env = json.loads(stored)["mcp_servers"]["search"]["env"]
    assert env == {"SEARCH_KEY": REDACTED, "REGION": "${MEMENTO_TEST_REGION}"}
    headers = json.loads(stored)["mcp_servers"]["remote"]["headers"]
    assert headers == {"Authorization": "Bearer ${MEMENTO_TEST_REGION}", "X-Literal": REDACTED}
    assert "token-123" not in stored


def test_references_expand_from_the_environment(monkeypatch):
    monkeypatch.setenv("MEMENTO_TEST_REGION", "eu")
    conns = connections(SERVERS, workspace="/w")
    conn = conns["search"]
    assert conn["command"] == sys.executable and conn["args"][-1] == "--region=eu"
    assert conn["env"] == {"SEARCH_KEY": "sk-literal-secret", "REGION": "eu"}  # nothing of the run: it rides in _meta
    assert conns["remote"]["url"].endswith("region=eu") and conns["remote"]["headers"]["Authorization"] == "Bearer eu"


def test_redacted_or_missing_secrets_are_named(monkeypatch):
    monkeypatch.delenv("MEMENTO_TEST_REGION", raising=False)
    with pytest.raises(ConfigError, match="MEMENTO_TEST_REGION"):
        connections(SERVERS)
    with pytest.raises(ConfigError, match="env.SEARCH_KEY was not stored"):
        connections(redact_secrets(SERVERS))


def test_config_servers_add_to_the_built_in_ones(tmp_path):
    from memento.graph.context import load_context

    path = tmp_path / "c.toml"
    path.write_text('[mcp_servers.search]\ntransport = "streamable_http"\nurl = "http://h/mcp"\n\n'
                    '[mcp_servers.media]\nenabled = true\ncommand = "{python}"\nargs = ["-m", "memento.mcp_servers.media"]\n')
    servers = load_context(path).mcp_servers
    assert set(servers) == {"math", "documents", "code", "web", "media", "search"}
    assert servers["media"]["enabled"] is True and servers["search"]["url"] == "http://h/mcp"
