import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from memento.graph.context import ConfigError, Context
from memento.llm.factory import check_model_settings, make_chat_model, structured
from memento.llm.simulated import SimulatedChatModel
from memento.nodes.schemas import PlannerDecision


def test_simulated_is_selected_like_any_model():
    model = make_chat_model(Context(planner_model="simulated:indecisive"), "planner")
    assert isinstance(model, SimulatedChatModel) and model.persona == "indecisive"


def test_openai_compatible_endpoint_builds_a_chat_openai(monkeypatch):
    from langchain_openai import ChatOpenAI

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    ctx = Context(executor_model="vllm:qwen2.5-7b", executor_base_url="http://127.0.0.1:8000/v1")
    model = make_chat_model(ctx, "executor")
    assert isinstance(model, ChatOpenAI)
    assert model.model_name == "qwen2.5-7b" and str(model.openai_api_base).startswith("http://127.0.0.1:8000")


@pytest.mark.parametrize("settings,words", [
    ({"planner_model": "openai:gpt-4o-mini"}, ["OPENAI_API_KEY", "planner"]),
    ({"judge_model": "openai:gpt-4o-mini", "judge_api_key_env": "MY_JUDGE_KEY"}, ["MY_JUDGE_KEY"]),
    ({"executor_model": "openai-compatible:llama3"}, ["executor_base_url"]),
    ({"planner_model": "openai"}, ["names no model"]),
    ({"planner_model": "bedrock:claude"}, ["unknown model provider 'bedrock'"]),
    ({"executor_model": "simulated:sarcastic"}, ["unknown simulated persona 'sarcastic'", "executor_model"]),
])
def test_bad_model_settings_name_what_to_fix(monkeypatch, settings, words):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("MY_JUDGE_KEY", raising=False)
    with pytest.raises(ConfigError) as info:
        check_model_settings(Context(**settings))
    assert all(word in str(info.value) for word in words)
    assert "\n" not in str(info.value)


def test_simulated_planner_answers_through_structured_output():
    ctx = Context()
    planner = structured(SimulatedChatModel(), PlannerDecision, ctx)
    reply = planner.invoke([SystemMessage("You are the planner"),
                            HumanMessage("# Task\nWhat is 2 + 2?\n\n# Attached files\nnone")])
    assert reply["parsing_error"] is None
    assert reply["parsed"].subtasks == ["Evaluate 2 + 2 with the calculator."]


def test_malformed_persona_fails_validation():
    planner = structured(SimulatedChatModel(persona="malformed-always"), PlannerDecision, Context())
    reply = planner.invoke([HumanMessage("# Task\nWhat is 2 + 2?")])
    assert reply["parsed"] is None and "not both and not neither" in str(reply["parsing_error"])


def test_azure_without_an_api_version_is_a_config_error(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("OPENAI_API_VERSION", raising=False)
    ctx = Context(planner_model="azure:my-deployment", planner_base_url="https://example.openai.azure.com")
    with pytest.raises(ConfigError, match="cannot set up the planner model azure:my-deployment.*OPENAI_API_VERSION"):
        make_chat_model(ctx, "planner")


def test_structured_output_method_is_checked():
    with pytest.raises(ConfigError, match="structured_output_method"):
        Context(structured_output_method="xml")


@pytest.mark.parametrize("provider,url", [("ollama", "http://localhost:11434/v1"), ("vllm", "http://localhost:8000/v1"),
                                          ("llamacpp", "http://localhost:8080/v1"),
                                          ("lmstudio", "http://localhost:1234/v1")])
def test_local_presets_need_no_base_url_or_key(monkeypatch, provider, url):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    ctx = Context(executor_model=f"{provider}:qwen2.5-7b-instruct", executor_max_tokens=300)
    check_model_settings(ctx)
    model = make_chat_model(ctx, "executor")
    assert str(model.openai_api_base).rstrip("/") == url and model.model_name == "qwen2.5-7b-instruct"
    assert model.max_tokens == 300 and model.extra_body == {"max_tokens": 300}
    given = make_chat_model(ctx.replace(executor_base_url="http://gpu-box:9000/v1"), "executor")
    assert given.openai_api_base == "http://gpu-box:9000/v1"
