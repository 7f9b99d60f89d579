from memento.graph import NODES, build_graph, graph


def _edges(compiled):
    drawn = compiled.get_graph()
    return {(e.source, e.target) for e in drawn.edges}, set(drawn.nodes)


def test_the_five_nodes_the_plan_review_and_their_edges():
    edges, nodes = _edges(build_graph())
    assert nodes == {"__start__", "__end__", *NODES}
    assert set(NODES) == {"retrieve_cases", "plan", "review_plan", "execute_subtask", "replan", "write_case"}
    assert edges == {
        ("__start__", "retrieve_cases"),
        ("retrieve_cases", "plan"), ("retrieve_cases", "__end__"),
        ("plan", "review_plan"), ("replan", "review_plan"),
        ("review_plan", "execute_subtask"), ("review_plan", "replan"),
        ("plan", "execute_subtask"), ("plan", "write_case"), ("plan", "__end__"),
        ("execute_subtask", "execute_subtask"), ("execute_subtask", "replan"),
        ("replan", "execute_subtask"), ("replan", "write_case"), ("replan", "__end__"),
        ("write_case", "__end__"),
    }


def test_module_graph_has_no_checkpointer_for_langgraph_dev():
    assert graph.checkpointer is None


def test_input_and_output_schemas():
    inputs = graph.get_input_jsonschema()["properties"]
    outputs = graph.get_output_jsonschema()["properties"]
    assert set(inputs) == {"task", "files", "ground_truth"}
    assert {"final_answer", "plans", "results", "cases_used", "reward", "error"} <= set(outputs)
    assert "next_subtask" not in outputs
