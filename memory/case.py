"""The case schema: one finished run, as the case bank stores it."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, Field, field_validator

from memento.memory.provenance import CALLER_PREFIX, OPERATOR, REWARD_SOURCES, SHARED_SCOPE, is_author

SUCCESS_THRESHOLD = 0.5


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Case(BaseModel):
    """A past run: the task, the plan that was followed, what came of it, and its reward."""

    id: str = Field(min_length=1, max_length=512, pattern=r"^[^\x00-\x1f\x7f]+$",
                    description="Unique id: 1 to 512 characters, no control characters.")
    task: str = Field(min_length=1)
    plan: list[str] = Field(default_factory=list, description="The last plan's subtasks, in order.")
    result_summary: str = Field(default="", description="Short summary of the subtask results.")
    final_answer: str = ""
    reward: float = Field(ge=0.0, le=1.0)
    scored_by: str = Field(default="", description="ground_truth, judge:<model> or human.")
    thread_id: str | None = None
    plan_source: str | None = Field(default=None, description="The plan exactly as an imported file gave it.")
    author: str = Field(default=OPERATOR, description="Who wrote the case: operator, or caller:<identity> for a "
                                                      "caller of the served graph.")
    scope: str = Field(default=SHARED_SCOPE, description="Who reads it: shared (the operator's scope), or the "
                                                         "caller's own scope caller:<identity>.")
    reward_source: str = Field(default="", description="Where the reward came from: operator_ground_truth, "
                               "caller_ground_truth, judge, operator_review, caller_review or import.")
    reviewer: str = Field(default="", description="Who set the reward by hand, when a reviewer did.")
    promoted_by: str = Field(default="", description="Who moved the case into the shared scope, when it was "
                                                     "promoted from a caller's scope.")
    quarantined: bool = Field(default=False, description="Kept, but never retrieved.")
    created_at: str = Field(default_factory=utc_now)
    updated_at: str = Field(default_factory=utc_now)

    @field_validator("author")
    @classmethod
    def _author(cls, value: str) -> str:
        if not is_author(value):
            raise ValueError("author must be operator or caller:NAME")
        return value

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: str) -> str:
        if value != SHARED_SCOPE and not (value.startswith(CALLER_PREFIX) and is_author(value)):
            raise ValueError("scope must be shared or caller:NAME")
        return value

    @field_validator("reward_source")
    @classmethod
    def _source(cls, value: str) -> str:
        if value not in REWARD_SOURCES:
            raise ValueError(f"reward_source must be one of {', '.join(s for s in REWARD_SOURCES if s)}")
        return value

    @property
    def success(self) -> bool:
        return self.reward >= SUCCESS_THRESHOLD

    def plan_text(self) -> str:
        """The plan as one text, the form its embedding is computed from."""
        return "\n".join(self.plan) or self.task

    def to_metadata(self) -> dict[str, Any]:
        """Flat scalar metadata, as Chroma requires; the task is the stored document."""
        return {
            "plan": json.dumps(self.plan, ensure_ascii=False),
            "result_summary": self.result_summary,
            "final_answer": self.final_answer,
            "reward": float(self.reward),
            "scored_by": self.scored_by,
            "thread_id": self.thread_id or "",
            "plan_source": self.plan_source or "",
            "author": self.author,
            "scope": self.scope,
            "reward_source": self.reward_source,
            "reviewer": self.reviewer,
            "promoted_by": self.promoted_by,
            "quarantined": self.quarantined,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_record(cls, case_id: str, document: str, metadata: dict[str, Any]) -> "Case":
        return cls(
            id=case_id,
            task=document,
            plan=json.loads(metadata.get("plan") or "[]"),
            result_summary=metadata.get("result_summary", ""),
            final_answer=metadata.get("final_answer", ""),
            reward=float(metadata.get("reward", 0.0)),
            scored_by=metadata.get("scored_by", ""),
            thread_id=metadata.get("thread_id") or None,
            plan_source=metadata.get("plan_source") or None,
            # A case stored before provenance was recorded was the operator's.
            author=metadata.get("author") or OPERATOR,
            scope=metadata.get("scope") or SHARED_SCOPE,
            reward_source=metadata.get("reward_source") or "",
            reviewer=metadata.get("reviewer") or "",
            promoted_by=metadata.get("promoted_by") or "",
            quarantined=bool(metadata.get("quarantined", False)),
            created_at=metadata.get("created_at", ""),
            updated_at=metadata.get("updated_at", ""),
        )


class RetrievedCase(Case):
    """A case as retrieval returns it, with its similarity to the query task, under parametric
    retrieval Q (the predicted reward of planning with it), and its utility when it has one."""

    similarity: float
    q: float | None = None
    utility: float | None = Field(default=None, description="The case's learned utility (utility mode); "
                                                             "None until a run credits it.")
