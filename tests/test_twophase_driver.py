"""The two-phase-commit driver's ``parallelism`` and its policies, over a threaded transport.

:class:`ThreadedTransport` runs each step on a thread pool (a handle is a future that completes
later), and its participants count the applies running at once: with ``parallelism=k`` never
more than ``k``, without it more, and the outcome and the data are the same either way.
"""
from __future__ import annotations

import random
import threading
import time
from concurrent import futures

import pytest

from batchray.core.txn import twophase
from batchray.core.txn.chunks import BeforeImages, CreateItems, PlannedChunk
from batchray.core.txn.participant import Step
from batchray.core.txn.policies import RetryPolicy, StopPolicy
from batchray.core.txn.twophase import LocalTransport, TwoPhaseCommit
from batchray.errors import BatchTimeout, CancelledError, ParticipantUnavailable, ValidationError

APPLY_SECONDS = 0.05  # long enough that applies sent together overlap on a loaded machine


class Gauge:
    """Counts the applies running now, and the most that ever ran at once."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.total = 0
        self._lock = threading.Lock()

    def __enter__(self) -> "Gauge":
        with self._lock:
            self.now += 1
            self.total += 1
            self.most = max(self.most, self.now)
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self.now -= 1


class SlowParticipant:
    """An in-memory participant whose applies take ``APPLY_SECONDS`` each, under ``gauge``."""

    def __init__(self, name: str, gauge: Gauge) -> None:
        self.name = name
        self.gauge = gauge
        self.rows: dict[int, str] = {}
        self.pending: dict[str, dict[int, str]] = {}
        self._lock = threading.Lock()

    def apply(self, ref, chunk, prepare=False):
        with self.gauge:
            time.sleep(APPLY_SECONDS)
        with self._lock:
            self.pending.setdefault(ref.txn, {}).update(zip(chunk.ids, chunk.rows))
        return BeforeImages(chunk.chunk_id, affected=len(chunk.ids), vote=True if prepare else None)

    def prepare(self, ref) -> bool:
        return True

    def commit(self, ref) -> None:
        with self._lock:
            self.rows.update(self.pending.pop(ref.txn, {}))

    def abort(self, ref) -> None:
        with self._lock:
            self.pending.pop(ref.txn, None)


class ThreadedTransport:
    """Each step runs on a pool thread; a handle is its future (ready later, not at once)."""

    merges_prepare = True

    def __init__(self, participants: dict[str, SlowParticipant], threads: int = 8) -> None:
        self.local = LocalTransport(participants)
        self.pool = futures.ThreadPoolExecutor(threads)
        self.steps: list[tuple[str, Step]] = []
        self.lost: set[int] = set()  # chunk ids whose first delivery fails (retryable)

    def submit(self, participant, step, ref, chunk=None):
        self.steps.append((participant, step))
        if chunk is not None and chunk.chunk_id in self.lost:
            self.lost.discard(chunk.chunk_id)
            return self.pool.submit(twophase._Ready, False, ParticipantUnavailable("lost"))
        return self.pool.submit(self.local.submit, participant, step, ref, chunk)

    def wait(self, handles, timeout=None):
        done, pending = futures.wait(handles, timeout=timeout, return_when=futures.FIRST_COMPLETED)
        return list(done), list(pending)

    def result(self, handle):
        return self.local.result(handle.result())


class MemoryLog:
    """The decision log, in memory."""

    def __init__(self) -> None:
        self.decisions: dict[str, dict[str, str]] = {}
        self.done: set[str] = set()

    def decide(self, txn, outcomes):
        return self.decisions.setdefault(txn, dict(outcomes))

    def decision(self, txn):
        return self.decisions.get(txn)

    def mark_done(self, txn):
        self.done.add(txn)


PARTICIPANTS = ("s0", "s1", "s2", "s3")


def _plan(chunks: int = 12, per_chunk: int = 3) -> list[PlannedChunk]:
    planned = []
    for k in range(chunks):
        ids = list(range(k * per_chunk, (k + 1) * per_chunk))
        rows = [f'{{"v": {i}}}' for i in ids]
        planned.append(PlannedChunk(PARTICIPANTS[k % len(PARTICIPANTS)], CreateItems(k + 1, ids, rows), 64, per_chunk))
    return planned


def _world():
    gauge = Gauge()
    participants = {name: SlowParticipant(name, gauge) for name in PARTICIPANTS}
    transport = ThreadedTransport(participants)
    driver = TwoPhaseCommit(MemoryLog(), transport, rng=random.Random(7), sleep=lambda s: None)
    return driver, transport, participants, gauge


def _run(parallelism, **kwargs):
    driver, transport, participants, gauge = _world()
    try:
        outcome = driver.run("t1", 1, _plan(), parallelism=parallelism, **kwargs)
    finally:
        transport.pool.shutdown(wait=True)
    return outcome, transport, participants, gauge


@pytest.mark.parametrize("parallelism", [1, 2, 3])
def test_parallelism_bounds_the_applies_running_at_once(parallelism):
    outcome, _, _, gauge = _run(parallelism)
    assert outcome.committed, outcome.cause
    assert gauge.total == 12
    assert gauge.most <= parallelism
    assert gauge.most == parallelism  # the limit is used, not just respected


def test_without_parallelism_more_applies_run_at_once():
    outcome, _, _, gauge = _run(None)
    assert outcome.committed, outcome.cause
    assert gauge.most > 3


def test_parallelism_changes_no_result():
    results = []
    for parallelism in (None, 1, 2, 5):
        outcome, _, participants, _ = _run(parallelism)
        data = {name: dict(p.rows) for name, p in participants.items()}
        results.append((outcome.committed, outcome.affected, outcome.chunks, outcome.outcomes, outcome.errors,
                        outcome.in_doubt, data))
    assert all(result == results[0] for result in results[1:])
    assert results[0][:3] == (True, 36, 12)
    assert sum(len(rows) for rows in results[0][-1].values()) == 36


def test_each_participant_votes_with_its_last_chunk_under_parallelism():
    outcome, transport, _, _ = _run(2)
    assert outcome.committed, outcome.cause
    merged = sorted(p for p, step in transport.steps if step == Step.APPLY_PREPARE)
    assert merged == sorted(PARTICIPANTS)  # no separate prepare was needed
    assert not any(step == Step.PREPARE for _, step in transport.steps)
    assert all(isinstance(step, Step) for _, step in transport.steps)


def test_retries_stay_within_parallelism():
    driver, transport, participants, gauge = _world()
    transport.lost = {1, 2, 5, 9}
    try:
        outcome = driver.run("t1", 1, _plan(), parallelism=2)
    finally:
        transport.pool.shutdown(wait=True)
    assert outcome.committed, outcome.cause
    assert gauge.most <= 2 and gauge.total == 12
    assert sum(len(p.rows) for p in participants.values()) == 36


def test_a_stop_while_waiting_for_a_place_in_flight_rolls_back():
    driver, transport, participants, gauge = _world()
    cancelled = CancelledError("cancelled by the caller")

    def should_stop():
        return cancelled if gauge.total >= 2 else None

    try:
        outcome = driver.run("t1", 1, _plan(), parallelism=1, should_stop=should_stop)
    finally:
        transport.pool.shutdown(wait=True)
    assert not outcome.committed
    assert outcome.cause is cancelled
    assert gauge.total < 12 and gauge.most == 1
    assert not any(p.rows or p.pending for p in participants.values())


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_parallelism_is_validated_before_anything_is_sent(bad):
    driver, transport, _, _ = _world()
    try:
        with pytest.raises(ValidationError) as raised:
            driver.run("t1", 1, _plan(), parallelism=bad)
    finally:
        transport.pool.shutdown(wait=True)
    assert raised.value.details["field"] == "parallelism"
    assert transport.steps == [] and driver.log.decisions == {}


# -- the policies ---------------------------------------------------------------------------

def test_retry_policy_retries_retryable_errors_until_attempts_run_out_or_a_stop():
    policy = RetryPolicy(max_retries=2, rng=random.Random(1))
    lost = ParticipantUnavailable("lost")
    assert policy.retries(lost, 1, None) and policy.retries(lost, 2, None)
    assert not policy.retries(lost, 3, None)
    assert not policy.retries(ValidationError("bad"), 1, None)
    assert not policy.retries(lost, 1, CancelledError("stop"))
    assert not policy.retries(lost, 1, BatchTimeout("late"))
    assert all(0 <= policy.pause(attempt) <= min(2.0, 0.02 * 2 ** (attempt - 1)) for attempt in range(1, 12))


def test_stop_policy_interrupts_only_a_stop_that_rolls_back_without_grace():
    atomic, partial = StopPolicy(lambda: None, True), StopPolicy(lambda: None, False)
    abrupt = CancelledError("now", graceful=False)
    keep = CancelledError("now, keep", graceful=False, rollback=False)
    assert atomic.interrupts(abrupt) and partial.interrupts(abrupt)
    assert atomic.interrupts(keep) and not partial.interrupts(keep)
    assert not atomic.interrupts(CancelledError("when done"))
    assert atomic.interrupts(BatchTimeout("late")) and not partial.interrupts(BatchTimeout("late"))
    assert not atomic.interrupts(None)
    assert StopPolicy.forces_rollback(CancelledError("c")) and not StopPolicy.forces_rollback(keep)


def test_the_driver_reports_each_phase_once_per_run(tmp_path):
    """``on_phase`` hears apply, vote, decide and finish once each per batch, in order; a batch
    that commits in one phase (a new context: one chunk at the catalog) only apply."""
    from local_runtime import local_client

    with local_client(tmp_path / "store", shards=2) as client:
        heard = []
        client.runtime.driver.on_phase = lambda phase, seconds: heard.append((phase, seconds >= 0))
        assert client.create_data_context("P", [{"name": "P", "attrs": [{"name": "a"}]}]).success
        assert client.create_items("P", "P", [{"a": str(i)} for i in range(50)], batch_size=10).success
    assert heard == [("apply", True)] + [(phase, True) for phase in ("apply", "vote", "decide", "finish")]


def test_a_stopped_driver_leaves_phase_2_to_recovery_at_once():
    """A participant that never acknowledges its commit keeps phase 2 retrying until
    ``phase2_deadline`` (with the commit gate held, in a settler); once whoever runs the driver
    stops it (closing the client), the retrying ends after the round in flight and the
    participant is named as still in doubt, for recovery: the next client of the store no
    longer waits out the deadline at the gate."""
    gauge = Gauge()
    participants = {name: SlowParticipant(name, gauge) for name in ("s0", "s1")}

    def unreachable(ref):
        raise ParticipantUnavailable("the server went away")

    participants["s1"].commit = unreachable
    transport = ThreadedTransport(participants)
    driver = TwoPhaseCommit(MemoryLog(), transport, rng=random.Random(7), phase2_deadline=60.0)
    answer: list = []
    started = time.monotonic()
    worker = threading.Thread(target=lambda: answer.append(driver.finish("t1", 1, {"s0": "commit", "s1": "commit"})))
    worker.start()
    time.sleep(0.3)  # a few rounds of retries
    assert worker.is_alive(), "phase 2 gave up before its deadline or the stop"
    driver.stop()
    worker.join(5)
    transport.pool.shutdown(wait=True)
    assert not worker.is_alive() and answer == [["s1"]], answer
    assert time.monotonic() - started < 10  # not the 60 s deadline
