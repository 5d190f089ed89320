"""Shared fixtures. Ray-backed fixtures live in tests/ray_fixtures.py and are imported here."""
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


@pytest.fixture
def make_client(ray_session, tmp_path):
    """``make_client(name="store", **connect_options)``: a client on a fresh store; its actors
    are stopped when the test ends."""
    import batchray

    clients = []

    def make(name: str = "store", **options):
        options.setdefault("progress", False)
        client = batchray.connect(tmp_path / name, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.shutdown()


@pytest.fixture
def client(make_client):
    return make_client()
