"""The graph's state: what goes in, what is carried between nodes, and what comes out.

Everything is plain JSON data (strings, numbers, lists, dicts) because it is checkpointed.
Nodes return whole new values for the keys they change; nothing accumulates by reducer, so a
thread reused for a new task starts clean in `retrieve_cases`, which also consumes the inputs.
"""

from __future__ import annotations

from typing import Any

from typing_extensions import NotRequired, TypedDict


class InputState(TypedDict):
    """A task for the agent."""

    task: str
    files: NotRequired[list[str]]
    """Paths of files attached to the task; the executor's document tools may read them."""
    ground_truth: NotRequired[str | None]
    """The expected answer, when known; the run is then scored against it, not by the judge."""


class SubtaskResult(TypedDict):
    cycle: int
    index: int
    subtask: str
    result: str
    tool_calls: list[dict[str, Any]]
    ok: bool


class OutputState(TypedDict):
    """What a finished run returns."""

    final_answer: str | None
    plans: list[list[str]]
    results: list[SubtaskResult]
    cases_used: list[dict[str, Any]]
    reward: float | None
    score: dict[str, Any] | None
    case_id: str | None
    error: str | None
    transitions: int
    """(task, case, reward) transitions the run recorded in the learning log (0: none, or learning off)."""
    retriever_version: int | None
    """Parametric retrieval: the version of the learner's weights the run ranked its cases with."""
    ranking: str | None
    """Parametric retrieval: `learned` when the Q-retriever ordered the shown cases, `similarity` while
    it has not yet beaten the similarity order on runs it had not learned from (the fallback)."""


class State(InputState, OutputState):
    """Everything the nodes share."""

    plan: list[str]
    """The plan being executed (the last element of `plans`)."""
    next_subtask: int
    """Index in `plan` of the next subtask to execute."""
    cycle: int
    """Planning cycles started so far (1 after the first plan)."""
    planner_notes: list[str]
    """The planner's short reasoning per decision, for the trace."""
    case_written: bool
    cited_cases: list[str]
    """Ids of the shown cases the planner said the current plan (and the answer) relied on,
    followed or avoided: the online Q update credits the run's reward to them."""
    abandoned_cases: list[str]
    """Ids of cases cited only for plans that were replaced: their advice did not lead to the
    answer, so the Q update credits them with reward 0."""
    run_files: list[str]
    """This run's attached files (absolute). `retrieve_cases` moves the inputs `files` and
    `ground_truth` here and clears them: LangGraph keeps any key a new input leaves out, and a
    thread reused for a new task must not inherit the last task's files or ground truth."""
    run_ground_truth: str | None
    run_approval: dict[str, Any] | None
    """The approval policy the run started with: every approval point reads it from here, so a
    resume with other settings (or none, from a server client) cannot change what is asked midway."""
    plan_review: bool
    """The current plan waits for human approval before it runs (`review_plan`)."""
    plan_rejected: bool
    """A reviewer rejected the last plan: `replan` plans again, and the new plan is reviewed too."""
    review_feedback: list[str]
    """What human reviewers said when they rejected a plan; the planner sees it from then on."""
    case_discarded: bool
    """A reviewer discarded the case: nothing was written and the retriever learned nothing."""
    kept_workspace: str | None
    """The run's code workspace, where it was kept after the run (`keep_workspaces`)."""

