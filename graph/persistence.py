"""Where runs are checkpointed: a SQLite file (the default) or PostgreSQL (a team's shared server).

The `checkpointer` setting (config key, `--checkpointer`, `MEMENTO_CHECKPOINTER`) picks it: empty is
`DATA_DIR/checkpoints.sqlite`, a path is another SQLite file, and a `postgresql://` URL selects
`langgraph-checkpoint-postgres`, so that a run started by one worker can be listed, approved and
resumed by another on any machine. The URL's password is used to connect and nowhere else: it is
never stored with a run's settings, and every message shows the URL without it (better still, give
it in `PGPASSWORD` or `~/.pgpass`, which libpq reads, and keep it out of the URL).
"""

from __future__ import annotations

import random
import re
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator
from urllib.parse import urlsplit

from memento.graph.errors import RunError

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
CHECKPOINTER_VARIABLE = "MEMENTO_CHECKPOINTER"  # the operator's environment names the checkpointer here
_PASSWORD_IN_TEXT = re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*@", re.IGNORECASE)
_PASSWORD_PARAMETER = re.compile(r"((?:^|[?&\s])password=)[^&\s]*", re.IGNORECASE)


class CheckpointerError(RunError, ConnectionError):
    """The checkpointer's database cannot be reached or used."""


def is_postgres(target: str) -> bool:
    return target.lower().startswith(POSTGRES_SCHEMES)


def redact_url(url: str) -> str:
    """`url` without its password, in the user part (`postgresql://user:***@host/db`) or as a
    `password=` parameter; anything else unchanged."""
    return redact_text(url)


def redact_text(text: str) -> str:
    """Every Postgres URL's password in a message replaced by ***."""
    return _PASSWORD_PARAMETER.sub(r"\1***", _PASSWORD_IN_TEXT.sub(r"\1***@", text))


def quoted(exc: BaseException) -> str:
    """A database error's words for a one-line message: on one line, bounded, any password redacted."""
    return redact_text(" ".join(str(exc).split()))[:300]


def check_postgres_url(url: str) -> None:
    from memento.graph.context import ConfigError

    try:
        parts = urlsplit(url)
        if "," not in parts.netloc:  # several hosts (libpq takes host1:port1,host2:port2): libpq checks them
            parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise ConfigError(f"checkpointer URL {redact_url(url)} is malformed ({exc}): "
                          "give postgresql://USER@HOST:PORT/DATABASE") from None
    if not parts.hostname and "host=" not in parts.query:
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
