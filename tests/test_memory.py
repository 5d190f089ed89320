"""Bounded memory: the byte budget, pauses under node memory pressure, and a load ten times
the budget on Ray.

What these tests show:

* :class:`MemoryBudget` grants reservations up to ``limit * threshold`` and records the peak;
  one reservation larger than the whole allowance is granted only when nothing else is
  reserved (the documented exception; batchray's own chunks are cut far below it);
* under memory pressure (an injected reading here) nothing is granted, even with nothing
  reserved, and reservations resume when the pressure falls; pauses are counted;
* :class:`NodePressure` derives its ceiling from ``RAY_memory_usage_threshold`` (0.1 below
  it), reads node memory and the object store, and caches the readings; the coordinator reads
  the object store off the dispatch path (``OffPathReading``);
* the planner cuts chunks at the byte cap it is given (the client gives an eighth of the
  budget's allowance);
* the coordinator service stops dispatching while under pressure: a feed blocks, nothing is
  applied, ``status()["memory"]`` says it is paused, and the batch completes once the pressure
  is gone;
* on Ray, a 610 MiB stream (320,000 rows of 2,000-byte strings) through a 64 MiB budget:
  the coordinator's peak of bytes in flight stays within the allowance (no oversized chunk:
  chunks are cut at an eighth of it), no worker is restarted (pids and epochs unchanged: Ray's
  memory monitor killed nothing), and every row is there. (The object store's own use is not
  asserted: Ray's resource reports lag by up to a second, too slow to see chunks that live
  for tens of milliseconds; the client keeps the chunks it has put but not yet had reserved
  within the budget's headroom, see ``Client._feed``.)
"""
from __future__ import annotations

import threading
import time

import pytest

from batchray.core.model.batch import RunOptions
from local_runtime import Client, local_client
from batchray.core.txn.memory import MemoryBudget, NodePressure, node_memory_ceiling
from batchray.core.run.service import CoordinatorService


def test_budget_grants_up_to_the_allowance_and_records_the_peak():
    budget = MemoryBudget(1000, 0.8, pressure=lambda: False)
    assert budget.allowance == 800
    assert budget.try_reserve(500) and budget.try_reserve(300)
    assert not budget.try_reserve(1)  # full: 800 of 800
    budget.release(500)
    assert budget.try_reserve(400) and budget.in_use == 700
    assert budget.peak == 800
    snapshot = budget.snapshot()
    assert snapshot["limit"] == 1000 and snapshot["allowance"] == 800 and snapshot["inUse"] == 700
    assert snapshot["peak"] == 800
    budget.release(10_000)  # never below zero
    assert budget.in_use == 0


def test_one_oversized_reservation_only_when_nothing_else_is_reserved():
    budget = MemoryBudget(1000, 0.8, pressure=lambda: False)
    assert budget.try_reserve(10)
    assert not budget.try_reserve(5000)
    budget.release(10)
    assert budget.try_reserve(5000)  # alone: granted, so that it cannot stall a batch forever
    assert budget.peak == 5000 and not budget.try_reserve(1)
    assert budget.chunk_bytes() == 100  # what planners are told to cut at: allowance / 8


def test_a_waiting_reservation_is_granted_by_the_release_that_makes_room():
    """``reserve_within`` (what a feed held back by the budget calls in a loop): a refusal waits
    for a release, which wakes it at once, not for the end of its timeout; without a release it
    answers False after the timeout, reserving nothing."""
    budget = MemoryBudget(1000, 0.8, pressure=lambda: False)
    assert budget.reserve_within(800, 60.0)  # fits: at once
    assert not budget.reserve_within(100, 0.01) and budget.in_use == 800
    granted = []
    waiter = threading.Thread(target=lambda: granted.append(budget.reserve_within(100, 60.0)))
    started = time.monotonic()
    waiter.start()
    time.sleep(0.05)  # the waiter is refused and waits
    assert not granted
    budget.release(300)
    waiter.join(30)
    assert granted == [True] and budget.in_use == 600
    assert time.monotonic() - started < 30  # woken by the release, not by its 60 s timeout


def test_pressure_pauses_every_reservation_and_resumption_follows_it():
    pressure = {"on": True}
    budget = MemoryBudget(1000, 0.8, pressure=lambda: pressure["on"])
    assert not budget.try_reserve(10)  # even with nothing reserved
    assert not budget.try_reserve(10)
    snapshot = budget.snapshot()
    assert snapshot["paused"] and snapshot["pausedCount"] == 1 and snapshot["inUse"] == 0
    pressure["on"] = False
    assert budget.try_reserve(10) and not budget.snapshot()["paused"]
    pressure["on"] = True
    assert not budget.try_reserve(10)
    assert budget.snapshot()["pausedCount"] == 2  # two pauses
    assert budget.in_use == 10


def test_node_pressure_ceiling_readings_and_cache(monkeypatch):
    monkeypatch.setenv("RAY_memory_usage_threshold", "0.7")
    assert node_memory_ceiling() == pytest.approx(0.6)
    monkeypatch.setenv("RAY_memory_usage_threshold", "0.95")
    assert node_memory_ceiling() == pytest.approx(0.85)
    # always below Ray's threshold: the floor of 0.5 put a threshold of 0.5 or less under it
    for threshold, ceiling in (("0.55", 0.5), ("0.5", 0.475), ("0.3", 0.285)):
        monkeypatch.setenv("RAY_memory_usage_threshold", threshold)
        assert node_memory_ceiling() == pytest.approx(ceiling) and ceiling < float(threshold)
    for bad in ("high", "nan", "0", "1.5", ""):  # no fraction: Ray's default (the coordinator failed to start)
        monkeypatch.setenv("RAY_memory_usage_threshold", bad)
        assert node_memory_ceiling() == pytest.approx(0.85)

    now = {"t": 0.0}
    node = {"fraction": 0.5}
    store = {"fraction": 0.1}
    pressure = NodePressure(node=lambda: node["fraction"], object_store=lambda: store["fraction"],
                            ceiling=0.8, interval=1.0, clock=lambda: now["t"])
    assert not pressure()
    node["fraction"] = 0.9
    assert not pressure()  # cached reading
    now["t"] = 1.5
    assert pressure()
    assert pressure.readings() == {"node": 0.9, "objectStore": 0.1}
    node["fraction"] = 0.5
    store["fraction"] = 0.95  # the object store alone is enough
    now["t"] = 3.0
    assert pressure()
    store["fraction"] = 0.2
    now["t"] = 4.5
    assert not pressure()

    def broken():
        raise RuntimeError("no reading")

    failing = NodePressure(node=lambda: 0.1, object_store=broken, ceiling=0.8)
    assert not failing() and failing.readings()["objectStore"] is None

    # the default reads this machine; the budget reports the readings with its figures
    snapshot = MemoryBudget(1 << 20).snapshot()
    assert 0 < snapshot["nodeFraction"] < 1 and snapshot["ceiling"] == pytest.approx(0.85)


def test_the_object_store_reading_is_taken_off_the_dispatch_path():
    """``actors.coordinator.OffPathReading`` (the coordinator's object-store reading, two GCS
    calls): a call answers at once with the latest reading and has a thread of its own take
    the next, unless the latest is younger than ``min_age`` (Ray's reports lag about a second);
    a reading older than ``max_age`` is taken on the caller's thread; a failed one is None
    (no pressure known)."""
    from actors.coordinator import OffPathReading

    value = {"now": 0.1}
    readers: list[str] = []
    release = threading.Event()

    def read():
        readers.append(threading.current_thread().name)
        if len(readers) == 2:
            release.wait(10)  # the second reading (the thread's) holds until released
        if value["now"] is None:
            raise RuntimeError("no reading")
        return value["now"]

    here = threading.current_thread().name
    reading = OffPathReading(read, max_age=60.0, min_age=60.0)
    assert reading() == 0.1 and readers == [here]  # no reading yet: taken here
    value["now"] = 0.9
    assert reading() == 0.1 and reading() == 0.1
    time.sleep(0.05)
    assert readers == [here]  # the latest is young: nobody was asked for a new one
    reading.min_age = 0.0
    assert reading() == 0.1  # the latest, at once; the thread is asked for a new one
    deadline = time.monotonic() + 10
    while len(readers) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert readers[1] != here
    assert reading() == 0.1  # still the latest while the thread reads
    release.set()
    while reading() != 0.9 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reading() == 0.9
    reading.max_age = 0.0  # every reading now stale: taken on the caller's thread
    value["now"] = 0.3
    taken = len(readers)
    assert reading() == 0.3 and here in readers[taken:]
    value["now"] = None
    assert reading() is None


@pytest.fixture
def local(tmp_path):
    pressure = {"on": False}
    budget = MemoryBudget(8 << 20, 0.8, pressure=lambda: pressure["on"])
    engine = local_client(tmp_path / "store", shards=2, budget=budget)
    engine.create_data_context("M", [{"name": "Rows", "attrs": [{"name": "n", "type": "numeric"}, {"name": "s"}]}])
    yield engine, budget, pressure
    engine.close()


def test_planner_cuts_chunks_at_the_byte_cap(local):
    engine, budget, _ = local
    cap = budget.chunk_bytes()  # 8 MB x 0.8 / 8 = 838,860 bytes
    rows = ({"n": i, "s": "y" * 1000} for i in range(5000))
    planned = list(engine.planner.create_items("M", "Rows", rows, max_bytes=cap).chunks)
    assert sum(pc.count for pc in planned) == 5000
    assert max(pc.nbytes for pc in planned) <= cap
    assert len(planned) >= 5000 * 1000 // cap  # really cut, not one chunk per shard


def test_dispatch_pauses_under_pressure_and_resumes(local):
    engine, budget, pressure = local
    service = CoordinatorService(engine.runtime.executor, budget=budget)
    try:
        txn = service.submit("create_items", RunOptions())["txn"]
        deadline = time.monotonic() + 10
        while service.status(txn)["state"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        pressure["on"] = True
        planned = list(engine.planner.create_items("M", "Rows", [{"n": i, "s": "z"} for i in range(100)]).chunks)
        fed = {}
        feeder = threading.Thread(target=lambda: fed.setdefault("ok", service.feed(txn, planned)))
        feeder.start()
        time.sleep(0.3)
        assert feeder.is_alive()  # held: nothing may be reserved or dispatched
        memory = service.status(txn)["memory"]
        assert memory["paused"] and memory["pausedCount"] >= 1 and memory["inUse"] == 0
        assert engine.count_items("M") == 0 and service.wait(txn, timeout=0) is None
        pressure["on"] = False
        feeder.join(10)
        assert fed["ok"].accepted
        service.close_input(txn, 100)
        result = service.wait(txn, timeout=30)
        assert result["success"] and result["itemsCreated"] == 100
        assert engine.count_items("M") == 100
        assert not service.status(txn)["memory"]["paused"] and budget.in_use == 0
    finally:
        service.close()


# -- on Ray ------------------------------------------------------------------------------------

BUDGET = 64 << 20
ROWS = 320_000
BLOB = "b" * 2000  # about 2 KB a row: 610 MiB in all, almost ten times the budget


@pytest.mark.ray
def test_a_load_ten_times_the_budget_stays_within_it(make_client):
    client = make_client("big", memory_budget=BUDGET, memory_threshold=0.8)
    client.create_data_context("Big", [{"name": "Rows", "attrs": [{"name": "n", "type": "numeric"}, {"name": "blob"}]}])
    before = client.info()
    allowance = before["memory"]["allowance"]
    assert before["memory"]["limit"] == BUDGET and allowance == int(BUDGET * 0.8)

    started = time.perf_counter()
    result = client.create_items("Big", "Rows", ({"n": i, "blob": BLOB} for i in range(ROWS)))
    elapsed = time.perf_counter() - started
    after = client.info()

    assert result.success and result.items_created == ROWS
    assert client.count_items("Big") == ROWS
    assert client.count_items("Big", query="n >= 319999") == 1
    memory = after["memory"]
    streamed = ROWS * len(BLOB)
    print(f"\n{streamed / 2**20:.0f} MiB streamed through a {BUDGET >> 20} MiB budget in {elapsed:.1f} s: "
          f"peak in flight {memory['peak'] / 2**20:.2f} MiB (allowance {allowance / 2**20:.2f} MiB), "
          f"{sum(after['chunkTypes'].values())} chunks")
    # no oversized chunk: the exception of MemoryBudget never applied
    assert 0 < memory["peak"] <= allowance
    assert after["peakInFlight"] == memory["peak"] and memory["inUse"] == 0
    assert streamed >= 9 * BUDGET
    assert after["chunkTypes"]["ObjectRef"] >= streamed // (allowance // 8)  # chunks cut at budget / 8
    # Ray's memory monitor killed nothing: same worker processes, same epochs
    assert [(w["pid"], w["epochs"]) for w in after["workers"]] == [(w["pid"], w["epochs"]) for w in before["workers"]]
    assert memory["nodeFraction"] is not None and memory["objectStoreFraction"] is not None


@pytest.mark.ray
def test_a_driver_that_joins_the_coordinator_keeps_to_its_budget(make_client):
    """A driver that joins a running coordinator shares its settings: it cut chunks by the
    budget it was given itself (512 MiB by default, chunks of up to 8 MiB) and put up to a
    fifth of that in the object store ahead of the coordinator's reservations, so a store served
    with a budget of 4 MiB took chunks far larger than its allowance from it."""
    import batchray

    budget = 4 << 20
    first = make_client("joined", memory_budget=budget, memory_threshold=0.8)
    first.create_data_context("Big", [{"name": "Rows", "attrs": [{"name": "n", "type": "numeric"}, {"name": "blob"}]}])
    joined = batchray.connect(first.layout.root, progress=False)  # the default budget, ignored
    try:
        assert joined.memory_allowance == first.memory_allowance == int(budget * 0.8)
        rows = 6_000  # about 12 MiB, three times the budget
        result = joined.create_items("Big", "Rows", ({"n": i, "blob": BLOB} for i in range(rows)))
        assert result.success and result.items_created == rows
        memory = joined.info()["memory"]
        assert memory["limit"] == budget and 0 < memory["peak"] <= memory["allowance"], memory
    finally:
        joined.close()
