"""Shared fixtures: the CODAP test files (the fixtures, and CODAP's samples when present), one
Ray session for the whole run, and clients on fresh stores (per test, or per module)."""
from __future__ import annotations

from pathlib import Path

import pytest

import codap_files
from actors.auth import prepare_ray_auth

# before any test module imports Ray: a machine with a Ray token gets the token mode in every Ray
# this run starts or joins, whichever test module happens to import Ray first
prepare_ray_auth(None)

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", params=list(codap_files.data_sets().items()),
                ids=lambda named: named[0])
def codap_dir(request) -> Path:
    """A folder of CODAP test files: the repository's fixtures, then CODAP's own samples when
    present (see ``codap_files``); a test that takes it runs once per folder."""
    return request.param[1]


# -- Ray: one session shared by the whole run; fault tests start clusters of their own -------

@pytest.fixture(scope="session")
def ray_session():
    """A local Ray shared by every test that needs one (ray.init costs about 5 s)."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        # address="local": always a Ray of our own, never another local cluster Ray would find
        ray.init(address="local", num_cpus=4, include_dashboard=False, namespace="batchray", log_to_driver=False)
    yield ray


class _Clients:
    """Opens clients on fresh stores under ``root``; :meth:`shutdown_all` stops their actors."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.opened: list = []

    def __call__(self, name: str = "store", **options):
        import batchray

        options.setdefault("progress", False)
        client = batchray.connect(self.root / name, **options)
        self.opened.append(client)
        return client

    def shutdown_all(self) -> None:
        for client in reversed(self.opened):
            try:
                client.shutdown()
            except Exception:  # noqa: BLE001 - a second client of a store finds its actors gone
                client.close()


@pytest.fixture
def make_client(ray_session, tmp_path):
    """``make_client(name="store", **connect_options)``: a client on a fresh store; its actors
    are stopped when the test ends."""
    clients = _Clients(tmp_path)
    yield clients
    clients.shutdown_all()


@pytest.fixture
def client(make_client):
    return make_client()


@pytest.fixture(scope="module")
def open_store(ray_session, tmp_path_factory, request):
    """``open_store(name, **connect_options)``: a client on a fresh store, shut down at the end
    of the module (a module's clients share the cost of starting their actors)."""
    clients = _Clients(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    yield clients
    clients.shutdown_all()


# -- soak runs: long, by hand only ------------------------------------------------------------

def pytest_collection_modifyitems(config, items):
    """A test marked ``soak`` runs only when the ``-m`` expression selects soak runs
    (``pytest -m soak``); in every other run it is skipped, saying how to select it."""
    expression = config.getoption("-m") or ""
    if "soak" in expression and "not soak" not in expression:
        return
    skip = pytest.mark.skip(reason="a soak run: select it with pytest -m soak")
    for item in items:
        if item.get_closest_marker("soak") is not None:
            item.add_marker(skip)
