"""Structured replies from whatever endpoint is configured: hosted APIs, vLLM, llama.cpp, Ollama.

Servers differ in what they honour. OpenAI and vLLM force a named tool; llama.cpp's server
ignores a named `tool_choice` (it takes only "auto", "none" or "required") and the model answers
in prose; some servers refuse `tools` or `response_format` with HTTP 400; small models wrap
JSON in a fenced block with prose around it. So a role's method is one of

- `function_calling`: a tool with the schema, forced by name;
- `tool_required`: the same tool with `tool_choice="required"`;
- `json_schema`: `response_format` with the JSON schema;
- `json_mode`: `response_format={"type": "json_object"}`, the schema given in the prompt;
- `text`: no constraint, the schema given in the prompt;

or `auto`, which starts with the strongest and falls back in that order when a method is
refused (HTTP 400/422) or yields no JSON at all, and remembers, per endpoint and model, the
method that worked for the rest of the process. Whatever the method, a reply is read leniently:
the tool call's arguments, else the JSON object in the text (a fenced block, prose before or
after, trailing commas). A reply that holds JSON that does not fit the schema, or that was cut
at the token limit, goes back to the caller as a parsing error, for its bounded retry.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from pydantic import BaseModel, ValidationError

METHODS = ("function_calling", "tool_required", "json_schema", "json_mode", "text")
CHOICES = ("auto", *METHODS)

_learned: dict[tuple[str, str], int] = {}  # (endpoint, model) -> index in METHODS that worked
_learned_lock = threading.Lock()


class Refused(Exception):
    """The endpoint refused the request's form (not the content): try the next method."""


def forget_learned() -> None:
    """Forget what worked for every endpoint (tests; a server that was upgraded)."""
    with _learned_lock:
        _learned.clear()


def learned_method(endpoint: str, model: str) -> str | None:
    with _learned_lock:
        index = _learned.get((endpoint, model))
    return None if index is None else METHODS[index]


# -- lenient reading ---------------------------------------------------------------------------

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def json_objects(text: str) -> list[Any]:
    """The JSON objects found in a model's text, most likely first: fenced blocks, then every
    balanced `{...}` in the text, each also tried without trailing commas."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)]
    candidates += _balanced(text)
    found = []
    for candidate in candidates:
        for form in (candidate, _TRAILING_COMMA.sub(r"\1", candidate)):
            try:
                value = json.loads(form)
            except (json.JSONDecodeError, RecursionError):
                continue
            if isinstance(value, dict):
                found.append(value)
                break
    return found


def _balanced(text: str, limit: int = 20) -> list[str]:
    """Top-level `{...}` spans of `text` (strings and escapes respected), at most `limit`."""
    spans, depth, start, in_string, escaped = [], 0, -1, False, False
    for i, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = depth > 0
        elif char == "{":
            if depth == 0:
                start = i
            depth += 1
        elif char == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                spans.append(text[start:i + 1])
                if len(spans) >= limit:
                    break
    return spans


def text_of(message: AIMessage) -> str:
    content = message.content
    if isinstance(content, list):  # content blocks
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return content or ""


def read_reply(raw: AIMessage, schema: type[BaseModel]) -> tuple[BaseModel | None, str | None, bool]:
    """(parsed, problem, answered_in_form): the schema's object from a tool call or the reply's
    text; the last is False only when the reply held no JSON at all (the method did not work)."""
    candidates: list[Any] = [call["args"] for call in raw.tool_calls if call.get("name") == schema.__name__]
    candidates += [call["args"] for call in raw.tool_calls if call.get("name") != schema.__name__]
    candidates += json_objects(text_of(raw))
    problem = None
    for candidate in candidates:
        try:
            return schema.model_validate(candidate), None, True
        except ValidationError as exc:
            problem = problem or _short(exc)
    if candidates:
        return None, problem, True
    if raw.response_metadata.get("finish_reason") == "length":  # in the right form, but cut: a retry
        return None, "the reply was cut at the token limit before it was complete", True
    return None, "the reply held no JSON object" + (f": {_short(text_of(raw))!r}" if text_of(raw) else ""), False


def _short(value: Any, limit: int = 300) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit] + "..."


# -- the caller --------------------------------------------------------------------------------

def schema_instruction(schema: type[BaseModel]) -> str:
    return ("Reply with only one JSON object, no other text, that fits this JSON schema:\n"
            + json.dumps(schema.model_json_schema(), ensure_ascii=False))


class StructuredCaller:
    """`invoke(messages)` -> {"raw", "parsed", "parsing_error", "method"}, like LangChain's
    `with_structured_output(..., include_raw=True)`, over the methods above."""

    def __init__(self, model: BaseChatModel, schema: type[BaseModel], method: str, endpoint: str, model_name: str,
                 on_method: Any = None) -> None:
        if method not in CHOICES:
            raise ValueError(f"unknown structured output method {method!r}: use one of {', '.join(CHOICES)}")
        self.model, self.schema, self.method = model, schema, method
        self.key = (endpoint, model_name)
        self.on_method = on_method  # called with (method, why) when auto settles on a method

    def _bound(self, method: str, messages: list[BaseMessage]) -> tuple[Any, list[BaseMessage]]:
        schema = self.schema
        if method == "function_calling":
            return self.model.bind_tools([schema], tool_choice=schema.__name__), messages
        if method == "tool_required":
            return self.model.bind_tools([schema], tool_choice="required"), messages
        if method == "json_schema":
            form = {"type": "json_schema", "json_schema": {"name": schema.__name__, "strict": False,
                                                             "schema": schema.model_json_schema()}}
            return self.model.bind(response_format=form), messages
        told = [*messages, SystemMessage(schema_instruction(schema))]
        if method == "json_mode":
            return self.model.bind(response_format={"type": "json_object"}), told
        return self.model, told

    def _call(self, method: str, messages: list[BaseMessage]) -> dict[str, Any]:
        runnable, sent = self._bound(method, messages)
        try:
            raw = runnable.invoke(sent)
        except Exception as exc:  # noqa: BLE001 - sorted below; anything else goes up unchanged
            kind = classify(exc)
            if kind == "refused":
                raise Refused(_short(exc)) from exc
            if kind in ("cut", "filtered"):  # the method worked; the content did not: a retry
                reason = ("the reply was cut at the token limit before it was complete" if kind == "cut"
                          else "the endpoint's content filter stopped the reply")
                return {"raw": AIMessage(""), "parsed": None, "method": method, "found_json": True,
                        "parsing_error": reason}
            raise
        parsed, problem, found = read_reply(raw, self.schema)
        return {"raw": raw, "parsed": parsed, "parsing_error": problem, "method": method, "found_json": found}

    def invoke(self, messages: list[BaseMessage]) -> dict[str, Any]:
        if self.method != "auto":
            try:
                return self._call(self.method, messages)
            except Refused as exc:
                raise RefusedMethod(self.method, str(exc)) from None
        with _learned_lock:
            start = _learned.get(self.key, 0)
        last: dict[str, Any] | None = None
        why = ""
        for index in range(start, len(METHODS)):
            method = METHODS[index]
            try:
                reply = self._call(method, messages)
            except Refused as exc:
                why = f"{method} refused by the endpoint ({exc})"
                continue
            if reply["found_json"] or reply["parsed"] is not None or index == len(METHODS) - 1:
                self._settle(index, why)
                return reply
            last = reply
            why = f"{method} gave no JSON"
        if last is not None:
            return last
        raise RefusedMethod("auto", why or "every method was refused")

    def _settle(self, index: int, why: str) -> None:
        with _learned_lock:
            before = _learned.get(self.key)
            _learned[self.key] = index
        if before != index and self.on_method is not None:
            self.on_method(METHODS[index], why)


class RefusedMethod(Exception):
    """The endpoint refused the form of request a fixed method needs."""

    def __init__(self, method: str, reason: str) -> None:
        super().__init__(f"the endpoint refused structured output method {method} ({reason})")
        self.method = method


def classify(exc: BaseException) -> str | None:
    """'refused' (the request's form, HTTP 400/422), 'cut' (the length limit), 'filtered' or None."""
    try:
        import openai
    except ImportError:  # pragma: no cover - langchain-openai depends on it
        return None
    if isinstance(exc, openai.LengthFinishReasonError):
        return "cut"
    if isinstance(exc, openai.ContentFilterFinishReasonError):
        return "filtered"
    if isinstance(exc, (openai.BadRequestError, openai.UnprocessableEntityError)):
        return "refused"
    return None


# -- tool calls written as text ----------------------------------------------------------------

def text_tool_calls(text: str, names: set[str], whole_reply: bool, first_id: int = 0) -> list[dict[str, Any]]:
    """Tool calls a model wrote as JSON in its reply (`{"tool": NAME, "arguments": {...}}`, or
    `name` with `arguments`/`args`/`parameters`), for servers without native tool calls. Only
    known tool names count. With `whole_reply`, the reply must be nothing but such objects (a
    fenced block allowed), so an answer that merely quotes JSON is not taken for a call."""
    stripped = text.strip()
    if not stripped:
        return []
    if whole_reply:
        body = _FENCE.sub(lambda m: m.group(1), stripped).strip()
        if not (body.startswith("{") and body.endswith("}")):
            return []
        found = json_objects(body)
        if "".join("".join(_balanced(body)).split()) != "".join(body.split()):
            return []  # prose around the objects: an answer, not a call
    else:
        found = json_objects(stripped)
    calls = []
    for item in found:
        name = item.get("tool", item.get("name"))
        args = next((item[k] for k in ("arguments", "args", "parameters") if k in item), {})
        if isinstance(args, str):  # some templates send the arguments as a JSON string
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                continue
        if isinstance(name, str) and name in names and isinstance(args, dict):
            calls.append({"name": name, "args": args, "id": f"text-call-{first_id + len(calls) + 1}",
                          "type": "tool_call"})
    return calls
