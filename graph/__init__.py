"""The Memento StateGraph: state, context, routing, `build_graph()` and the module-level `graph`."""

from typing import Any

from memento.graph.context import ConfigError, Context, load_context
from memento.graph.state import InputState, OutputState, State

__all__ = ["NODES", "ConfigError", "Context", "InputState", "OutputState", "State", "build_graph", "graph",
           "load_context"]


def __getattr__(name: str) -> Any:
    # The builder imports the nodes, and the nodes import this package's context and state:
    # loading the builder on first use keeps `import memento.nodes...` free of that cycle.
    if name in {"NODES", "build_graph", "graph"}:
        from memento.graph import builder

        return getattr(builder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
