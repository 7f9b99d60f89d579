"""Structured replies the planner and the judge must give."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from pydantic import BaseModel, Field, create_model, model_validator

SUBTASK_CHARS = 2000  # longest subtask instruction a plan may hold


class PlannerDecision(BaseModel):
    """The planner's decision: either an ordered plan of subtasks to run next, or the final answer."""

    reasoning: str = Field(default="", description="One or two sentences on why this decision.")
    subtasks: list[str] = Field(
        default_factory=list,
        description="Ordered subtasks, each a self-contained instruction for the executor. "
                    "Empty when giving the final answer.")
    final_answer: str | None = Field(
        default=None, description="The final answer to the task, only when no more subtasks are needed.")
    cases_used: list[int] = Field(
        default_factory=list,
        description="Numbers of the past cases this decision relies on (followed or avoided); empty if none.")

    @model_validator(mode="after")
    def _plan_or_answer(self) -> "PlannerDecision":
        self.subtasks = [s.strip() for s in self.subtasks]
        has_answer = bool(self.final_answer and self.final_answer.strip())
        if any(not s for s in self.subtasks):
            raise ValueError("every subtask must be a non-empty instruction")
        if any(n < 1 for n in self.cases_used):
            raise ValueError("cases_used holds the numbers of shown past cases, counting from 1")
        if bool(self.subtasks) == has_answer:
            raise ValueError("give either a non-empty list of subtasks or a final answer, not both and not neither")
        return self


class FinalAnswer(BaseModel):
    """The final answer to the task, given from the results gathered so far."""

    reasoning: str = Field(default="", description="One or two sentences on how the results support the answer.")
    final_answer: str = Field(description="The final answer, as short as the task allows.")

    @model_validator(mode="after")
    def _non_empty(self) -> "FinalAnswer":
        if not self.final_answer.strip():
            raise ValueError("final_answer must not be empty")
        return self


class JudgeVerdict(BaseModel):
    """The judge's verdict on an answer."""

    correct: bool = Field(description="Whether the answer correctly and fully answers the task.")
    reason: str = Field(default="", description="One sentence on why.")


@lru_cache(maxsize=16)
def bounded_plan(max_subtasks: int) -> type[PlannerDecision]:
    """`PlannerDecision` whose JSON schema bounds the plan (`maxItems`, each subtask's
    `maxLength`), so a server that enforces the schema cannot loop out a plan of hundreds."""
    step = Annotated[str, Field(max_length=SUBTASK_CHARS)]
    return create_model(
        "PlannerDecision", __base__=PlannerDecision, __doc__=PlannerDecision.__doc__,
        subtasks=(list[step], Field(default_factory=list, max_length=max_subtasks,
                                    description=PlannerDecision.model_fields["subtasks"].description)))
