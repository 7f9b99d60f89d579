"""The compiled graph composes like any Runnable: invoke, stream and batch inside another chain."""

from langchain_core.runnables import RunnableLambda

from memento.graph import build_graph

as_input = RunnableLambda(lambda question: {"task": question})


def test_invoke_inside_a_chain(ctx):
    chain = as_input | build_graph().bind(context=ctx)
    out = chain.invoke("What is 6 * 7?")
    assert out["final_answer"] == "42"
    assert set(out) >= {"final_answer", "plans", "results", "cases_used", "reward"}
    assert "next_subtask" not in out  # the output schema, not the internal state


def test_stream_updates_inside_a_chain(ctx):
    chain = as_input | build_graph().bind(context=ctx, stream_mode="updates")
    chunks = list(chain.stream("What is 6 * 7?"))
    assert [next(iter(chunk)) for chunk in chunks] == [
        "retrieve_cases", "plan", "execute_subtask", "replan", "write_case"]
    assert chunks[3]["replan"]["final_answer"] == "42"


def test_stream_messages_inside_a_chain(ctx):
    chain = as_input | build_graph().bind(context=ctx, stream_mode="messages")
    chunks = list(chain.stream("What is 6 * 7?"))
    by_node = {meta["langgraph_node"] for _, meta in chunks}
    assert {"plan", "execute_subtask", "replan", "write_case"} <= by_node
    executor_texts = [message.text for message, meta in chunks if meta["langgraph_node"] == "execute_subtask"]
    assert "[simulated] 42" in executor_texts
    tool_calls = [c["name"] for message, meta in chunks if meta["langgraph_node"] == "execute_subtask"
                  for c in getattr(message, "tool_calls", [])]
    assert tool_calls == ["calculate"]


def test_batch_inside_a_chain(ctx):
    chain = as_input | build_graph().bind(context=ctx)
    outs = chain.batch(["What is 6 * 7?", "What is 2 + 3?"], config={"max_concurrency": 2})
    assert [o["final_answer"] for o in outs] == ["42", "5"]
