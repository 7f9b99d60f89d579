"""Run-time settings, passed to the graph as LangGraph runtime context.

Every field has a described default; `configs/default.toml` lists the same settings, and
`load_context` reads such a file. Nothing here reads the environment: API keys are read by
the model clients from the variable each role names (`*_api_key_env`), and never stored.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs

from memento.graph.approval import ApprovalPolicy, PolicyError, parse_policy, policy_dict
from memento.graph.errors import InputError

RETRIEVAL_MODES = ("similarity", "parametric", "utility", "none")
# The most a caller of the served graph may set (`caller_limits`), unless the operator says otherwise.
DEFAULT_CALLER_LIMITS: dict[str, float] = {
    "top_k": 16, "max_cycles": 6, "max_subtasks": 12, "max_tool_calls": 12, "max_planner_retries": 4,
    "retrieval_temperature": 2.0, "temperature": 2.0,
}


class ConfigError(InputError, ValueError):
    """A setting is missing or wrong; the message names the setting and what to do."""


def default_mcp_servers() -> dict[str, dict[str, Any]]:
    """The built-in tool servers, spawned over stdio with this interpreter (`{python}`) and shared by
    every run in the process; each call carries its run's files and workspace. Media needs
    endpoints, so it is off."""
    def server(name: str, *args: str, enabled: bool = True) -> dict[str, Any]:
        entry: dict[str, Any] = {"transport": "stdio", "command": "{python}",
                                 "args": ["-m", f"memento.mcp_servers.{name}", *args]}
        return entry if enabled else {"enabled": False, **entry}

    return {
        "math": server("math"),
        "documents": server("documents"),
        "code": server("code", "--workspace-root", "{workspaces}", "--isolation", "auto", "--timeout", "30",
                       "--cpu", "20", "--memory-mb", "1024", "--processes", "32", "--max-output", "64000",
                       "--tmp-mb", "64", "--disk-mb", "1024"),
        "web": server("web", "--max-bytes", "2000000", "--timeout", "20"),
        "media": server("media", "--vision-model", "", "--audio-model", "", enabled=False),
    }


@dataclass(kw_only=True)
class Context:
    """Settings for one run of the Memento graph."""

    planner_model: str = field(default="simulated", metadata={
        "description": "Planner chat model as provider:model, e.g. openai:gpt-4o-mini, "
                       "openai-compatible:qwen2.5-7b-instruct, azure:my-deployment, or simulated."})
    planner_base_url: str = field(default="", metadata={
        "description": "Base URL of an OpenAI-compatible endpoint for the planner (vLLM, Ollama, llama.cpp, Azure)."})
    planner_api_key_env: str = field(default="OPENAI_API_KEY", metadata={
        "description": "Environment variable that holds the planner's API key."})
    executor_model: str = field(default="simulated", metadata={
        "description": "Executor chat model (runs subtasks with tools), as provider:model."})
    executor_base_url: str = field(default="", metadata={
        "description": "Base URL of an OpenAI-compatible endpoint for the executor."})
    executor_api_key_env: str = field(default="OPENAI_API_KEY", metadata={
        "description": "Environment variable that holds the executor's API key."})
    judge_model: str = field(default="simulated", metadata={
        "description": "Judge chat model, scores answers when no ground truth is given."})
    judge_base_url: str = field(default="", metadata={
        "description": "Base URL of an OpenAI-compatible endpoint for the judge."})
    judge_api_key_env: str = field(default="OPENAI_API_KEY", metadata={
        "description": "Environment variable that holds the judge's API key."})
    temperature: float = field(default=0.0, metadata={
        "description": "Sampling temperature for all three models."})
    structured_output_method: str = field(default="auto", metadata={
        "description": "How real models return plans and verdicts: auto (try function_calling, tool_required, "
                       "json_schema, json_mode, text in turn and keep what works per endpoint), or one of those."})
    planner_output_method: str = field(default="", metadata={
        "description": "The planner's structured output method; empty uses structured_output_method."})
    judge_output_method: str = field(default="", metadata={
        "description": "The judge's structured output method; empty uses structured_output_method."})
    executor_tool_protocol: str = field(default="auto", metadata={
        "description": "How the executor calls tools: native (the API's tool calls), text (a JSON object in the "
                       "reply, for servers without tool calling) or auto (native, and a reply that is only such "
                       "an object is taken as a call too)."})
    planner_max_tokens: int = field(default=2048, metadata={
        "description": "Most tokens of one planner reply (0: the server's default)."})
    executor_max_tokens: int = field(default=2048, metadata={
        "description": "Most tokens of one executor reply (0: the server's default)."})
    judge_max_tokens: int = field(default=512, metadata={
        "description": "Most tokens of one judge reply (0: the server's default)."})
    request_timeout: float = field(default=120.0, metadata={
        "description": "Seconds one attempt of a model request may take."})
    model_retries: int = field(default=2, metadata={
        "description": "Client retries of a model request that timed out or failed to connect; one model call "
                       "takes at most request_timeout x (model_retries + 1) seconds."})

    data_dir: str = field(default="", metadata={
        "description": "Folder for the case bank and checkpoints; empty means the per-user data folder."})
    checkpointer: str = field(default="", metadata={
        "description": "Where runs are checkpointed: empty is data_dir/checkpoints.sqlite, a path is another SQLite "
                       "file, a postgresql:// URL a PostgreSQL database (shared by workers on several machines; give "
                       "the password in PGPASSWORD or ~/.pgpass, not in the URL)."})
    chroma_url: str = field(default="", metadata={
        "description": "URL of a Chroma server to share one case bank between processes; empty uses data_dir."})
    chroma_token_env: str = field(default="MEMENTO_CHROMA_TOKEN", metadata={
        "description": "Environment variable that holds the Chroma server's token (sent as a bearer token when set)."})
    chroma_tenant: str = field(default="default_tenant", metadata={
        "description": "Tenant of the case bank on the Chroma server."})
    chroma_database: str = field(default="default_database", metadata={
        "description": "Database of the case bank on the Chroma server."})
    collection: str = field(default="memento_cases", metadata={
        "description": "Chroma collection that holds the cases."})
    encoder: str = field(default="all-MiniLM-L6-v2", metadata={
        "description": "Text encoder: all-MiniLM-L6-v2 (packaged, offline), a local folder, or a hub name."})
    encoder_device: str = field(default="auto", metadata={
        "description": "Device for the encoder: cpu, cuda, cuda:N, mps or auto (a GPU when there is one)."})
    retrieval_mode: str = field(default="similarity", metadata={
        "description": "How past cases are chosen: similarity (nearest tasks), parametric (nearest "
                       "candidates re-ranked by the learned Q-retriever), utility (nearest candidates re-ranked "
                       "by similarity and each case's learned utility, MemRL's rule) or none."})
    top_k: int = field(default=4, metadata={
        "description": "How many past cases the planner sees (4 is the paper's best)."})
    candidates: int = field(default=64, metadata={
        "description": "Nearest-neighbour candidates fetched per query, from which the shown cases are chosen "
                       "(re-ranked by Q in parametric mode)."})
    distinct_source_tasks: bool = field(default=True, metadata={
        "description": "Show at most one case per source task (for a task attempted several times: its latest "
                       "success, else its latest attempt), so replays of one task cannot fill the K slots."})
    utility_candidates: int = field(default=10, metadata={
        "description": "Utility mode: how many of the nearest candidates are re-ranked by 0.5 z(similarity) + "
                       "0.5 z(utility)."})
    utility_rate: float = field(default=0.3, metadata={
        "description": "Step size of each case's utility, an exponential moving average of the rewards it is "
                       "credited with (MemRL's alpha); utilities start at 0.5."})
    torch_threads: int = field(default=1, metadata={
        "description": "Threads torch may use for a run's work (one query encoding, a small Q update): more "
                       "only fight other processes on a busy machine. 0 leaves torch's default (every core)."})
    retrieval_temperature: float = field(default=0.3, metadata={
        "description": "Exploration in parametric retrieval: the shown cases are drawn from softmax(logit(Q) / T) "
                       "without replacement among the 2K highest Q; 0 always shows the K highest Q."})
    retriever_device: str = field(default="auto", metadata={
        "description": "Device for the Q-retriever: cpu, cuda, cuda:N, mps or auto (a GPU when there is one)."})
    retriever_path: str = field(default="", metadata={
        "description": "Q-retriever checkpoint (weights, optimiser, replay buffer); empty means data_dir/retriever.pt."})
    online_learning: bool = field(default=True, metadata={
        "description": "After each run, store its (task, case, reward) transitions and train the Q-retriever, "
                       "and move the credited cases' utilities."})
    learn_after_run: bool = field(default=True, metadata={
        "description": "After recording a run's transitions, take the learner's turn: train on every run recorded "
                       "since the newest version and publish the next (false: only record them, for a dedicated "
                       "`memento retriever learn`)."})
    retriever_steps: int = field(default=8, metadata={
        "description": "Gradient steps the Q-retriever takes after each run."})
    write_cases: bool = field(default=True, metadata={
        "description": "Write each finished run to the case bank."})
    keep_workspaces: bool = field(default=False, metadata={
        "description": "Keep a run's code workspace (DATA_DIR/workspaces/RUN_ID) when the run ends; by default "
                       "it is removed once the case is written or discarded."})
    f1_threshold: float = field(default=0.8, metadata={
        "description": "Token F1 at or above which an answer earns reward 1 against ground truth."})

    max_cycles: int = field(default=3, metadata={
        "description": "Planning cycles (plan, execute, replan) before the planner must answer."})
    max_subtasks: int = field(default=8, metadata={
        "description": "Most subtasks one plan may hold."})
    max_tool_calls: int = field(default=6, metadata={
        "description": "Most tool calls the executor makes for one subtask."})
    max_planner_retries: int = field(default=2, metadata={
        "description": "Retries after a malformed planner reply before the run ends with an error."})
    max_task_chars: int = field(default=20000, metadata={
        "description": "Longest task accepted, in characters, at run and at case import."})
    max_result_chars: int = field(default=4000, metadata={
        "description": "Longest subtask result or tool output passed on, in characters."})

    mcp_servers: dict[str, dict[str, Any]] = field(default_factory=default_mcp_servers, metadata={
        "description": "MCP tool servers for the executor, as langchain-mcp-adapters connections."})

    caller_limits: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_CALLER_LIMITS), metadata={
        "description": "Served graph only: the most a caller of the server may set for top_k, max_cycles, "
                       "max_subtasks, max_tool_calls, max_planner_retries, retrieval_temperature and temperature "
                       "(a config file's table replaces only the limits it names)."})
    input_roots: list[str] = field(default_factory=list, metadata={
        "description": "Served graph only: folders a caller of the server may attach files from (a file must be a "
                       "regular file below one, reached without following links); empty: callers attach none."})
    model_profiles: dict[str, dict[str, Any]] = field(default_factory=dict, metadata={
        "description": "Served graph only: named sets of model settings (planner_model, *_base_url, "
                       "*_api_key_env, ...) a caller may pick with model_profile; the caller never names an "
                       "endpoint or a key variable itself."})

    author: str = field(default="operator", metadata={
        "description": "Who the run acts for: operator (the CLI, the bench, library use), or caller:<identity>. "
                       "Its case is written with this author and read back only by runs that may read its scope; "
                       "the served graph sets it from the caller's authenticated identity (a caller cannot)."})
    shared_readers: list[str] = field(default_factory=list, metadata={
        "description": "Served graph only: callers (identities, or * for every caller) that read the shared scope "
                       "(the operator's cases, and those promoted or written by trusted writers) besides their own. "
                       "Empty: each caller reads only its own cases."})
    trusted_writers: list[str] = field(default_factory=list, metadata={
        "description": "Served graph only: callers whose cases go straight into the shared scope and whose rewards "
                       "train the shared learner; everyone else's stay in their own scope."})
    caller_rewards: str = field(default="own_scope", metadata={
        "description": "What a ground truth or a reward edit from an untrusted caller does: own_scope (it scores "
                       "that caller's own case only, which no one else reads) or refuse (the run is refused)."})
    case_field_chars: int = field(default=1000, metadata={
        "description": "Most characters of each field of a past case (task, each plan step, answer) shown to the "
                       "planner; past cases are quoted, untrusted data."})
    case_prompt_chars: int = field(default=12000, metadata={
        "description": "Most characters of past cases in one planner prompt, all shown cases together."})

    approval: dict[str, Any] = field(default_factory=lambda: {"plan": False, "replans": False, "case": False,
                                                              "tools": []}, metadata={
        "description": "Human approval points: plan (the first plan), replans (each new plan), case (the case "
                       "before it is stored), tools (names or glob patterns of tools whose calls need approval, "
                       "or a table pattern = allowed decisions). Each asks with an interrupt."})

    def __post_init__(self) -> None:
        for name, low in (("max_cycles", 1), ("max_subtasks", 1), ("max_tool_calls", 1), ("top_k", 0),
                          ("candidates", 1), ("utility_candidates", 1), ("retriever_steps", 0), ("max_planner_retries", 0),
                          ("max_result_chars", 200), ("torch_threads", 0),
                          ("max_task_chars", 1), ("planner_max_tokens", 0), ("executor_max_tokens", 0),
                          ("judge_max_tokens", 0), ("model_retries", 0), ("case_field_chars", 50),
                          ("case_prompt_chars", 200)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"setting {name} must be an integer >= {low}, got {value!r}")
        if not isinstance(self.retrieval_temperature, (int, float)) or not 0 <= self.retrieval_temperature < 1e6:
            raise ConfigError(f"setting retrieval_temperature must be a number >= 0, got {self.retrieval_temperature!r}")
        if isinstance(self.utility_rate, bool) or not isinstance(self.utility_rate, (int, float)) \
                or not 0 < self.utility_rate <= 1:
            raise ConfigError(f"setting utility_rate must be a number in (0, 1], got {self.utility_rate!r}")
        methods = ("auto", "function_calling", "tool_required", "json_schema", "json_mode", "text")
        for name in ("structured_output_method", "planner_output_method", "judge_output_method"):
            value = getattr(self, name)
            if value not in methods and not (value == "" and name != "structured_output_method"):
                raise ConfigError(f"setting {name} must be one of {', '.join(methods)}, got {value!r}")
        if self.executor_tool_protocol not in ("auto", "native", "text"):
            raise ConfigError(f"setting executor_tool_protocol must be auto, native or text, "
                              f"got {self.executor_tool_protocol!r}")
        if self.retrieval_mode not in RETRIEVAL_MODES:
            raise ConfigError(f"setting retrieval_mode must be one of {', '.join(RETRIEVAL_MODES)}, "
                              f"got {self.retrieval_mode!r}")
        for name in ("caller_limits", "model_profiles"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(f"setting {name} must be a table")
        if not isinstance(self.input_roots, list) or not all(isinstance(p, str) and p for p in self.input_roots):
            raise ConfigError("setting input_roots must be a list of folders")
        from memento.memory.provenance import is_author

        if not is_author(self.author):
            raise ConfigError(f"setting author must be operator or caller:NAME, got {str(self.author)[:80]!r}")
        for name in ("shared_readers", "trusted_writers"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                raise ConfigError(f"setting {name} must be a list of caller identities (or \"*\")")
        if self.caller_rewards not in ("own_scope", "refuse"):
            raise ConfigError(f"setting caller_rewards must be own_scope or refuse, got {self.caller_rewards!r}")
        try:
            self._policy = parse_policy(self.approval)
        except PolicyError as exc:
            raise ConfigError(str(exc)) from None

    @property
    def policy(self) -> ApprovalPolicy:
        """The `approval` setting, parsed."""
        return self._policy

    def task_problem(self, task: str) -> str | None:
        """Why `task` is refused, or None."""
        if len(task) > self.max_task_chars:
            return (f"the task is {len(task)} characters; at most {self.max_task_chars} are accepted "
                    "(setting max_task_chars)")
        return None

    def output_method(self, role: str) -> str:
        """The structured output method of `role` ('planner' or 'judge')."""
        return getattr(self, f"{role}_output_method", "") or self.structured_output_method

    def resolved_data_dir(self) -> Path:
        return Path(self.data_dir).expanduser() if self.data_dir else Path(platformdirs.user_data_dir("memento"))

    def case_bank_location(self) -> str:
        return self.chroma_url or str(self.resolved_data_dir() / "chroma")

    def retriever_checkpoint(self) -> Path:
        return Path(self.retriever_path).expanduser() if self.retriever_path else self.resolved_data_dir() / "retriever.pt"

    def checkpoint_path(self) -> Path:
        """The SQLite checkpoint file (when the checkpointer is not a Postgres URL)."""
        if self.checkpointer and not self.uses_postgres():
            return Path(self.checkpointer).expanduser()
        return self.resolved_data_dir() / "checkpoints.sqlite"

    def uses_postgres(self) -> bool:
        return self.checkpointer.lower().startswith(("postgresql://", "postgres://"))

    def checkpointer_target(self) -> str:
        """The Postgres URL or the SQLite file the runs are checkpointed in."""
        return self.checkpointer if self.uses_postgres() else str(self.checkpoint_path())

    def replace(self, **changes: Any) -> "Context":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"approval": policy_dict(self.policy)}


FIELD_NAMES = frozenset(f.name for f in fields(Context))


def context_from_dict(values: dict[str, Any], source: str = "settings") -> Context:
    unknown = sorted(set(values) - FIELD_NAMES)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)} in {source}: see configs/default.toml")
    try:
        return Context(**values)
    except TypeError as exc:
        raise ConfigError(f"bad settings in {source}: {exc}") from exc


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML config. Tables group settings for readability; `[mcp_servers.NAME]` tables
    define tool servers and `[approval]` is the approval policy. Every other key is a `Context` field."""
    path = Path(path).expanduser()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found: check the --config path") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is not readable TOML: {exc}") from None
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("mcp_servers", "approval", "caller_limits", "model_profiles") or not isinstance(value, dict):
            values[key] = value
        else:
            values.update(value)
    return values


def default_config_path() -> Path:
    """The packaged `configs/default.toml`, which documents every default of `Context`."""
    return Path(str(importlib.resources.files("memento.configs") / "default.toml"))


def load_context(path: str | Path | None = None, **overrides: Any) -> Context:
    """Settings from the `Context` defaults, then the file at `path`, then non-None `overrides`.

    A file's `[mcp_servers.NAME]` tables add servers to the built-in ones, or replace the one of
    that name; `enabled = false` turns a built-in server off."""
    values = read_config_file(path) if path else {}
    if "mcp_servers" in values:
        values["mcp_servers"] = default_mcp_servers() | values["mcp_servers"]
    if isinstance(values.get("caller_limits"), dict):
        values["caller_limits"] = DEFAULT_CALLER_LIMITS | values["caller_limits"]
    values.update({k: v for k, v in overrides.items() if v is not None})
    return context_from_dict(values, source=str(path) if path else "overrides")


def context_of(runtime: Any) -> Context:
    """The run's `Context`, whether it came as the dataclass, a dict (LangGraph server) or not at all."""
    ctx = getattr(runtime, "context", None)
    if ctx is None:
        return Context()
    if isinstance(ctx, Context):
        return ctx
    if isinstance(ctx, dict):
        return context_from_dict(ctx, source="the run's context")
    raise ConfigError(f"run context must be a memento Context or a dict, got {type(ctx).__name__}")
