import json
import sys

import pytest

from memento.cli.runner import thread_config
from memento.graph.context import ConfigError, Context
from memento.nodes.toolbox import REDACTED, connections, redact_secrets

SERVERS = {"search": {"transport": "stdio", "command": "{python}", "args": ["-m", "x"],
                      "env": {"SEARCH_KEY": "sk-literal-secret", "REGION": "${MEMENTO_TEST_REGION}"}}}


def test_stored_run_settings_hold_no_literal_secrets():
    stored = thread_config("t", Context(mcp_servers=SERVERS))["configurable"]["memento_settings"]
    assert "sk-literal-secret" not in stored
    env = json.loads(stored)["mcp_servers"]["search"]["env"]
    assert env == {"SEARCH_KEY": REDACTED, "REGION": "${MEMENTO_TEST_REGION}"}


def test_references_expand_from_the_environment(monkeypatch):
    monkeypatch.setenv("MEMENTO_TEST_REGION", "eu")
    conn = connections(SERVERS, ["/tmp/a.txt"])["search"]
    assert conn["command"] == sys.executable
    assert conn["env"]["REGION"] == "eu" and conn["env"]["SEARCH_KEY"] == "sk-literal-secret"
    assert json.loads(conn["env"]["MEMENTO_ALLOWED_PATHS"]) == ["/tmp/a.txt"]


def test_redacted_or_missing_secrets_are_named(monkeypatch):
    monkeypatch.delenv("MEMENTO_TEST_REGION", raising=False)
    with pytest.raises(ConfigError, match="MEMENTO_TEST_REGION"):
        connections(SERVERS, [])
    with pytest.raises(ConfigError, match="SEARCH_KEY was not stored"):
        connections(redact_secrets(SERVERS), [])
