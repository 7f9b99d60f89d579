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

_learned: dict[tuple[str, str, str], int] = {}  # (endpoint, model, role) -> index in METHODS that worked
_learned_lock = threading.Lock()


class Refused(Exception):
    """The endpoint refused the request's form (not the content): try the next method."""


def forget_learned() -> None:
    """Forget what worked for every endpoint (tests; a server that was upgraded)."""
    with _learned_lock:
        _learned.clear()


def learned_method(endpoint: str, model: str, role: str = "planner") -> str | None:
    with _learned_lock:
        index = _learned.get((endpoint, model, role))
    return None if index is None else METHODS[index]


# -- lenient reading ---------------------------------------------------------------------------

_FENCE = re.compile(r"```(?:json|JSON)?[ \t]*\n?(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
MAX_TEXT = 100_000  # a reply's last characters that are searched for JSON
MAX_STARTS = 1000  # `{` positions tried


def visible(text: str) -> str:
    """A reply without its reasoning: `<think>...</think>` blocks removed, and what comes before a
    lone `</think>` (templates that open the block in the prompt); an unclosed `<think>` hides
    the rest (the reply was cut while thinking)."""
    if "</think>" in text:
        text = _THINK.sub("", text)
        if "</think>" in text:
            text = text.rsplit("</think>", 1)[1]
    if "<think>" in text:
        text = text.split("<think>", 1)[0]
    return text


def json_objects(text: str) -> list[Any]:
    """The top-level JSON objects in a model's text, in order (reasoning blocks left out): each
    `{` is tried as the start of one, so prose, fences or a stray brace around it do not matter;
    trailing commas are tolerated."""
    text = visible(text)[-MAX_TEXT:]
    found = _decode_all(text)
    if not found and _TRAILING_COMMA.search(text):
        found = _decode_all(_TRAILING_COMMA.sub(r"\1", text))
    return found


def _decode_all(text: str) -> list[Any]:
    decoder, found, tries = json.JSONDecoder(), [], 0
    at = text.find("{")
    while at != -1 and tries < MAX_STARTS:
        tries += 1
        try:
            value, end = decoder.raw_decode(text, at)
        except (ValueError, RecursionError):
            at = text.find("{", at + 1)
            continue
        if isinstance(value, dict):
            found.append(value)
        at = text.find("{", end)
    return found


def _only_json(text: str) -> bool:
    """Whether `text` (fences aside) is nothing but JSON objects."""
    body = _FENCE.sub(lambda m: m.group(1), text).strip()
    decoder, at = json.JSONDecoder(), 0
    if not body.startswith("{"):
        return False
    while at < len(body):
        try:
            _, at = decoder.raw_decode(body, at)
        except (ValueError, RecursionError):
            return False
        while at < len(body) and body[at] in " \t\r\n,":
            at += 1
    return True


def text_of(message: AIMessage) -> str:
    content = message.content
    if isinstance(content, list):  # content blocks
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
    return content or ""


def read_reply(raw: AIMessage, schema: type[BaseModel]) -> tuple[BaseModel | None, str | None, str]:
    """(parsed, problem, kind) of a reply. kind: `parsed`; `invalid` (JSON that does not fit the
    schema); `cut` (stopped at the token limit); `empty` (nothing, a refusal or a content-filter
    stop: a retry, no sign against the method); `prose` (text without any JSON: the method did not
    work with this endpoint)."""
    candidates: list[Any] = [call["args"] for call in raw.tool_calls if call.get("name") == schema.__name__]
    candidates += [call["args"] for call in raw.tool_calls if call.get("name") != schema.__name__]
    candidates += reversed(json_objects(text_of(raw)))  # the last word wins over a draft before it
    problem = None
    for candidate in candidates:
        try:
            return schema.model_validate(candidate), None, "parsed"
        except ValidationError as exc:
            problem = problem or _short(exc)
    if candidates:
        return None, problem, "invalid"
    finish = raw.response_metadata.get("finish_reason")
    if finish == "length":
        return None, "the reply was cut at the token limit before it was complete", "cut"
    if raw.invalid_tool_calls:
        bad = raw.invalid_tool_calls[0]
        return None, f"the tool call's arguments were not valid JSON ({_short(bad.get('error') or bad.get('args'), 150)})", \
            "invalid"
    if raw.additional_kwargs.get("refusal"):
        return None, f"the model refused: {_short(raw.additional_kwargs['refusal'])}", "empty"
    if finish == "content_filter":
        return None, "the endpoint's content filter stopped the reply", "empty"
    text = visible(text_of(raw)).strip()
    if not text:
        return None, "the reply was empty", "empty"
    return None, f"the reply held no JSON object: {_short(text)!r}", "prose"


def _short(value: Any, limit: int = 300) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit] + "..."


# -- the caller --------------------------------------------------------------------------------

def schema_instruction(schema: type[BaseModel]) -> str:
    return ("Reply with only one JSON object, no other text, that fits this JSON schema:\n"
            + json.dumps(schema.model_json_schema(), ensure_ascii=False))


def with_instruction(messages: list[BaseMessage], instruction: str) -> list[BaseMessage]:
    """`messages` with `instruction` added to the first system message (many chat templates take
    a system message only in first place), or as one when there is none."""
    if messages and isinstance(messages[0], SystemMessage) and isinstance(messages[0].content, str):
        return [SystemMessage(messages[0].content + "\n\n" + instruction), *messages[1:]]
    return [SystemMessage(instruction), *messages]


class StructuredCaller:
    """`invoke(messages)` -> {"raw", "parsed", "parsing_error", "method", "kind"}, like LangChain's
    `with_structured_output(..., include_raw=True)`, over the methods above."""

    def __init__(self, model: BaseChatModel, schema: type[BaseModel], method: str, endpoint: str, model_name: str,
                 on_method: Any = None, role: str = "planner") -> None:
        if method not in CHOICES:
            raise ValueError(f"unknown structured output method {method!r}: use one of {', '.join(CHOICES)}")
        self.model, self.schema, self.method = model, schema, method
        self.key = (endpoint, model_name, role)  # the planner and the judge learn apart
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
        told = with_instruction(messages, schema_instruction(schema))
        if method == "json_mode":
            return self.model.bind(response_format={"type": "json_object"}), told
        return self.model, told

    def _call(self, method: str, messages: list[BaseMessage]) -> dict[str, Any]:
        runnable, sent = self._bound(method, messages)
        try:
            raw = runnable.invoke(sent)
        except ValidationError as exc:  # the client could not build a message from the reply's tool call
            return {"raw": AIMessage(""), "parsed": None, "method": method, "kind": "prose",
                    "parsing_error": f"the endpoint's reply could not be read ({_short(exc, 150)})"}
        except Exception as exc:  # noqa: BLE001 - sorted below; anything else goes up unchanged
            kind = classify(exc)
            if kind == "refused":
                raise Refused(_short(exc)) from exc
            if kind in ("cut", "filtered"):  # a retry; a cut reply says the method works
                reason = ("the reply was cut at the token limit before it was complete" if kind == "cut"
                          else "the endpoint's content filter stopped the reply")
                return {"raw": AIMessage(""), "parsed": None, "method": method, "parsing_error": reason,
                        "kind": "cut" if kind == "cut" else "empty"}
            raise
        parsed, problem, kind = read_reply(raw, self.schema)
        return {"raw": raw, "parsed": parsed, "parsing_error": problem, "method": method, "kind": kind}

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
            if reply["kind"] in ("parsed", "invalid", "cut"):  # the endpoint answers in this form
                self._settle(index, why)
                return reply
            if reply["kind"] == "empty":  # says nothing about the method: the caller retries
                return reply
            last, why = reply, f"{method} gave no JSON"
        if last is not None:
            return last  # nothing learned: the next call starts again where this one did
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


_OVERFLOW = re.compile(r"context (size|length|window)|maximum context|too many tokens|prompt is too long|"
                       r"exceeds the (available )?context", re.IGNORECASE)


def is_context_overflow(exc: BaseException) -> bool:
    """An HTTP 400 saying the prompt does not fit the model's context (llama.cpp, vLLM, OpenAI)."""
    try:
        from langchain_core.exceptions import ContextOverflowError
    except ImportError:  # older langchain-core
        ContextOverflowError = ()  # noqa: N806
    return isinstance(exc, ContextOverflowError) or bool(_OVERFLOW.search(str(exc)))


def classify(exc: BaseException) -> str | None:
    """'refused' (the request's form, HTTP 400/422), 'cut' (the length limit), 'filtered' or None
    (a context overflow is None: no other method would fit it either)."""
    try:
        import openai
    except ImportError:  # pragma: no cover - langchain-openai depends on it
        return None
    if isinstance(exc, openai.LengthFinishReasonError):
        return "cut"
    if isinstance(exc, openai.ContentFilterFinishReasonError):
        return "filtered"
    if isinstance(exc, (openai.BadRequestError, openai.UnprocessableEntityError)) and not is_context_overflow(exc):
        return "refused"
    return None


# -- tool calls written as text ----------------------------------------------------------------

def text_tool_calls(text: str, names: set[str], whole_reply: bool, first_id: int = 0) -> list[dict[str, Any]]:
    """Tool calls a model wrote as JSON in its reply (`{"tool": NAME, "arguments": {...}}`, or
    `name` with `arguments`/`args`/`parameters`), for servers without native tool calls. Only
    known tool names count, and reasoning blocks are left out. With `whole_reply` the reply must
    be nothing but such objects (a fenced block allowed), so an answer that quotes JSON is not
    taken for a call; without it, prose may come before the calls but nothing after them."""
    shown = visible(text).strip()
    if not shown:
        return []
    body = _FENCE.sub(lambda m: m.group(1), shown).strip()
    if whole_reply and not _only_json(body):
        return []
    if not whole_reply:
        start = body.find("{")
        if start == -1 or not _only_json(body[start:]):
            return []
        body = body[start:]
    calls = []
    for item in json_objects(body):
        name = item.get("tool", item.get("name"))
        keys = [k for k in ("arguments", "args", "parameters") if k in item]
        if not keys and "tool" not in item:
            continue  # `{"name": ..., "result": ...}` is an answer, not a call
        args = item[keys[0]] if keys else {}
        if isinstance(args, str):  # some templates send the arguments as a JSON string
            try:
                args = json.loads(args)
            except (ValueError, RecursionError):
                continue
        if isinstance(name, str) and name in names and isinstance(args, dict):
            calls.append({"name": name, "args": args, "id": f"text-call-{first_id + len(calls) + 1}",
                          "type": "tool_call"})
    return calls
