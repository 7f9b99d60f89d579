import pytest

from memento.mcp_servers.client import SessionPool, Toolbox


@pytest.fixture
def session_pool():
    """A pool of its own for the test, so no server outlives it."""
    pool = SessionPool()
    yield pool
    pool.close_all()


@pytest.fixture
def toolbox_for(session_pool):
    """Open toolboxes over real stdio servers and close them all after the test."""
    opened = []

    def make(servers, allowed_paths=None, workspace=""):
        box = Toolbox(servers, allowed_paths or [], workspace, pool=session_pool).open()
        opened.append(box)
        return box

    yield make
    for box in opened:
        box.close()


def call(box, name, **args):
    return box.call({"name": name, "args": args, "id": f"call-{name}"}, 100_000)


def stdio(module, *args, **extra):
    return {"transport": "stdio", "command": "{python}", "args": ["-m", module, *args], **extra}


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL on a free loopback port for the whole session (`make test` installs it where
    the machine allows); the tests that need it skip, saying why, where it cannot run."""
    from memento.bench.servers import ServerUnavailable, local_postgres

    try:
        with local_postgres() as server:
            yield server
    except ServerUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def postgres_url(postgres_server):
    """A database of its own for the test, on the session's server; its URL holds the password."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_server.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def chroma_server(tmp_path):
    """`chroma run` on a free loopback port, stopped after the test."""
    from memento.bench.servers import ServerUnavailable, local_chroma

    try:
        with local_chroma(tmp_path / "chroma-server") as server:
            yield server
    except ServerUnavailable as exc:
        pytest.skip(str(exc))
