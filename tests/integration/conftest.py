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
