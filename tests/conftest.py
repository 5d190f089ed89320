"""Shared fixtures: the CODAP sample data, one Ray session for the whole run, and clients on
fresh stores (per test, or per module)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def codap_data_path() -> Path:
    """Where the real CODAP sample files are: $BATCHRAY_CODAP_DATA, else ../shared/data/codap."""
    env = os.environ.get("BATCHRAY_CODAP_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "codap"


@pytest.fixture(scope="session")
def codap_dir() -> Path:
    path = codap_data_path()
    if not path.is_dir():
        pytest.skip(f"CODAP sample data not found at {path} (set BATCHRAY_CODAP_DATA)")
    return path


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
