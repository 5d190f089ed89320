"""How the Ray transport groups applies into ``apply_many`` calls (``actors.transport``), with a
recording stand-in for the worker actor (no Ray needed: the calls are recorded, their answers
handed in by the test).

What these tests show:

* an apply queued for a worker whose unanswered calls of its transaction hold fewer than
  ``busy_applies`` applies goes after ``hold`` seconds, as before;
* once they hold that many, the applies queued behind them are held (up to ``busy_hold``)
  and go together as one call, as soon as an earlier call is seen answered;
* a vote still flushes every queued apply at once (it must not overtake them), and
  ``release`` forgets a finished transaction's calls.
"""
from __future__ import annotations

import pickle
import threading
import time
from typing import Any

from actors.transport import RayTransport
from batchray.core.txn.chunks import TxnRef


class _Method:
    def __init__(self, record: Any) -> None:
        self._record = record

    def remote(self, *args: Any) -> Any:
        return self._record(*args)


class RecordingWorker:
    """Records each ``apply_many`` call (its entries' chunks) and each other step sent."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []
        self.steps: list[str] = []
        self._lock = threading.Lock()
        self.apply_many = _Method(self._apply_many)
        self.prepare = _Method(lambda participant, ref: self.steps.append("prepare") or ("prepare", participant))

    def _apply_many(self, entries: list[tuple] | bytes) -> tuple[Any, Any]:
        if isinstance(entries, bytes):  # applies of inline chunks come pickled (actors.transport.plain_pickled)
            entries = pickle.loads(entries)
        with self._lock:
            self.calls.append([entry[2] for entry in entries])
            number = len(self.calls)
        return f"summaries-{number}", f"images-{number}"


def _until(condition, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def _transport(worker: RecordingWorker, **options: Any) -> RayTransport:
    transport = RayTransport(lambda name: worker, **options)
    # the calls' answers, as the worker would send them: one summary per apply
    transport._get = lambda ref, timeout=None: [f"{ref}:{i}" for i in range(16)]
    return transport


def test_applies_behind_busy_calls_go_together_once_one_answers():
    worker = RecordingWorker()
    transport = _transport(worker, hold=0.01, busy_hold=30.0, busy_applies=2)
    ref = TxnRef("create-busy", 1)
    try:
        first = transport.submit("shard-0000", "apply", ref, "c1")
        assert _until(lambda: worker.calls == [["c1"]])  # no apply unanswered: sent after `hold`
        transport.submit("shard-0000", "apply", ref, "c2")
        assert _until(lambda: worker.calls == [["c1"], ["c2"]])  # one apply unanswered: still `hold`
        transport.submit("shard-0000", "apply", ref, "c3")
        transport.submit("shard-0000", "apply", ref, "c4")
        time.sleep(0.3)  # thirty times `hold`: two applies unanswered, the worker has work queued
        assert worker.calls == [["c1"], ["c2"]]
        assert transport.result(first) == "summaries-1:0"  # the first call answers ...
        assert _until(lambda: worker.calls == [["c1"], ["c2"], ["c3", "c4"]])  # ... and both go, as one call
    finally:
        transport.close()


def test_a_vote_flushes_held_applies_and_release_forgets_the_calls():
    worker = RecordingWorker()
    transport = _transport(worker, hold=0.01, busy_hold=30.0, busy_applies=1)
    ref = TxnRef("create-vote", 1)
    try:
        transport.submit("shard-0000", "apply", ref, "c1")
        assert _until(lambda: worker.calls == [["c1"]])
        transport.submit("shard-0000", "apply", ref, "c2")  # held: one apply unanswered, busy_applies 1
        time.sleep(0.1)
        assert worker.calls == [["c1"]]
        transport.submit("shard-0000", "prepare", ref)
        assert worker.calls == [["c1"], ["c2"]] and worker.steps == ["prepare"]  # the apply went first
        transport.release(ref.txn)
        transport.submit("shard-0000", "apply", ref, "c3")  # nothing unanswered any more: `hold`
        assert _until(lambda: worker.calls == [["c1"], ["c2"], ["c3"]], timeout=2.0)
    finally:
        transport.close()


def test_a_transactions_calls_to_a_worker_double_in_size_up_to_the_group():
    """A worker applies a transaction's calls one after another (in the order sent), and its
    progress is seen as each ends: twenty applies queued at once go as calls of 1, 2, 4 and 8
    applies, and the last five on the flush; another transaction starts again at one, and a
    released one too."""
    worker = RecordingWorker()
    transport = _transport(worker, hold=30.0, busy_hold=30.0, group=8)
    ref, other = TxnRef("create-many", 1), TxnRef("create-other", 2)
    try:
        for i in range(20):
            transport.submit("shard-0000", "apply", ref, f"c{i}")
        transport.submit("shard-0000", "apply", other, "o0")
        assert [len(call) for call in worker.calls] == [1, 2, 4, 8, 1]  # the group (8) caps them
        transport.flush()
        assert [len(call) for call in worker.calls] == [1, 2, 4, 8, 1, 5]
        assert [c for call in worker.calls for c in call if c.startswith("c")] == [f"c{i}" for i in range(20)]
        transport.release(ref.txn)
        transport.submit("shard-0000", "apply", ref, "again")
        assert worker.calls[-1] == ["again"]
    finally:
        transport.close()


def test_each_apply_is_numbered_in_its_transactions_order_on_its_participant():
    """The numbers the worker applies them by (batchray.core.txn.apply_order): 0, 1, 2, ... for
    each participant and transaction, in the order submitted; a released transaction's start
    again."""
    worker = RecordingWorker()
    numbers: list[tuple[str, str, int]] = []
    real = worker._apply_many

    def apply_many(entries: list[tuple] | bytes) -> tuple[Any, Any]:
        if isinstance(entries, bytes):
            entries = pickle.loads(entries)
        numbers.extend((e[0], e[1].txn, e[6]) for e in entries)
        return real(entries)

    worker.apply_many = _Method(apply_many)
    transport = _transport(worker, hold=30.0, busy_hold=30.0)
    a, b = TxnRef("create-a", 1), TxnRef("create-b", 2)
    try:
        for participant, ref in (("s0", a), ("s1", a), ("s0", a), ("s0", b), ("s1", a), ("s0", a)):
            transport.submit(participant, "apply", ref, "chunk")
        transport.flush()
        assert sorted(numbers, key=lambda n: (n[1], n[0], n[2])) == [
            ("s0", "create-a", 0), ("s0", "create-a", 1), ("s0", "create-a", 2),
            ("s1", "create-a", 0), ("s1", "create-a", 1), ("s0", "create-b", 0)]
        transport.release(a.txn)
        numbers.clear()
        transport.submit("s0", "apply", a, "chunk")
        transport.flush()
        assert numbers == [("s0", "create-a", 0)]
    finally:
        transport.close()
