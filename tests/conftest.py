"""Shared fixtures: the CODAP test files (the fixtures, and CODAP's samples when present), one
Ray session for the whole run, and clients on fresh stores (per test, or per module)."""
from __future__ import annotations

from pathlib import Path

import pytest

import codap_files
import serial_group
from serial_group import pytest_configure, pytest_xdist_make_scheduler  # noqa: F401 - its hooks
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


# -- the fault tests' Ray cluster: one for all their modules ----------------------------------

class _FaultCluster:
    """The Ray cluster of the fault tests (``fault_rig.ray_cluster``: one head node in a
    subprocess, apart from ``ray_session``, since these tests kill processes). Their modules
    (test_ray_faults, test_ray_crash_sweep, test_bank_faults, test_raydata_faults,
    test_pause_sweep) share it: each runs on stores of its own, so its kills reach its own
    actors only, and a cluster costs about 20 s to start and stop. Started by the first test
    that takes ``cluster``, stopped after the last one the run selected (see
    :func:`pytest_runtest_teardown`), so it does not stay up beside the other Ray tests."""

    def __init__(self) -> None:
        self._context = None
        self.address = None
        self.last_user = None  # the nodeid of the last test of the run that takes it

    def start(self, logs: Path) -> str:
        if self.address is None:
            from fault_rig import ray_cluster

            self._context = ray_cluster(logs)
            self.address = self._context.__enter__()
        return self.address

    def stop(self) -> None:
        context, self._context, self.address = self._context, None, None
        if context is not None:
            context.__exit__(None, None, None)


_fault_cluster = _FaultCluster()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """The address of the fault tests' Ray cluster (see :class:`_FaultCluster`)."""
    pytest.importorskip("ray")
    yield _fault_cluster.start(tmp_path_factory.mktemp("fault-cluster"))
    _fault_cluster.stop()


@pytest.fixture
def rig(cluster, tmp_path):
    """A store on the fault cluster (2 workers, 2 shards), its agent, and the checks of
    ``fault_rig.Rig``; its actors are stopped and its files checked at the end."""
    from fault_rig import Rig

    rig = Rig(cluster, tmp_path)
    try:
        rig.connect()
        yield rig
    finally:
        rig.close()
    rig.check_files("after the actors stopped")


def pytest_collection_finish(session):
    users = [item.nodeid for item in session.items
             if "cluster" in getattr(item, "fixturenames", ()) and item.get_closest_marker("skip") is None]
    _fault_cluster.last_user = users[-1] if users else None


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """After the last test that takes the fault cluster (and its fixtures' teardown), stop it."""
    if item.nodeid == _fault_cluster.last_user:
        _fault_cluster.stop()


# -- two test processes (tests/serial_group.py), and soak runs by hand only --------------------

def pytest_collection_modifyitems(config, items):
    """A test marked ``soak`` runs only when the ``-m`` expression selects soak runs
    (``pytest -m soak``); in every other run it is skipped, saying how to select it. A worker
    of a run in two processes records the group of each of its tests (:mod:`serial_group`)."""
    serial_group.record(items)
    expression = config.getoption("-m") or ""
    if "soak" in expression and "not soak" not in expression:
        return
    skip = pytest.mark.skip(reason="a soak run: select it with pytest -m soak")
    for item in items:
        if item.get_closest_marker("soak") is not None:
            item.add_marker(skip)
