"""Who may call the LangGraph server that serves Memento, and what each caller may see.

`langgraph.json` names `auth` below, and the LangGraph server (`langgraph dev`, an image made
with `langgraph build`) runs it on every request:

- **Who you are.** Callers present `Authorization: Bearer TOKEN`. The accepted tokens come from
  the server's environment variable `MEMENTO_API_TOKEN`, several separated by commas; an entry
  `NAME:TOKEN` gives that caller the identity NAME, a bare token the identity `caller-` plus a
  hash of it (a token never lands in a thread's metadata). Tokens are compared in constant time.
- **Without `MEMENTO_API_TOKEN`**: `langgraph dev` answers callers on the loopback interface
  only, as one local developer, and only requests addressed to localhost from localhost (a web
  page the developer has open must not drive it); any other server refuses every request, unless
  the operator opts out explicitly with `MEMENTO_ALLOW_UNAUTHENTICATED=1` (every caller is then
  one anonymous user).
- **LangGraph Studio.** Studio marks its requests `x-auth-scheme: langsmith`, which the LangGraph
  server would otherwise answer without asking this module (`disable_studio_auth` in
  `langgraph.json` turns that off). Such a request is answered only with a valid token, or where
  the operator sets `MEMENTO_ALLOW_STUDIO=1`: then, under `langgraph dev` only, Studio on this
  machine (loopback, addressed to localhost, from localhost or Studio's own site) is the local
  developer.
- **What you may touch.** A thread belongs to the caller who created it (`metadata.owner`, set
  here whatever the caller sent): a caller reads, searches, deletes, runs, streams, resumes
  (approvals included) and cancels runs of only its own threads; its state and metadata are
  written by runs only. Assistants (the graph's settings) are the operator's: callers may read
  them, not create or change them. Cron jobs are refused. Store items live under the caller's own
  namespace.
- **`/metrics`**, which the LangGraph server serves outside its authentication, answers the same
  callers as the API (`app` below, `http.app` in `langgraph.json`).
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from langgraph_sdk import Auth
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse

from memento.graph.tokens import accepted_tokens, bearer_identity

TOKENS_VARIABLE = "MEMENTO_API_TOKEN"
OPT_OUT_VARIABLE = "MEMENTO_ALLOW_UNAUTHENTICATED"
STUDIO_VARIABLE = "MEMENTO_ALLOW_STUDIO"
LOCAL_DEVELOPER = "local-developer"
STUDIO_ORIGINS = ("https://smith.langchain.com", "https://eu.smith.langchain.com")

auth = Auth()


def identify(authorization: str | None, client_host: str | None, environ: Any = os.environ) -> str:
    """The caller's identity, or `Auth.exceptions.HTTPException` 401 saying what is missing."""
    tokens = accepted_tokens(environ.get(TOKENS_VARIABLE))
    if tokens:
        scheme, _, presented = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Auth.exceptions.HTTPException(
                status_code=401, detail="this server needs a token: send Authorization: Bearer TOKEN")
        match = bearer_identity(authorization, tokens)
        if match is None:
            raise Auth.exceptions.HTTPException(status_code=401, detail="the token is not accepted by this server")
        return match
    if environ.get(OPT_OUT_VARIABLE) == "1":
        return "anonymous"
    if environ.get("LANGSMITH_LANGGRAPH_API_VARIANT") == "local_dev" and _loopback(client_host):
        return LOCAL_DEVELOPER
    raise Auth.exceptions.HTTPException(
        status_code=401, detail=f"this server has no {TOKENS_VARIABLE}: its operator must set one (or "
                                f"{OPT_OUT_VARIABLE}=1 to let anyone in)")


def _loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def caller_identity(authorization: str | None, client_host: str | None, headers: Any,
                    environ: Any = os.environ) -> str:
    """Who sends this request (its `Authorization`, the peer's address, its headers), or
    `Auth.exceptions.HTTPException` 401/403 with one line saying why not."""
    studio = _header(headers, b"x-auth-scheme").strip().lower() == "langsmith"
    studio_allowed = environ.get(STUDIO_VARIABLE) == "1"
    tokens = accepted_tokens(environ.get(TOKENS_VARIABLE))
    if studio and studio_allowed:
        # The operator let LangGraph Studio in without a token of this server (Studio may send its
        # own LangSmith one): it is the local developer, under this machine's langgraph dev only,
        # and only for requests a web page cannot make.
        known = bearer_identity(authorization, tokens) if tokens else None
        if known is not None:
            return known
        if (environ.get("LANGSMITH_LANGGRAPH_API_VARIANT") == "local_dev" and _loopback(client_host)
                and _from_this_machine(headers, studio_allowed=True)):
            return LOCAL_DEVELOPER
        raise Auth.exceptions.HTTPException(status_code=403, detail=f"{STUDIO_VARIABLE}=1 lets LangGraph Studio in "
                                            "without a token only under langgraph dev, on this machine, for requests "
                                            "addressed to localhost from localhost or Studio")
    identity = identify(authorization, client_host, environ)
    if studio and not tokens:
        # Studio's scheme proves nothing to this server; only a token of its own does.
        raise Auth.exceptions.HTTPException(status_code=403, detail="the LangGraph Studio header (x-auth-scheme: "
                                            "langsmith) needs a token of this server: send Authorization: Bearer "
                                            "TOKEN, or, for Studio on this machine under langgraph dev, its operator "
                                            f"sets {STUDIO_VARIABLE}=1")
    if identity == LOCAL_DEVELOPER and not _from_this_machine(headers, studio_allowed):
        # A web page the developer has open could call the loopback port from the browser:
        # without a token, only requests made for this machine count.
        raise Auth.exceptions.HTTPException(status_code=403, detail="without a token this server answers only "
                                            "requests addressed to localhost from localhost (and LangGraph Studio "
                                            f"where its operator sets {STUDIO_VARIABLE}=1)")
    return identity


@auth.authenticate
async def authenticate(authorization: str | None, request: Any, headers: dict) -> Auth.types.MinimalUserDict:
    client = getattr(request, "client", None)
    return {"identity": caller_identity(authorization, getattr(client, "host", None), headers), "permissions": []}


def _header(headers: Any, name: bytes) -> str:
    value = headers.get(name) or headers.get(name.decode()) or b""
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def _from_this_machine(headers: Any, studio_allowed: bool) -> bool:
    host = _header(headers, b"host")
    host = host.rsplit(":", 1)[0].strip("[]").lower() if host else ""
    if host not in ("localhost", "127.0.0.1", "::1"):
        return False
    origin = _header(headers, b"origin").lower()
    if not origin or (studio_allowed and origin in STUDIO_ORIGINS):
        return True
    origin_host = origin.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    return origin_host in ("localhost", "127.0.0.1", "::1")


GUARDED_PATHS = ("/metrics",)


class AnswerCallersOnly:
    """ASGI middleware: the LangGraph server serves `/metrics` (run counts, queue depth, request
    statistics) outside its authentication; this answers it only to callers `authenticate` accepts."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].rstrip("/") in GUARDED_PATHS:
            headers = {name.lower(): value for name, value in scope.get("headers") or ()}
            client = scope.get("client")
            try:
                caller_identity(_header(headers, b"authorization") or None, client[0] if client else None, headers)
            except Auth.exceptions.HTTPException as refused:
                await JSONResponse({"detail": refused.detail}, status_code=refused.status_code)(scope, receive, send)
                return
        await self.app(scope, receive, send)


# `http.app` in langgraph.json: no routes of its own, only the middleware, which the server puts
# in front of all of its routes.
app = Starlette(middleware=[Middleware(AnswerCallersOnly)])


@auth.on
async def refuse_the_rest(ctx: Auth.types.AuthContext, value: Any) -> bool:
    """Anything no handler below allows is refused (cron jobs, changing assistants)."""
    return False


def _stamp_owner(ctx: Auth.types.AuthContext, value: Any) -> None:
    """The thread's owner is the caller, whatever metadata it sent."""
    metadata = value.get("metadata") if isinstance(value, dict) else None
    if metadata is None:
        metadata = value["metadata"] = {}
    if not isinstance(metadata, dict):
        raise Auth.exceptions.HTTPException(status_code=400, detail="thread metadata must be an object")
    metadata["owner"] = ctx.user.identity


@auth.on.threads.create
async def own_new_threads(ctx: Auth.types.AuthContext, value: Any) -> Auth.types.FilterType:
    _stamp_owner(ctx, value)
    # The filter too: "create, or return it if it exists" must not return someone else's thread.
    return {"owner": ctx.user.identity}


CANCEL_ACTIONS = ("interrupt", "rollback")


@auth.on.threads.update
async def cancel_own_runs_only(ctx: Auth.types.AuthContext, value: Any) -> Auth.types.FilterType:
    """The server asks this for three things: cancelling runs (the only one that names an
    `action`), thread metadata updates and state updates. A caller may cancel its own threads'
    runs (interrupt them, or roll them back to the state the graph had written before); the rest
    is refused: an update can write a thread's state (its files, its case id, its plan), which
    only the graph's own nodes may set."""
    if isinstance(value, dict) and value.get("action") in CANCEL_ACTIONS:
        return {"owner": ctx.user.identity}
    raise Auth.exceptions.HTTPException(status_code=403, detail="threads and their state are changed by runs only")


@auth.on.threads.read
@auth.on.threads.search
@auth.on.threads.delete
async def only_own_threads(ctx: Auth.types.AuthContext, value: Any) -> Auth.types.FilterType:
    return {"owner": ctx.user.identity}


@auth.on.threads.create_run
async def run_own_threads_with_a_callers_settings(ctx: Auth.types.AuthContext, value: Any) -> Auth.types.FilterType:
    """A run (a new one, or the resume of a waiting one) on the caller's own thread, whose context
    holds only a caller's settings: anything else is refused here, before the run exists."""
    kwargs = (value or {}).get("kwargs") or {}
    refused = run_request_problem(kwargs) or run_settings_problem(kwargs)
    if refused:
        raise Auth.exceptions.HTTPException(status_code=400, detail=refused)
    _stamp_owner(ctx, value)  # a thread the run creates (if_not_exists) is the caller's
    return {"owner": ctx.user.identity}


def run_request_problem(kwargs: dict[str, Any]) -> str | None:
    """A run may start from an input or answer an approval (`command.resume`); it may not write
    the graph's state (`command.update`, `command.goto`) or send its result anywhere (`webhook`)."""
    command = kwargs.get("command")
    if command is not None:
        # Clients send the other fields empty (RemoteGraph sends goto: [] and update: null).
        extra = (sorted(str(k) for k, v in command.items() if k != "resume" and v not in (None, [], {}, ""))
                 if isinstance(command, dict) else ["a non-object"])
        if extra:
            return f"a run's command may only resume an approval (command.resume), not {', '.join(extra)}"
    if kwargs.get("webhook"):
        return "webhooks are not offered by this server: poll or stream the run instead"
    return None


def run_settings_problem(kwargs: dict[str, Any]) -> str | None:
    """Why a run request's settings are refused (one line), or None.

    The server mirrors a run's `context` into `config.configurable` (and takes `configurable` as the
    context when there is none): an operator's setting is refused on either road."""
    from memento.graph.caller import caller_settings
    from memento.graph.context import FIELD_NAMES, ConfigError

    configurable = ((kwargs.get("config") or {}).get("configurable") or {})
    context = kwargs.get("context")
    if not configurable.get("__context_provided__"):  # no context given: only settings names count
        context = {k: v for k, v in (context or configurable).items() if k in FIELD_NAMES}
    try:
        caller_settings(_operator(), context or None)
    except ConfigError as exc:
        return str(exc)
    return None


_OPERATOR: list[Any] = []


def _operator() -> Any:
    """The server's own settings (read once, as the served graph reads them)."""
    if not _OPERATOR:
        from memento.graph.server import operator_context

        _OPERATOR.append(operator_context())
    return _OPERATOR[0]


@auth.on.assistants.read
@auth.on.assistants.search
async def read_assistants(ctx: Auth.types.AuthContext, value: Any) -> bool:
    return True


@auth.on.store
async def own_namespace(ctx: Auth.types.AuthContext, value: Any) -> None:
    namespace = tuple(value.get("namespace") or ())
    if not namespace or namespace[0] != ctx.user.identity:
        value["namespace"] = (ctx.user.identity, *namespace)
