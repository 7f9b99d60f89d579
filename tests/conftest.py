"""Shared fixtures. Everything is real (Chroma, SQLite, MCP over stdio, the encoder) except the
LLM, which is the project's simulated model."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
# One torch thread per process (and per subprocess a test starts): tests share a busy machine,
# where torch's default of every core makes small models many times slower, not faster.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402

from memento.graph import Context, build_graph  # noqa: E402


@pytest.fixture(autouse=True)
def _release_embedded_banks():
    """Each test's embedded case banks are closed after it (their folders locked until then)."""
    yield
    from memento.memory.resources import release_case_banks

    release_case_banks()


@pytest.fixture
def ctx(tmp_path) -> Context:
    return Context(data_dir=str(tmp_path / "data"))


@pytest.fixture
def graph():
    return build_graph(InMemorySaver())


@pytest.fixture
def numbers_file(tmp_path):
    path = tmp_path / "numbers.txt"
    path.write_text("apples 12\npears 30\nplums 7\n", encoding="utf-8")
    return str(path)


def run(graph, ctx: Context, task: str, thread: str = "t1", **inputs):
    config = {"configurable": {"thread_id": thread}}
    graph.invoke({"task": task, **inputs}, config, context=ctx)
    return graph.get_state(config).values
