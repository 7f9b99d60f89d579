"""A Postgres URL's or conninfo string's secrets never shown: parsed as libpq parses them."""

import pytest

from memento.graph.context import ConfigError
from memento.graph.persistence import check_postgres_url, quoted, redact_text, redact_url

# (connection string, the words of its secrets as written and as libpq decodes them)
FORMS = [
    ("postgresql://team:S3cr3tA@db.example:5432/memento?sslmode=require", ["S3cr3tA"]),
    ("postgresql://team@db/x?pass%77ord=S3cr3tB", ["S3cr3tB"]),
    ("postgresql://team@db/x?%70%61%73%73%77%6F%72%64=S3cr3tC&sslmode=require", ["S3cr3tC"]),
    ("postgresql://team@db/x?PASSWORD=S3cr3tD", ["S3cr3tD"]),
    ("postgresql://team@db/x?Pass%57ord=S3cr3tD2", ["S3cr3tD2"]),
    ("postgresql://team@db/x?password=S3cr3tE&sslmode=require&password=S3cr3tF", ["S3cr3tE", "S3cr3tF"]),
    ("postgresql://team@db/x?sslmode=verify-full&sslpassword=S3cr3tG", ["S3cr3tG"]),
    ("postgresql://team@db/x?ssl%70assword=S3cr3tG2&sslkey=/keys/k.pem", ["S3cr3tG2"]),
    ("postgresql://team@db/x?oauth_client_id=app&oauth_client_secret=S3cr3tH", ["S3cr3tH"]),
    ("postgresql://team@db/x?scram_client_key=S3cr3tH2&scram_server_key=S3cr3tH3", ["S3cr3tH2", "S3cr3tH3"]),
    ("postgresql://us%3Aer:se%3Acr%40S3cr3tI@db/x", ["se%3Acr%40S3cr3tI", "se:cr@S3cr3tI"]),
    ("postgresql://team%3AS3cr3tJ@db/x", ["S3cr3tJ"]),  # libpq reads a name; it was meant as a password
    ("postgresql://team:S3cr3tK@h1:5432,h2:5433/memento?target_session_attrs=read-write&sslpassword=S3cr3tL",
     ["S3cr3tK", "S3cr3tL"]),
    ("postgres://team:S3?cr3tM@db/x", ["S3?cr3tM", "cr3tM"]),  # libpq reads the '?' as the password's
    ("postgresql://team:S3cr@3tN@db/x", ["S3cr@3tN", "3tN"]),  # an unencoded '@'
    ("postgresql://team:S3cr/3tO@db/x", ["S3cr/3tO", "3tO"]),  # an unencoded '/': libpq cannot use it
    ("postgresql:///x?host=/run/postgresql&password=S3cr3tP", ["S3cr3tP"]),
    ("postgresql://team@db/x?password=a%26S3cr3tQ&sslmode=require", ["S3cr3tQ"]),
    ("POSTGRESQL://team:S3cr3tR@db/x", ["S3cr3tR"]),
    ("postgresql+psycopg://team:S3cr3tS@db/x", ["S3cr3tS"]),
    ("host=db port=5432 password=S3cr3tT dbname=x", ["S3cr3tT"]),
    ("host=db password = S3cr3tU dbname=x", ["S3cr3tU"]),
    (r"host=db password='S3 cr\'3tV x' dbname=x", ["S3 cr", "3tV"]),
    (r"host=db password=S3cr\ 3tW dbname=x", ["S3cr", "3tW"]),
    ("dbname=x sslpassword=S3cr3tX sslmode=require", ["S3cr3tX"]),
    ('{"host": "db", "password": "S3cr3tY"}', ["S3cr3tY"]),
    ("{'host': 'db', 'sslpassword': 'S3cr3tZ'}", ["S3cr3tZ"]),
]


@pytest.mark.parametrize("url,secrets", FORMS)
def test_no_form_of_a_secret_is_shown(url, secrets):
    for shown in (redact_url(url), redact_text(f"could not connect to {url}: refused"),
                  redact_text(f"connection failed:\n  dsn \"{url}\"\n"), quoted(RuntimeError(f"at {url}\n  (refused)"))):
        for secret in secrets:
            assert secret not in shown, shown
        assert "***" in shown


@pytest.mark.parametrize("url,secrets", FORMS)
def test_what_libpq_itself_reads_as_a_secret_is_never_shown(url, secrets):
    """libpq's own parse (through psycopg) names the secret values; none of them survives."""
    conninfo = pytest.importorskip("psycopg.conninfo")
    try:
        parsed = conninfo.conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - a form libpq refuses (upper-case keys, a mapping): covered above
        return
    secret_values = [v for k, v in parsed.items()
                     if k in ("password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key")]
    for value in secret_values:
        assert str(value) not in redact_url(url)


def test_what_is_not_secret_is_kept():
    assert redact_url("postgresql://team:pw@db.example:5432/memento?sslmode=require&application_name=me") == \
        "postgresql://team:***@db.example:5432/memento?sslmode=require&application_name=me"
    assert redact_url("postgresql://team@db/x") == "postgresql://team@db/x"
    assert redact_url("postgresql://team@db/x?sslmode=require&pass%77ord=pw") == \
        "postgresql://team@db/x?sslmode=require&pass%77ord=***"
    assert redact_url("postgresql://team:pw@h1:5432,h2:5433/db") == "postgresql://team:***@h1:5432,h2:5433/db"
    assert redact_url("host=db user=team password='a b' dbname=x") == "host=db user=team password=*** dbname=x"
    assert redact_text("password authentication failed for user \"team\"") == \
        "password authentication failed for user \"team\""
    once = redact_url("postgresql://team:pw@db/x?password=pw")
    assert redact_url(once) == once  # redacting twice changes nothing


def test_a_malformed_url_is_refused_without_quoting_its_secret():
    for url in ("postgresql://team:S3cr3t@db:notaport/x", "postgresql://team:S3cr3t@db:99999/x",
                "postgresql://team:S3cr3t/x@db:notaport/x"):
        with pytest.raises(ConfigError, match="is malformed") as refused:
            check_postgres_url(url)
        assert "S3cr3t" not in str(refused.value)
    with pytest.raises(ConfigError, match="names no host"):
        check_postgres_url("postgresql:///x?password=S3cr3t")
    # What libpq accepts is accepted: a '?' in the password, several hosts, a host given as a parameter.
    for url in ("postgresql://team:p?ss@db:5432/x", "postgresql://team@h1:5432,h2:5433/x",
                "postgresql:///x?host=/run/postgresql", "postgresql://team@[::1]:5432/x"):
        check_postgres_url(url)


@pytest.mark.slow
def test_the_command_never_prints_a_secret_of_an_unreachable_checkpointer(tmp_path):
    """Through the real command and psycopg: nothing listens on the port, the error quotes the URL."""
    import json
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = (f"postgresql://memento:S3cr3tA@127.0.0.1:{port}/postgres?pass%77ord=S3cr3tB&sslpassword=S3cr3tC"
           "&connect_timeout=5")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMENTO_", "PG"))}
    done = subprocess.run([sys.executable, "-m", "memento.cli.main", "threads", "--checkpointer", url,
                           "--data-dir", str(tmp_path), "--json"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    for secret in ("S3cr3tA", "S3cr3tB", "S3cr3tC"):
        assert secret not in done.stdout + done.stderr
    assert "pass%77ord=***" in json.loads(done.stdout)["error"]
