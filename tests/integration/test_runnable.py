"""The compiled graph composes like any Runnable: invoke, stream and batch inside another chain."""

from langchain_core.runnables import RunnableLambda

from memento.graph import NODES, build_graph

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
    names = [next(iter(chunk)) for chunk in chunks]
    # The model and tool calls inside a node are LangGraph tasks: their results stream as updates too.
    assert [n for n in names if n in NODES] == ["retrieve_cases", "plan", "execute_subtask", "replan", "write_case"]
    assert [n for n in names if n not in NODES] == ["executor_model", "tool_call", "executor_model", "judge_model"]
    replan = next(chunk["replan"] for chunk in chunks if "replan" in chunk)
    assert replan["final_answer"] == "42"


def test_a_step_after_the_graph_gets_the_whole_state_when_the_chain_streams(ctx):
    seen = []

    def after(state):
        seen.append(state)
        return f"answer: {state['final_answer']} (reward {state['reward']:g})"

    chain = as_input | build_graph().bind(context=ctx) | RunnableLambda(after)
    assert list(chain.stream("What is 6 * 7?")) == ["answer: 42 (reward 1)"]
    assert set(seen[-1]) >= {"final_answer", "plans", "results", "cases_used", "reward"}


def test_stream_messages_inside_a_chain(ctx):
    chain = as_input | build_graph().bind(context=ctx, stream_mode="messages")
    chunks = list(chain.stream("What is 6 * 7?"))
    by_node = {meta["langgraph_node"] for _, meta in chunks}
    # The planner streams under its nodes; the executor, its tools and the judge under their tasks.
    assert {"plan", "replan", "executor_model", "tool_call", "judge_model"} <= by_node
    executor_texts = [message.text for message, meta in chunks if meta["langgraph_node"] == "executor_model"]
    assert "[simulated] 42" in executor_texts
    tool_calls = [c["name"] for message, meta in chunks if meta["langgraph_node"] == "executor_model"
                  for c in getattr(message, "tool_calls", [])]
    assert tool_calls == ["calculate"]
    assert [message.text for message, meta in chunks if meta["langgraph_node"] == "tool_call"] == ["42"]


def test_batch_inside_a_chain(ctx):
    chain = as_input | build_graph().bind(context=ctx)
    outs = chain.batch(["What is 6 * 7?", "What is 2 + 3?"], config={"max_concurrency": 2})
    assert [o["final_answer"] for o in outs] == ["42", "5"]
