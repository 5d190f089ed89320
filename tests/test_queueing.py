"""Admission order: which waiting batch starts when a slot frees (no Ray; fast).

What these tests show:

* :class:`AdmissionQueue` with an explicit clock: the highest priority starts first whatever
  its queue; within a priority, queues take turns (the one longest without a start first), so
  a flood in one queue does not hold up another's batches, first come first served within a
  queue; aging lifts a batch that has waited to the level of higher priorities, where it
  competes as their equal; a batch that has waited ``max_wait`` goes before every later one,
  across priority's whole range; positions in the queue are reported (0 = next to start) and
  follow the same rules; removed batches are gone; the ``max_running`` slots are never exceeded.
* The coordinator service with ``max_running=1``, over in-process SQLite participants: the
  order in which batches *actually start* (recorded by the progress hook) is the order the
  rules say, ``status()`` reports each waiting batch's position, and every batch completes.
"""
from __future__ import annotations

import threading
import time

import pytest

from batchray.core.model.batch import RunOptions
from polling import until
from service_harness import SilentProgress, in_process_services
from batchray.core.run.queueing import AdmissionQueue

# -- the queue, with an explicit clock --------------------------------------------------------


def _fill(queue: AdmissionQueue, now: float = 0.0) -> None:
    """Occupy every slot, so that pushed batches wait."""
    for k in range(queue.max_running):
        queue.push(f"running-{k}", now=now)
    assert len(queue.pop_ready(now)) == queue.max_running


def _start_order(queue: AdmissionQueue, now: float) -> list[str]:
    """Free the slots one at a time and record what starts."""
    order = []
    while queue.waiting():
        running = sorted(queue.running)
        queue.done(running[0])
        started = queue.pop_ready(now)
        assert len(started) == 1
        order += started
    return order


def test_priority_first_then_queues_take_turns():
    queue = AdmissionQueue(max_running=1, aging_per_second=0.0)
    _fill(queue)
    queue.push("etl-low-1", priority=0, queue="etl", now=1.0)
    queue.push("ui-high-1", priority=5, queue="ui", now=2.0)
    queue.push("ui-low-1", priority=0, queue="ui", now=3.0)
    queue.push("etl-high-1", priority=5, queue="etl", now=4.0)
    queue.push("default-mid", priority=2, now=5.0)
    queue.push("etl-low-2", priority=0, queue="etl", now=6.0)
    assert queue.pop_ready(10.0) == []  # the slot is taken: nothing starts
    # ui and etl each started a batch at priority 5, ui first: ui's turn comes first at 0
    expected = ["ui-high-1", "etl-high-1", "default-mid", "ui-low-1", "etl-low-1", "etl-low-2"]
    assert [queue.position(t, 10.0) for t in expected] == list(range(len(expected)))
    assert _start_order(queue, 10.0) == expected


def test_same_time_same_priority_keeps_submission_order():
    queue = AdmissionQueue(max_running=1, aging_per_second=0.5)
    _fill(queue)
    for name in ["c", "a", "b"]:
        queue.push(name, queue=name, now=1.0)
    assert _start_order(queue, 2.0) == ["c", "a", "b"]


def test_aging_lets_an_old_low_priority_batch_overtake():
    queue = AdmissionQueue(max_running=1, aging_per_second=1.0)
    _fill(queue)
    queue.push("old-low", priority=0, queue="etl", now=0.0)
    queue.push("new-high", priority=5, queue="ui", now=3.0)
    # at t=4: old-low is worth 0 + 4 s x 1/s = 4, below 5: the high one first
    assert queue.position("new-high", 4.0) == 0 and queue.position("old-low", 4.0) == 1
    # at t=5 it has reached priority 5 and competes as an equal: its queue's batch came first
    assert queue.position("old-low", 5.0) == 0
    # ...never ahead of a level it has not reached (worth 10 at t=10, not 20)
    queue.push("late-high", priority=5, queue="ui", now=9.0)
    queue.push("top", priority=20, queue="ui", now=9.0)
    expected = ["top", "old-low", "new-high", "late-high"]
    assert [queue.position(t, 10.0) for t in expected] == [0, 1, 2, 3]
    assert _start_order(queue, 10.0) == expected


def test_without_aging_a_low_priority_batch_waits_for_every_higher_one():
    queue = AdmissionQueue(max_running=1, aging_per_second=0.0, max_wait=None)
    _fill(queue)
    queue.push("old-low", priority=0, now=0.0)
    queue.push("new-high", priority=1, now=1000.0)
    assert _start_order(queue, 2000.0) == ["new-high", "old-low"]


def test_a_flood_in_one_queue_does_not_hold_up_another():
    queue = AdmissionQueue(max_running=1)  # aging 0.1 per second
    _fill(queue)
    for k in range(4):
        queue.push(f"bulk-{k}", queue="bulk", now=1.0 + k)
    queue.push("ui-0", queue="ui", now=10.0)
    # one batch per queue's turn: ui's comes second, not after the whole flood
    expected = ["bulk-0", "ui-0", "bulk-1", "bulk-2", "bulk-3"]
    assert [queue.position(t, 11.0) for t in expected] == [0, 1, 2, 3, 4]
    for first in ("bulk-0", "ui-0"):
        queue.done(next(iter(queue.running)))
        assert queue.pop_ready(11.0) == [first]
    queue.push("ui-1", queue="ui", now=12.0)
    queue.push("ui-2", queue="ui", now=12.0)
    # bulk has gone longer without a start: the two queues alternate, bulk first
    assert _start_order(queue, 12.0) == ["bulk-1", "ui-1", "bulk-2", "ui-2", "bulk-3"]


def test_a_queue_that_started_last_waits_for_the_others_turn():
    """A queue that submits its next batch as soon as one starts does not take every slot."""
    queue = AdmissionQueue(max_running=1, aging_per_second=0.0)
    _fill(queue)
    for k in range(3):
        queue.push(f"bulk-{k}", queue="bulk", now=1.0)
    started = []
    for k in range(3):
        queue.push(f"ui-{k}", queue="ui", now=2.0 + k)  # one waiting at a time
        queue.done(next(iter(queue.running)))
        started += queue.pop_ready(2.0 + k)
        queue.done(next(iter(queue.running)))
        started += queue.pop_ready(2.0 + k)
    assert started == ["bulk-0", "ui-0", "bulk-1", "ui-1", "bulk-2", "ui-2"]


def test_a_batch_that_waited_max_wait_goes_before_every_later_one_across_the_whole_range():
    queue = AdmissionQueue(max_running=1, aging_per_second=0.1, max_wait=600.0)
    _fill(queue)
    queue.push("lowest", priority=-1_000_000, queue="bulk", now=0.0)
    now, started, k = 0.0, [], 0
    while "lowest" not in started:  # a slot frees every second; two top-priority batches come
        queue.push(f"top-{k}", priority=1_000_000, queue="ui", now=now)
        queue.push(f"top-{k + 1}", priority=1_000_000, queue="ui", now=now + 0.5)
        k += 2
        now += 1.0
        queue.done(next(iter(queue.running)))
        started += queue.pop_ready(now)
        assert now < 700, "the lowest priority was starved"
    assert 600.0 <= now <= 601.0
    # overdue batches go oldest first, before the others
    queue.push("old-a", priority=-5, now=now - 700)
    queue.push("old-b", priority=-9, now=now - 800)
    assert queue.position("old-b", now) == 0 and queue.position("old-a", now) == 1


def test_positions_removal_and_slots():
    queue = AdmissionQueue(max_running=2, aging_per_second=0.0)
    queue.push("a", now=0.0)
    queue.push("b", priority=1, now=1.0)
    queue.push("c", now=2.0)
    assert queue.position("b", 3.0) == 0 and queue.position("a", 3.0) == 1 and queue.position("c", 3.0) == 2
    assert queue.pop_ready(3.0) == ["b", "a"]  # two slots
    assert queue.position("a", 3.0) is None  # running, not waiting
    assert queue.position("c", 3.0) == 0
    assert queue.pop_ready(4.0) == []  # both slots taken
    assert queue.remove("c") and not queue.remove("c")
    assert queue.waiting() == 0 and queue.position("c", 5.0) is None
    queue.done("a")
    queue.push("d", now=6.0)
    assert queue.pop_ready(6.0) == ["d"] and queue.running == {"b", "d"}
    with pytest.raises(ValueError):
        AdmissionQueue(max_running=0)


# -- the service: batches really start in that order ------------------------------------------


class _Recorder(SilentProgress):
    """The progress hook of the service: records the order in which batches start."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.lock = threading.Lock()

    def start(self, txn, total, kind):
        with self.lock:
            self.started.append(txn)


@pytest.fixture
def local(tmp_path):
    """``(engine, make_service)`` over in-process participants; no Ray."""
    with in_process_services(tmp_path, "Q", _Recorder) as pair:
        yield pair


def _planned(engine, n: int):
    return list(engine.planner.create_items("Q", "Rows", [{"n": n}]).chunks)


def test_service_starts_batches_in_the_order_the_rules_say(local):
    engine, make_service = local
    service, recorder = make_service(max_running=1, aging_per_second=0.0)
    # a streaming batch holds the only slot until its input is closed
    blocker = service.submit("create_items", RunOptions(queue="etl"))["txn"]
    until(lambda: recorder.started == [blocker])
    waiting = {}
    for n, (name, priority, queue) in enumerate([
        ("etl-low", 0, "etl"), ("ui-high", 5, "ui"), ("ui-low", 0, "ui"), ("etl-high", 5, "etl"), ("mid", 2, "default"),
    ]):
        waiting[name] = service.submit("create_items", RunOptions(priority=priority, queue=queue),
                                       _planned(engine, n), 1)["txn"]
    expected = ["ui-high", "etl-high", "mid", "ui-low", "etl-low"]  # ui's turn came first
    statuses = {name: service.status(txn) for name, txn in waiting.items()}
    assert [statuses[name]["queuePosition"] for name in expected] == [0, 1, 2, 3, 4]
    assert all(s["state"] == "queued" for s in statuses.values())
    assert service.status(blocker)["queuePosition"] is None  # running
    time.sleep(0.2)
    assert recorder.started == [blocker]  # nothing else started while the slot was taken

    assert service.feed(blocker, _planned(engine, 100))
    service.close_input(blocker, 1)
    for txn in [blocker, *waiting.values()]:
        result = service.wait(txn, timeout=30)
        assert result is not None and result["success"], result
    assert recorder.started == [blocker] + [waiting[name] for name in expected]
    assert engine.count_items("Q") == 6
    assert all(service.status(t)["queuePosition"] is None for t in waiting.values())


def test_service_aging_starts_a_batch_that_waited(local):
    engine, make_service = local
    service, recorder = make_service(max_running=1, aging_per_second=100.0)
    blocker = service.submit("create_items", RunOptions())["txn"]
    until(lambda: recorder.started == [blocker])
    old_low = service.submit("create_items", RunOptions(priority=0), _planned(engine, 1), 1)["txn"]
    time.sleep(0.2)  # worth 0 + 100/s x 0.2 s = 20 by now
    new_high = service.submit("create_items", RunOptions(priority=10), _planned(engine, 2), 1)["txn"]
    assert service.status(old_low)["queuePosition"] == 0
    assert service.status(new_high)["queuePosition"] == 1
    service.close_input(blocker, 0)
    for txn in (blocker, old_low, new_high):
        assert service.wait(txn, timeout=30)["success"]
    assert recorder.started == [blocker, old_low, new_high]


def test_a_keyed_chunk_fed_again_is_applied_once_and_keep_alives_hold_off_the_stall(local):
    """A producer that may send a chunk twice (a Ray Data write task run again) keys it: the
    second one is dropped before the feeder's ``adopt`` sees it. Keep-alives count as input for
    the stall timeout, and without them the batch rolls back."""
    engine, make_service = local
    service, _ = make_service(stall_timeout=0.6)
    txn = service.submit("create_items", RunOptions())["txn"]
    first = _planned(engine, 1)
    again = _planned(engine, 1)  # the same rows cut again: another id, the same key
    for pc in (*first, *again):
        pc.key = "task-0/chunk-0"
    adopted: list = []

    def adopt(chunk):  # the Ray coordinator keeps its own copy of a chunk handed over
        adopted.append((chunk, service.budget.in_use))
        return chunk

    assert service.feed(txn, first, adopt) and service.feed(txn, again, adopt)
    # adopted once, the copy sent again dropped first; its bytes reserved by then
    assert [chunk for chunk, _ in adopted] == [first[0].chunk] and adopted[0][1] >= first[0].nbytes
    # a chunk that could not be adopted is not taken: its bytes are free, and sent again it is
    end = time.monotonic() + 10
    while service.budget.in_use and time.monotonic() < end:  # the first chunk applied, its bytes free
        time.sleep(0.01)
    assert service.budget.in_use == 0
    failing = _planned(engine, 1)
    failing[0].key = "task-1/chunk-0"

    def refuse(chunk):
        raise MemoryError("the object store is full")

    with pytest.raises(MemoryError):
        service.feed(txn, failing, refuse)
    assert service.budget.in_use == 0
    assert service.feed(txn, failing, adopt) and len(adopted) == 2
    for _ in range(8):  # 1.6 s of keep-alives and no input: longer than the stall timeout
        assert service.keep_alive(txn)
        time.sleep(0.2)
    service.close_input(txn, 2)
    result = service.wait(txn, timeout=30)
    assert result["success"] and result["itemsCreated"] == 2, result
    assert engine.count_items("Q") == 2

    stalled = service.submit("create_items", RunOptions())["txn"]
    assert service.feed(stalled, _planned(engine, 2))
    result = service.wait(stalled, timeout=30)  # no keep-alive: rolled back after 0.6 s
    assert not result["success"] and result["error"]["code"] == "TIMEOUT", result
    assert service.keep_alive(stalled) is False
    assert engine.count_items("Q") == 2


def test_a_stalled_stream_s_timeout_names_the_batch_and_the_stall_timeout(local):
    """A streamed batch rolled back for want of input fails with a TIMEOUT whose details say
    which batch and which timeout (the stall timeout, in seconds): they were empty, and the
    message rounded 0.6 s to "1 s"."""
    engine, make_service = local
    service, _ = make_service(stall_timeout=0.6)
    txn = service.submit("create_items", RunOptions())["txn"]
    assert service.feed(txn, _planned(engine, 1))
    result = service.wait(txn, timeout=30)
    assert result["state"] == "rolled_back" and result["error"]["code"] == "TIMEOUT", result
    assert result["error"]["details"] == {"batchId": txn, "stallTimeout": 0.6}, result["error"]
    assert "0.6 s" in result["error"]["message"]
    assert engine.count_items("Q") == 0
