"""One live owner per store (batchray.core.storage.ownership), with real processes.

* The owner lock: a live holder (another process) refuses a claim with STORE_IN_USE naming it;
  a SIGKILLed holder's lock is released by the OS (SQLite: flock) or the server (PostgreSQL:
  the session's advisory lock), and the next claim takes the store.
* A driver that finds a live owner it cannot reach is refused at once with STORE_IN_USE
  (the CLI prints it as the structured error), and nothing is taken over.
* Two independent drivers and the CLI on one store (``faults``: each starts Ray): the second
  driver and the CLI join the first's Ray cluster and coordinator, and the first keeps
  committing and reading; after a SIGKILL of the owner's whole process group a driver that
  had joined it serves the store again on its next call (it takes the store over) within
  30 s, with every acknowledged batch there, and a new driver joins it.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from batchray.core.storage.backends import open_backend
from batchray.core.storage.ownership import claim, live_owner, owner_record
from batchray.errors import StoreInUse
from tests.fault_rig import Child, _ray_env

REPO = Path(__file__).resolve().parents[1]
DSN = os.environ.get("BATCHRAY_TEST_PG_DSN")
HOLDER = """
import sys, time
from batchray.core.storage.backends import open_backend
from batchray.core.storage.ownership import claim, owner_record
held = claim(open_backend(sys.argv[1]), owner_record(sys.argv[2], "c", "batchray"))
print("held", flush=True)
time.sleep(600)
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once closed


def _pg_url() -> str:
    return f"{DSN}{'&' if '?' in DSN else '?'}schema=own_{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "store")
    if not DSN:
        pytest.skip("needs a PostgreSQL server: set BATCHRAY_TEST_PG_DSN")
    return _pg_url()


def _start_holder(store: str, address: str) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, store, address], stdout=subprocess.PIPE,
                              env=_ray_env(), text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def _gone(store: str, timeout: float = 10.0) -> bool:
    backend = open_backend(store)
    try:
        deadline = time.monotonic() + timeout
        while live_owner(backend) is not None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True
    finally:
        backend.close()


def test_a_live_owner_refuses_a_claim_and_a_killed_one_releases_the_store(store):
    address = f"127.0.0.1:{_closed_port()}"
    holder = _start_holder(store, address)
    backend = open_backend(store)
    try:
        owner = live_owner(backend)
        assert owner is not None and owner["pid"] == holder.pid and owner["address"] == address
        with pytest.raises(StoreInUse) as refused:
            claim(backend, owner_record("127.0.0.1:1", "c", "batchray"), wait=0.3)
        assert refused.value.details["owner"]["pid"] == holder.pid
        assert refused.value.details["join"] == f"address={address!r}"
        assert live_owner(backend)["pid"] == holder.pid, "a refused claim changes nothing"
        holder.kill()
        holder.wait()
        assert _gone(store), "the killed holder's lock was not released"
        mine = claim(backend, owner_record("127.0.0.1:2", "c", "batchray"))
        assert live_owner(open_backend(store))["address"] == "127.0.0.1:2"
        mine.release()
        assert live_owner(backend) is None
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        backend.close()


def test_a_driver_that_cannot_reach_the_owner_is_refused_at_once(tmp_path):
    store = str(tmp_path / "store")
    address = f"127.0.0.1:{_closed_port()}"
    holder = _start_holder(store, address)
    try:
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "batchray.api.cli", "status", "--store", store],
                              capture_output=True, text=True, env=_ray_env(), cwd=REPO, timeout=120)
        elapsed = time.monotonic() - started
        assert done.returncode == 1, done.stderr[-2000:]
        error = json.loads(done.stdout)["error"]
        assert error["code"] == "STORE_IN_USE", error
        assert error["details"]["owner"]["pid"] == holder.pid
        assert address in error["details"]["join"] and address in error["message"]
        assert elapsed < 30, f"refused after {elapsed:.0f} s"
        assert not (tmp_path / "store" / "coordinator.sqlite").exists(), "nothing of the store was opened to write"
    finally:
        holder.kill()
        holder.wait()


def test_the_in_process_runtime_is_refused_a_served_store_and_owns_one_it_opens(store):
    from tests.local_runtime import local_client

    holder = _start_holder(store, f"127.0.0.1:{_closed_port()}")
    try:
        with pytest.raises(StoreInUse) as refused:
            local_client(store)
        assert refused.value.details["owner"]["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()
    assert _gone(store)
    with local_client(store) as client:
        backend = open_backend(store)
        try:
            assert live_owner(backend)["pid"] == os.getpid() == client.info()["owner"]["pid"]
            with local_client(store):  # the same process shares its ownership
                pass
            assert live_owner(backend)["pid"] == os.getpid(), "the first runtime still owns the store"
        finally:
            backend.close()
    assert _gone(store, timeout=0.5), "closing the last runtime releases the store"


# -- two drivers and the CLI, then the owner killed ---------------------------------------------

DRIVER = Path(__file__).with_name("owner_driver.py")


def _driver(store: str, log: Path, wait: float = 0.0) -> Child:
    return Child([store, str(wait)], log, script=DRIVER, own_group=True)


def _ask(driver: Child, message: dict, timeout: float = 120.0) -> dict:
    driver.send(message)
    return driver.read(timeout)


def _cli(store: str, *argv: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "batchray.api.cli", *argv, "--store", store], capture_output=True,
                          text=True, env=_ray_env(), cwd=REPO, timeout=180)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    return json.loads(done.stdout)


@pytest.mark.faults
def test_a_second_driver_and_the_cli_join_the_owner_and_a_killed_owner_is_taken_over(store, tmp_path):
    first = _driver(store, tmp_path / "first.log")
    survivors: list[Child] = []
    try:
        hello = first.read(180)
        assert hello["connected"] and hello["owner"]["address"] == hello["gcs"], hello
        acked = {"first": 0, "second": 0, "cli": 0}
        assert _ask(first, {"op": "create", "n": 10, "tag": "first"})["success"]
        acked["first"] += 10

        # the CLI joins the owner's cluster: it commits, and status names the same owner
        rows = [{"values": {"tag": "cli", "n": i}} for i in range(4)]
        created = _cli(store, "tool", "batch_create_items", "--json", json.dumps(
            {"dataContextName": "Own", "collectionName": "Rows", "items": rows}))
        assert created["success"], created
        acked["cli"] += 4
        status = _cli(store, "status")
        assert status["owner"]["address"] == hello["gcs"] and status["owner"]["pid"] == hello["owner"]["pid"]

        # a second independent driver joins too, commits, and leaves
        second = _driver(store, tmp_path / "second.log")
        joined = second.read(180)
        assert joined["connected"] and joined["gcs"] == hello["gcs"], joined
        assert joined["owner"] == hello["owner"], "one coordinator serves both drivers"
        assert _ask(second, {"op": "create", "n": 7, "tag": "second"})["success"]
        acked["second"] += 7
        second.close()

        # a driver that joins now and outlives the owner
        survivor = _driver(store, tmp_path / "survivor.log")
        survivors.append(survivor)
        assert survivor.read(180)["gcs"] == hello["gcs"]
        assert _ask(survivor, {"op": "create", "n": 2, "tag": "survivor"})["success"]
        acked["survivor"] = 2

        # the first driver keeps committing and reading
        assert _ask(first, {"op": "create", "n": 5, "tag": "first"})["success"]
        acked["first"] += 5
        assert _ask(first, {"op": "count"}) == {"count": sum(acked.values()), "tags": acked}

        # SIGKILL of the owner's whole process group: the joined driver's next call serves the
        # store again (it takes it over), with every acknowledged batch there
        os.killpg(first.proc.pid, signal.SIGKILL)
        first.proc.wait()
        called_at = time.monotonic()  # at once: the dead owner's processes may still hold its lock a moment
        answer = _ask(survivor, {"op": "create", "n": 2, "tag": "survivor"}, timeout=120)
        elapsed = time.monotonic() - called_at
        print(f"the joined driver's next call reconnected and committed in {elapsed:.1f} s")
        assert answer["success"], (answer, survivor.tail())
        acked["survivor"] += 2
        # about 20 s on an idle machine (README); the bound only tells a hang from a slow
        # machine (a loaded one has taken 40 s: a new Ray started, recovery, the commit)
        assert elapsed < 100, f"the joined driver's next call took {elapsed:.0f} s\n{survivor.tail()}"
        assert _ask(survivor, {"op": "count"}) == {"count": sum(acked.values()), "tags": acked}

        # a new driver joins the store's new owner (the survivor's Ray)
        third = _driver(store, tmp_path / "third.log", wait=60.0)
        survivors.append(third)
        took_over = third.read(180)
        assert took_over["connected"], took_over
        assert took_over["owner"]["address"] == took_over["gcs"] != hello["gcs"]
        assert _ask(third, {"op": "count"}) == {"count": sum(acked.values()), "tags": acked}
        assert _ask(third, {"op": "create", "n": 3, "tag": "third"})["success"]
        # `batchray stop` joins the owner, stops its actors, and so releases the store
        stopped = _cli(store, "stop")
        assert stopped["success"] and stopped["stopped"]["pid"] == took_over["owner"]["pid"]
        assert _gone(store), "the stopped coordinator still holds the store"
    finally:
        for child in (first, *survivors):
            if child.proc.poll() is None:
                with_group = child.proc.pid
                try:
                    os.killpg(with_group, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            child.close(timeout=30)


def test_an_owner_record_that_cannot_be_written_leaves_the_store_unclaimed(tmp_path, monkeypatch):
    """A full disk while the record was written raised a bare OSError (INTERNAL) and kept the
    owner lock on a descriptor nobody would close: the process's next claim was refused as a
    store in use by itself, and every other driver saw a live owner."""
    from batchray.core.storage import ownership
    from batchray.errors import StoreError

    backend = open_backend(tmp_path / "store")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(ownership.os, "replace", disk_full)
        with pytest.raises(StoreError, match="No space left on device"):
            claim(backend, owner_record(None, None, None))
    assert live_owner(backend) is None
    assert not [p for p in (tmp_path / "store").iterdir() if p.name.startswith(".owner.json")]
    held = claim(backend, owner_record(None, "c", "batchray"))
    assert live_owner(backend)["coordinator"] == "c"
    held.release()
    backend.close()
