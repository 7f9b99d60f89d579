"""The simulated model's table skills and its planner's rule for weighing past cases."""

import json

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from memento.graph.context import Context
from memento.llm import table_skills as tables
from memento.llm.simulated import SimulatedChatModel
from memento.nodes import prompts
from memento.nodes.planner import planner_messages
from memento.nodes.schemas import PlannerDecision

MARKDOWN = "## Sheet data\n| id | net_cost | list_cost |\n| --- | --- | --- |\n| a | 1.50 | 2 |\n| b | 3 | 4.25 |"


@pytest.mark.parametrize("text", [
    MARKDOWN,
    json.dumps([{"id": "a", "net_cost": 1.5, "list_cost": 2}, {"id": "b", "net_cost": 3, "list_cost": 4.25}], indent=2),
    '{"id": "a", "net_cost": 1.5, "list_cost": 2}\n{"id": "b", "net_cost": 3, "list_cost": 4.25}',
])
def test_columns_are_read_from_markdown_json_and_json_lines(text):
    table = tables.parse_table(text)
    assert table[0] == ["id", "net_cost", "list_cost"]
    assert tables.numeric_columns(table) == ["net_cost", "list_cost"]
    assert [float(v) for v in tables.column_values(text, "list_cost")] == [2.0, 4.25]


def test_a_missing_column_names_the_columns_there_are():
    with pytest.raises(ValueError, match="no column 'gross'; its columns are id, net_cost, list_cost"):
        tables.column_values(MARKDOWN, "gross")
    with pytest.raises(ValueError, match="does not hold only numbers"):
        tables.column_values(MARKDOWN, "id")
    with pytest.raises(ValueError, match="no table"):
        tables.column_values("just words", "id")


@pytest.mark.parametrize("question,operation", [
    ("What is the total cost in the attached log?", "sum"),
    ("What is the spread between the largest and smallest weight?", "range"),
    ("Find the minimum reading.", "minimum"),
    ("What is the weight on average in the attached file?", "mean"),
    ("Who wrote Hamlet?", None),
])
def test_the_asked_aggregate(question, operation):
    assert tables.asked_operation(question) == operation


def test_expressions_and_the_steps_round_trip():
    assert tables.aggregate_expression("mean", ["1", "2.5"]) == "(1 + 2.5) / 2"
    assert tables.aggregate_expression("range", ["1", "2"]) == "max(1, 2) - min(1, 2)"
    steps = tables.procedure("/d/f.csv", "net_cost", "sum")
    assert tables.read_path(steps[0]) == "/d/f.csv" and tables.plan_column(steps) == "net_cost"
    assert tables.step_operation(steps[2]) == "sum"
    assert tables.values_from_text(tables.values_text("x", ["1", "2.5"])) == ["1", "2.5"]


def case(n, column, reward):
    return {"id": f"c{n}", "task": f"What is the total cost in the attached log for month {n}?", "reward": reward,
            "similarity": 0.9, "final_answer": "1",
            "plan": [tables.COLUMN_STEP.format(column=column), tables.AGGREGATE_STEP.format(operation="sum")]}


def decide(cases, results=None, persona="default"):
    state = {"task": "What is the total cost in the attached purchase log?", "run_files": ["/data/t.csv"],
             "cases_used": cases, "results": results or []}
    messages = planner_messages(state, Context(), prompts.PLAN_INSTRUCTION.format(max_cycles=3))
    reply = SimulatedChatModel(persona=persona).with_structured_output(PlannerDecision, include_raw=True).invoke(messages)
    return reply["parsed"]


def test_with_no_case_it_reads_the_table_first():
    decision = decide([])
    assert decision.subtasks == [tables.READ_STEP.format(path="/data/t.csv")] and decision.cases_used == []


def test_it_follows_the_rank_weighted_vote_and_cites_the_voters():
    # Successes: net (1st), list (2nd), list (3rd) -> net 1, list 1/2 + 1/3: net wins ...
    decision = decide([case(1, "net_cost", 1.0), case(2, "list_cost", 1.0), case(3, "list_cost", 1.0)])
    assert tables.plan_column(decision.subtasks) == "net_cost" and decision.cases_used == [1]
    assert tables.read_path(decision.subtasks[0]) == "/data/t.csv"  # the case's plan adapted to this file
    # ... unless a failure with net (1st failure, -1) outweighs it: then list (5/6) wins.
    decision = decide([case(1, "net_cost", 1.0), case(2, "list_cost", 1.0), case(3, "list_cost", 1.0),
                       case(4, "net_cost", 0.0)])
    assert tables.plan_column(decision.subtasks) == "list_cost" and decision.cases_used == [2, 3]


def test_a_case_the_decision_overrules_is_not_cited():
    # net: 1 + 1/2 (successes) - 1 (the first failure) = 1/2 > 0: followed, and the failure overruled.
    decision = decide([case(1, "net_cost", 1.0), case(2, "net_cost", 1.0), case(3, "net_cost", 0.0)])
    assert tables.plan_column(decision.subtasks) == "net_cost" and decision.cases_used == [1, 2]


def test_the_primacy_reader_follows_the_first_success_that_fits():
    cases = [case(1, "net_cost", 1.0), case(2, "list_cost", 1.0), case(3, "list_cost", 1.0)]
    assert tables.plan_column(decide(cases).subtasks) == "net_cost"
    decision = decide(cases, persona="primacy")
    assert tables.plan_column(decision.subtasks) == "net_cost" and decision.cases_used == [1]
    # Where the vote lets a failure outweigh the first success, primacy still follows the first success ...
    cases.append(case(4, "net_cost", 0.0))
    assert tables.plan_column(decide(cases).subtasks) == "list_cost"
    decision = decide(cases, persona="primacy")
    assert tables.plan_column(decision.subtasks) == "net_cost" and decision.cases_used == [1]
    # ... and a success whose column the file lacks does not fit: the next one is followed.
    read = [{"cycle": 1, "index": 1, "subtask": tables.READ_STEP.format(path="/data/t.csv"),
             "result": "| id | list_cost | landed_cost |\n| --- | --- | --- |\n| a | 2 | 3 |"}]
    decision = decide(cases, read, persona="primacy")
    assert tables.plan_column(decision.subtasks) == "list_cost" and decision.cases_used == [2]


def test_the_primacy_reader_avoids_every_failed_column_when_no_success_fits():
    read = [{"cycle": 1, "index": 1, "subtask": tables.READ_STEP.format(path="/data/t.csv"),
             "result": "| id | net_cost | list_cost | landed_cost |\n| --- | --- | --- | --- |\n| a | 1 | 2 | 3 |"}]
    decision = decide([case(1, "net_cost", 0.0), case(2, "list_cost", 0.0)], read, persona="primacy")
    assert tables.plan_column(decision.subtasks) == "landed_cost" and sorted(decision.cases_used) == [1, 2]


def test_after_reading_it_guesses_among_untried_columns_and_avoids_failed_ones():
    read = [{"cycle": 1, "index": 1, "subtask": tables.READ_STEP.format(path="/data/t.csv"),
             "result": "[simulated] | id | net_cost | list_cost | landed_cost |\n| --- | --- | --- | --- |\n"
                       "| a | 1 | 2 | 3 |"}]
    decision = decide([case(1, "net_cost", 0.0), case(2, "list_cost", 0.0)], read)
    assert tables.plan_column(decision.subtasks) == "landed_cost"  # the only column no failure voted against
    assert sorted(decision.cases_used) == [1, 2]  # the failures that ruled columns out


def test_the_guess_is_fixed_by_the_task_text():
    read = [{"cycle": 1, "index": 1, "subtask": tables.READ_STEP.format(path="/data/t.csv"),
             "result": "| id | a1 | a2 | a3 | a4 |\n| --- | --- | --- | --- | --- |\n| x | 1 | 2 | 3 | 4 |"}]
    picks = {tables.plan_column(decide([], read).subtasks) for _ in range(3)}
    assert len(picks) == 1


def test_prompt_numbers_cases_across_both_sections():
    messages = planner_messages({"task": "t", "cases_used": [case(1, "a", 0.0), case(2, "b", 1.0)], "results": []},
                                Context(), "# Instruction\nplan")
    text = messages[1].text
    assert "# Successful past cases" in text and text.index("## Case 1") < text.index("# Failed past cases")
    assert text.index("## Case 2") > text.index("# Failed past cases")
    assert isinstance(messages[0], SystemMessage) and isinstance(messages[1], HumanMessage)
