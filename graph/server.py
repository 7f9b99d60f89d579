"""The graph that `langgraph dev` and `langgraph build` serve (`langgraph.json`).

The operator of the server decides its settings through the server's environment, read once when
the server loads this module: `MEMENTO_CONFIG` (a config file, as `memento --config` takes) and
`MEMENTO_DATA_DIR` (the data folder; default: the per-user data folder) and `MEMENTO_CHECKPOINTER`
(a Postgres URL: where the learning log of a team's workers lives). A caller's run context
may only hold the fields of `memento.graph.caller.CallerContext`; who may call, and which threads
each caller sees, is `memento.graph.auth`.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from memento.graph.builder import build_graph
from memento.graph.context import Context, load_context
from memento.graph.persistence import CHECKPOINTER_VARIABLE

CONFIG_VARIABLE = "MEMENTO_CONFIG"
DATA_DIR_VARIABLE = "MEMENTO_DATA_DIR"


def operator_context(environ: Mapping[str, Any] = os.environ) -> Context:
    """The server's settings: the defaults, then the config file, then the data folder and the
    Postgres database of the learning log (`MEMENTO_CHECKPOINTER`; the server's own threads are
    checkpointed by the LangGraph server itself)."""
    return load_context(environ.get(CONFIG_VARIABLE) or None, data_dir=environ.get(DATA_DIR_VARIABLE) or None,
                        checkpointer=environ.get(CHECKPOINTER_VARIABLE) or None)


graph = build_graph(operator=operator_context())
