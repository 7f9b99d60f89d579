"""The graph's nodes, one module each, named as in the graph diagram."""

from memento.nodes.execute_subtask import execute_subtask
from memento.nodes.plan import plan
from memento.nodes.replan import replan
from memento.nodes.retrieve_cases import retrieve_cases
from memento.nodes.review import review_plan
from memento.nodes.write_case import write_case

__all__ = ["execute_subtask", "plan", "replan", "retrieve_cases", "review_plan", "write_case"]
