"""Where runs are checkpointed: a SQLite file (the default) or PostgreSQL (a team's shared server).

The `checkpointer` setting (config key, `--checkpointer`, `MEMENTO_CHECKPOINTER`) picks it: empty is
`DATA_DIR/checkpoints.sqlite`, a path is another SQLite file, and a `postgresql://` URL selects
`langgraph-checkpoint-postgres`, so that a run started by one worker can be listed, approved and
resumed by another on any machine. The URL's password is used to connect and nowhere else: it is
never stored with a run's settings, and every message shows the URL without it (better still, give
it in `PGPASSWORD` or `~/.pgpass`, which libpq reads, and keep it out of the URL).
"""

from __future__ import annotations

import functools
import random
import re
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator
from urllib.parse import unquote

from memento.graph.errors import RunError

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
CHECKPOINTER_VARIABLE = "MEMENTO_CHECKPOINTER"  # the operator's environment names the checkpointer here
SECRET_SHOWN = "***"
# The libpq connection parameters whose values are secrets. libpq marks the first three as
# passwords (PQconndefaults' "*"); the SCRAM keys stand in for the password but are marked only
# as debug options; PGPASSWORD is the variable libpq reads one from, should a message quote it.
# The installed libpq's own marks are added to these (`secret_parameters`).
SECRET_PARAMETERS = frozenset({"password", "sslpassword", "oauth_client_secret", "scram_client_key",
                               "scram_server_key", "pgpassword"})
# `postgresql+psycopg://` and the like (SQLAlchemy's spelling) are redacted too, should a message quote one.
_URL = re.compile(r"postgres(?:ql)?(?:\+[\w.-]+)?://\S*", re.IGNORECASE)
# In a URL, a parameter runs to the next '&' (libpq splits there, then percent-decodes key and value).
_URL_PARAMETER = re.compile(r"([?&])([^=&?]*)=([^&]*)")
# In a conninfo string (`host=h password='a b'`), a value is single-quoted or runs to whitespace,
# with backslash escapes in both forms.
_CONNINFO_PARAMETER = re.compile(r"(?<![\w%])([A-Za-z_]\w*)(\s*=\s*)('(?:\\.|[^'\\])*'?|(?:\\.|\\$|[^\s\\])+)")
# The same keys as a JSON or Python mapping would quote them: "password": "..."
_QUOTED_PARAMETER = re.compile(r"""(["'])([A-Za-z_]\w*)\1(\s*:\s*)(["'])((?:\\.|(?!\4)[^\\])*)""")


class CheckpointerError(RunError, ConnectionError):
    """The checkpointer's database cannot be reached or used."""


def is_postgres(target: str) -> bool:
    return target.lower().startswith(POSTGRES_SCHEMES)


@functools.cache
def secret_parameters() -> frozenset[str]:
    """SECRET_PARAMETERS and whatever the installed libpq marks as a password."""
    try:
        from psycopg import pq

        marked = {option.keyword.decode("ascii") for option in pq.Conninfo.get_defaults() if option.dispchar == b"*"}
    except Exception:  # noqa: BLE001 - psycopg missing or without its libpq: the known list stands
        marked = set()
    return SECRET_PARAMETERS | marked


def _is_secret(key: str) -> bool:
    # libpq percent-decodes a URL's keys (`pass%77ord` is `password`); case and spaces are forgiven
    # here, so that a key libpq would refuse is not shown either.
    return unquote(key).strip().lower() in secret_parameters()


def split_url(url: str) -> tuple[str, str | None, str]:
    """(`scheme://`, the user part or None, the rest from the hosts on) of a Postgres URL, the
    user part ending where libpq ends it: at the first '@' met before any '/'. A second '@' there
    (an unencoded one in the password) is taken as part of the user part too, so that nothing of
    such a password is read as a host."""
    cut = url.find("://")
    head = url[:cut + 3] if cut >= 0 else ""
    rest = url[len(head):]
    slash = rest.find("/")
    at = (rest if slash < 0 else rest[:slash]).rfind("@")
    return (head, rest[:at], rest[at + 1:]) if at >= 0 else (head, None, rest)


def _redact_url(url: str) -> str:
    head, user, rest = split_url(url)
    if user is None:
        # libpq found no user part, but a password holding an unencoded '/' still ends with '@':
        # shown without it all the same (a URL like that does not connect anyway).
        query = rest.find("?")
        at = (rest if query < 0 else rest[:query]).rfind("@")
        if at >= 0 and ":" in rest[:at]:
            user, rest = rest[:at], rest[at + 1:]
    if user is not None:
        name, colon, password = user.partition(":")
        if colon:
            user = f"{name}:{SECRET_SHOWN if password else ''}"
        elif ":" in unquote(name):  # an encoded colon: libpq reads a name, but it was meant as a password
            user = name[:name.lower().index("%3a") + 3] + SECRET_SHOWN if "%3a" in name.lower() else name
        head += user + "@"
    return head + _URL_PARAMETER.sub(
        lambda m: f"{m[1]}{m[2]}={SECRET_SHOWN}" if m[3] and _is_secret(m[2]) else m[0], rest)


def _redact_conninfo(text: str) -> str:
    text = _CONNINFO_PARAMETER.sub(lambda m: f"{m[1]}{m[2]}{SECRET_SHOWN}" if _is_secret(m[1]) else m[0], text)
    return _QUOTED_PARAMETER.sub(
        lambda m: f"{m[1]}{m[2]}{m[1]}{m[3]}{m[4]}{SECRET_SHOWN}" if _is_secret(m[2]) else m[0], text)


def redact_url(url: str) -> str:
    """`url` (a `postgresql://` URL or a `key=value` conninfo string) without its secrets: the
    password of the user part and the value of every parameter that holds one for libpq
    (`password`, `sslpassword`, ..., its key percent-encoded or not) shown as ***."""
    return redact_text(url)


def redact_text(text: str) -> str:
    """`text` (a message, an error's words) with every Postgres URL and conninfo secret in it
    replaced by ***. The text is parsed as libpq parses a connection string, never matched for
    known spellings: a URL runs to the next whitespace."""
    shown, end = [], 0
    for match in _URL.finditer(text):
        shown += [_redact_conninfo(text[end:match.start()]), _redact_url(match[0])]
        end = match.end()
    shown.append(_redact_conninfo(text[end:]))
    return "".join(shown)


def quoted(exc: BaseException) -> str:
    """A database error's words for a one-line message: on one line, bounded, any password redacted."""
    return redact_text(" ".join(str(exc).split()))[:300]


def _port_problem(hosts: str) -> str | None:
    """Why the hosts part of a URL (`host:port,host:port`, `[::1]:port`) cannot be used, or None."""
    for spec in hosts.split(","):
        port = spec.rpartition("]")[2] if spec.startswith("[") else spec
        _, colon, port = port.partition(":")
        if colon and port and not (port.isascii() and port.isdigit()):
            return "a port is not a number"
        if colon and port and not 0 <= int(port) <= 65535:
            return "a port is out of range 0-65535"
    return None


def check_postgres_url(url: str) -> None:
    from memento.graph.context import ConfigError

    _, _, rest = split_url(url)
    hosts = re.split(r"[/?]", rest, maxsplit=1)[0]
    if problem := _port_problem(hosts):  # said without quoting the URL's words: they may hold a password
        raise ConfigError(f"checkpointer URL {redact_url(url)} is malformed ({problem}): "
                          "give postgresql://USER@HOST:PORT/DATABASE")
    query = rest.partition("?")[2]
    named = any(unquote(key).strip().lower() in ("host", "hostaddr") and value
                for _, key, value in _URL_PARAMETER.findall("?" + query))
    if not hosts.replace(",", "").strip() and not named:
        raise ConfigError(f"checkpointer URL {redact_url(url)} names no host: give postgresql://USER@HOST:PORT/DATABASE")


@contextmanager
def postgres_saver(url: str) -> Iterator["BaseCheckpointSaver"]:
    """A `PostgresSaver` on its own connection, its tables created or migrated on first use."""
    import psycopg
    from langgraph.checkpoint.postgres import PostgresSaver

    check_postgres_url(url)
    with ExitStack() as stack:
        try:
            saver = stack.enter_context(PostgresSaver.from_conn_string(url))
        except psycopg.Error as exc:
            raise CheckpointerError(f"cannot reach the Postgres checkpointer at {redact_url(url)}: {quoted(exc)}: "
                                    "start it, or fix the checkpointer setting (the runs already stored there are "
                                    "kept)") from None
        _set_up(saver, url)
        yield saver


def _set_up(saver: Any, url: str, attempts: int = 6) -> None:
    """Create or migrate the checkpoint tables, unless they are up to date. Workers starting at
    once on a new database race on the migrations (PostgreSQL resolves that by failing one of
    them); the migrations are idempotent, so the loser tries again."""
    import psycopg

    for attempt in range(attempts):
        try:
            with saver._cursor() as cur:
                done = cur.execute("SELECT max(v) AS v FROM checkpoint_migrations").fetchone()
            if done and done["v"] is not None and done["v"] >= len(saver.MIGRATIONS) - 1:
                return
        except psycopg.errors.UndefinedTable:
            pass
        try:
            saver.setup()
            return
        except (psycopg.errors.DeadlockDetected, psycopg.errors.UniqueViolation,
                psycopg.errors.SerializationFailure) as exc:
            if attempt == attempts - 1:
                raise CheckpointerError(f"cannot set up the checkpoint tables at {redact_url(url)}: "
                                        f"{quoted(exc)}") from None
            time.sleep(0.2 + random.random() * (attempt + 1))
        except psycopg.Error as exc:
            raise CheckpointerError(f"cannot set up the checkpoint tables at {redact_url(url)}: {quoted(exc)}") from None


@contextmanager
def open_checkpointer(target: str | Path) -> Iterator["BaseCheckpointSaver"]:
    """The checkpointer at `target`: a Postgres URL, or the path of a SQLite file."""
    target = str(target)
    if is_postgres(target):
        with postgres_saver(target) as saver:
            yield saver
        return
    from langgraph.checkpoint.sqlite import SqliteSaver

    if target != ":memory:":
        Path(target).expanduser().parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with SqliteSaver.from_conn_string(str(Path(target).expanduser()) if target != ":memory:" else target) as saver:
        yield saver


def thread_ids(saver: "BaseCheckpointSaver") -> list[str]:
    """Every thread the checkpointer holds, the most recently active first, through the
    checkpointer API (checkpoint ids are time-ordered, and `list` returns the newest first)."""
    newest: dict[str, str] = {}
    for item in saver.list(None):
        conf = item.config["configurable"]
        if conf.get("checkpoint_ns", ""):
            continue  # a subgraph's checkpoints belong to their parent's thread
        thread, checkpoint = conf["thread_id"], conf["checkpoint_id"]
        if checkpoint > newest.get(thread, ""):
            newest[thread] = checkpoint
    return sorted(newest, key=newest.__getitem__, reverse=True)
