"""Build the chat model for a role from the run's settings.

A model setting is `provider:model`. Every provider goes through a langchain chat-model
class, so the graph's code path is the same for a hosted model, a local server and the
simulated model; only these settings differ.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

from langchain_core.language_models import BaseChatModel

from memento.graph.context import ConfigError, Context
from memento.graph.errors import RunError
from memento.llm.simulated import SimulatedChatModel

ROLES = ("planner", "executor", "judge")
# Local servers' usual OpenAI-compatible addresses: `ollama:MODEL` and the like need no base URL.
LOCAL_PRESETS = {
    "ollama": "http://localhost:11434/v1",
    "vllm": "http://localhost:8000/v1",
    "llamacpp": "http://localhost:8080/v1",
    "lmstudio": "http://localhost:1234/v1",
}
OPENAI_COMPATIBLE = {"openai-compatible", *LOCAL_PRESETS}
PROVIDERS = {"simulated", "openai", "azure", *OPENAI_COMPATIBLE}


class ModelError(RunError, RuntimeError):
    """A model could not be reached or refused the request; the message names the setting."""


def _settings(ctx: Context, role: str) -> tuple[str, str, str, str]:
    spec = getattr(ctx, f"{role}_model").strip()
    provider, _, model = spec.partition(":")
    provider = provider.lower()
    base_url = getattr(ctx, f"{role}_base_url") or LOCAL_PRESETS.get(provider, "")
    return provider, model, base_url, getattr(ctx, f"{role}_api_key_env")


def check_model_settings(ctx: Context, roles: tuple[str, ...] = ROLES) -> None:
    """Raise ConfigError, naming the setting to fix, if a role's model cannot be built."""
    for role in roles:
        provider, model, base_url, key_env = _settings(ctx, role)
        if provider not in PROVIDERS:
            raise ConfigError(
                f"unknown model provider {provider!r} in {role}_model={getattr(ctx, f'{role}_model')!r}: "
                f"use one of {', '.join(sorted(PROVIDERS))} as provider:model")
        if provider == "simulated":
            from memento.llm.simulated import PERSONAS

            if (model or "default") not in PERSONAS:
                raise ConfigError(f"unknown simulated persona {model!r} in {role}_model: use simulated or "
                                  f"simulated:PERSONA with one of {', '.join(sorted(PERSONAS))}")
            continue
        if not model:
            raise ConfigError(f"{role}_model={provider!r} names no model: write it as {provider}:MODEL_NAME")
        if provider in (OPENAI_COMPATIBLE - set(LOCAL_PRESETS)) | {"azure"} and not base_url:
            raise ConfigError(f"{role}_model uses {provider}, which needs {role}_base_url (the endpoint URL)")
        if provider in {"openai", "azure"} and not os.environ.get(key_env):
            raise ConfigError(
                f"no API key for the {role} model {provider}:{model}: set the environment variable "
                f"{key_env} (or point {role}_api_key_env at the variable that holds it)")


def make_chat_model(ctx: Context, role: str) -> BaseChatModel:
    """The chat model for `role` ('planner', 'executor' or 'judge')."""
    check_model_settings(ctx, (role,))
    provider, model, base_url, key_env = _settings(ctx, role)
    if provider == "simulated":
        return SimulatedChatModel(persona=model or "default")
    common: dict[str, Any] = {"temperature": ctx.temperature, "timeout": ctx.request_timeout,
                              "max_retries": ctx.model_retries}
    max_tokens = getattr(ctx, f"{role}_max_tokens")
    if max_tokens:
        common["max_tokens"] = max_tokens  # sent as max_completion_tokens
        if provider in OPENAI_COMPATIBLE:  # and as max_tokens, which llama.cpp and older Ollama read
            common["extra_body"] = {"max_tokens": max_tokens}
    try:
        if provider == "azure":
            from langchain_openai import AzureChatOpenAI

            return AzureChatOpenAI(azure_deployment=model, azure_endpoint=base_url,
                                   api_key=os.environ[key_env], **common)
        from langchain_openai import ChatOpenAI

        # Local servers usually accept any key; the client library insists on one.
        api_key = os.environ.get(key_env) or "not-needed"
        return ChatOpenAI(model=model, base_url=base_url or None, api_key=api_key, **common)
    except (ValueError, TypeError) as exc:  # pydantic validation of the client's settings
        reason = " ".join(str(exc).split())[:300]
        hint = " (Azure also needs OPENAI_API_VERSION in the environment)" if provider == "azure" else ""
        raise ConfigError(f"cannot set up the {role} model {provider}:{model}: {reason}{hint}") from None


def structured(model: BaseChatModel, schema: type, ctx: Context, role: str = "planner"):
    """`model` answering with `schema`; `invoke` returns {raw, parsed, parsing_error}. Real models
    go through the role's structured output method (see `memento.llm.structured`)."""
    if isinstance(model, SimulatedChatModel):
        return model.with_structured_output(schema, include_raw=True)
    from memento.llm.structured import StructuredCaller

    provider, name, base_url, _ = _settings(ctx, role)

    def settled(method: str, why: str) -> None:
        _progress({"event": "structured_output", "role": role, "method": method, "reason": why})

    return StructuredCaller(model, schema, ctx.output_method(role), base_url or provider, name, on_method=settled,
                            role=role)


def _progress(event: dict[str, Any]) -> None:
    """A custom stream event, where the call runs inside a graph run (elsewhere, nothing)."""
    try:
        from langgraph.config import get_stream_writer

        get_stream_writer()(event)
    except Exception:  # noqa: BLE001 - outside a run there is no stream to write to
        pass


@contextmanager
def model_call(ctx: Context, role: str) -> Iterator[None]:
    """Turn a client library's connection and auth errors into one line naming the setting."""
    try:
        yield
    except ModelError:
        raise
    except Exception as exc:
        message = _describe(exc, ctx, role)
        if message is None:
            raise
        raise ModelError(message) from exc


def _describe(exc: Exception, ctx: Context, role: str) -> str | None:
    try:
        import openai
    except ImportError:  # pragma: no cover - langchain-openai depends on it
        return None
    from memento.llm.structured import RefusedMethod, is_context_overflow

    provider, model, base_url, key_env = _settings(ctx, role)
    where = base_url or "the OpenAI API"
    said = " ".join(str(getattr(exc, "message", exc)).split())[:300]
    if isinstance(exc, RefusedMethod):
        other = "another method" if exc.method == "auto" else "auto or another method"
        return (f"the {role} model endpoint {where} refused structured output: {exc}: set {role}_output_method "
                f"(or structured_output_method) to {other}")
    if isinstance(exc, openai.BadRequestError) and is_context_overflow(exc):
        return (f"the {role} request does not fit the model's context at {where} ({said}): give the server a "
                f"larger context (llama-server -c, Ollama num_ctx, vLLM --max-model-len), or lower "
                f"max_result_chars and {role}_max_tokens")
    if isinstance(exc, openai.APITimeoutError):
        tries = ctx.model_retries + 1
        return (f"the {role} model endpoint {where} did not answer within request_timeout={ctx.request_timeout:g} s "
                f"({tries} attempt(s)): the server is up but slow; raise request_timeout, lower {role}_max_tokens, "
                f"or use a smaller model")
    if isinstance(exc, openai.APIConnectionError):
        return (f"cannot reach the {role} model endpoint {where} ({type(exc).__name__}): "
                f"check {role}_base_url and that the server is running")
    if isinstance(exc, openai.AuthenticationError):
        return f"the {role} model endpoint {where} rejected the API key: check the variable {key_env}"
    if isinstance(exc, openai.NotFoundError):
        if not isinstance(getattr(exc, "body", None), dict):  # a plain 404 page: not an OpenAI API path
            return (f"the {role} model endpoint {where} answered HTTP 404 with no OpenAI error: check {role}_base_url "
                    f"(it usually ends in /v1)")
        return f"the {role} model {model!r} was not found at {where}: check {role}_model"
    if isinstance(exc, openai.APIStatusError):
        hint = ""
        if role == "executor" and exc.status_code in (400, 422) and ctx.executor_tool_protocol != "text":
            hint = ("; if the server cannot take tool definitions, set executor_tool_protocol = \"text\" "
                    "(--executor-tool-protocol text)")
        return f"the {role} model endpoint {where} answered HTTP {exc.status_code}: {said}{hint}"
    if isinstance(exc, (ValueError, TypeError, KeyError, IndexError, AttributeError)):
        # Raised while the client read the reply: an HTML page, invalid JSON, an error object
        # where a completion should be, no choices, no message.
        return (f"the {role} model endpoint {where} sent a reply that is not an OpenAI chat completion "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}): check {role}_base_url (it usually "
                f"ends in /v1) and that the server speaks the OpenAI chat API")
    return None


