"""The Memento StateGraph: state, context, routing, `build_graph()` and the module-level `graph`."""

from memento.graph.builder import NODES, build_graph, graph
from memento.graph.context import ConfigError, Context, load_context
from memento.graph.state import InputState, OutputState, State

__all__ = ["NODES", "ConfigError", "Context", "InputState", "OutputState", "State", "build_graph", "graph",
           "load_context"]
