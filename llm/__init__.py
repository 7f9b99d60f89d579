"""Chat models for the three roles (planner, executor, judge), real or simulated."""

from memento.llm.factory import ModelError, check_model_settings, make_chat_model, model_call
from memento.llm.simulated import SimulatedChatModel

__all__ = ["ModelError", "SimulatedChatModel", "check_model_settings", "make_chat_model", "model_call"]
