"""The coordinator service in-process (no Ray): what a cancellation's reply promises happens,
feeds of a queued batch hold no thread, ended batches are dropped, and a decided batch's result
stands.

What these tests show, over in-process SQLite participants:

* **Cancel during the vote.** A cancellation (with rollback) or the timeout of an atomic batch
  that comes after the last apply but before the decision rolls the batch back, as the
  cancellation's reply said; one that comes after the decision was taken is answered so (the
  batch commits, the reply says it does and promises no rollback).
* **Cancel of a re-run.** A non-atomic batch re-running the chunks that lost a lock race keeps
  what its first attempt committed when cancelled, and the reply says so.
* **Feeds of a queued batch.** They answer at once (``queued``), taking nothing;
  :func:`when_started` gets a driver's chunks in once the batch runs.
* **Ended batches.** They hold no input, only the most recent stay in memory, and an evicted
  one is answered from the decision log (``wait``, ``status``, ``cancel``, ``feed``, an
  idempotent resubmission).
* **A failure after the decision.** A phase 2 whose record fails, or a commit point whose
  record fails, leaves the committed result (the failure reported with it), not ``failed``.
"""
from __future__ import annotations

import threading
import time

import pytest

from batchray.core.model.batch import RunOptions
from batchray.core.run.service import when_started
from batchray.core.txn.dispatch import ApplyPhase
from batchray.core.txn.twophase import TwoPhaseCommit
from batchray.errors import StoreError
from polling import held, until
from service_harness import in_process_services


@pytest.fixture
def local(tmp_path):
    """``(engine, make_service)`` over in-process participants; no Ray."""
    with in_process_services(tmp_path, "S") as (engine, make):
        yield engine, lambda **options: make(**options)[0]


def _planned(engine, n: int, batch_size: int = 10):
    """``n`` rows in chunks of ``batch_size`` over both shards (more than one chunk: two-phase)."""
    return list(engine.planner.create_items("S", "Rows", [{"n": i} for i in range(n)], batch_size=batch_size).chunks)


class _Held:
    """Patches ``TwoPhaseCommit.<method>`` to stop in it (before or after the original) until
    released: ``reached`` is set when a batch got there."""

    def __init__(self, monkeypatch, method: str, after: bool = False) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()
        original = getattr(TwoPhaseCommit, method)

        def holding(driver, *args):
            value = original(driver, *args) if after else None
            self.reached.set()
            assert self.release.wait(20)
            return value if after else original(driver, *args)

        monkeypatch.setattr(TwoPhaseCommit, method, holding)


@pytest.mark.parametrize("atomic", [True, False])
def test_a_cancel_that_comes_during_the_vote_rolls_the_batch_back(local, monkeypatch, atomic):
    engine, make_service = local
    service = make_service()
    vote = _Held(monkeypatch, "_vote")
    txn = service.submit("create_items", RunOptions(atomic=atomic), _planned(engine, 40), 40)["txn"]
    assert vote.reached.wait(20)  # every chunk applied; the votes are being taken
    reply = service.cancel(txn)
    assert reply["success"] and reply["rollback"] and "rolled back" in reply["message"], reply
    vote.release.set()
    result = service.wait(txn, 30)
    assert not result["success"] and result["state"] == "cancelled" and result["itemsCreated"] == 0, result
    assert engine.count_items("S") == 0


def test_a_cancel_that_keeps_or_a_timeout_during_the_vote(local, monkeypatch):
    """Non-atomic, ``rollback=False``: what was applied is kept, the batch reports cancelled.
    The timeout of an atomic batch that passes during the vote rolls it back."""
    engine, make_service = local
    service = make_service()
    vote = _Held(monkeypatch, "_vote")
    txn = service.submit("create_items", RunOptions(atomic=False), _planned(engine, 40), 40)["txn"]
    assert vote.reached.wait(20)
    reply = service.cancel(txn, rollback=False)
    assert reply["success"] and not reply["rollback"] and "kept" in reply["message"], reply
    vote.release.set()
    result = service.wait(txn, 30)
    assert result["state"] == "cancelled" and result["itemsCreated"] == 40, result
    assert engine.count_items("S") == 40

    vote.reached.clear()
    vote.release.clear()
    txn = service.submit("create_items", RunOptions(timeout=2000), _planned(engine, 40), 40)["txn"]
    assert vote.reached.wait(20)
    time.sleep(2.1)  # past its timeout while it waits for the votes
    vote.release.set()
    result = service.wait(txn, 30)
    assert result["state"] == "rolled_back" and result["error"]["code"] == "TIMEOUT", result
    assert engine.count_items("S") == 40


def test_a_cancel_after_the_decision_says_the_batch_commits(local, monkeypatch):
    engine, make_service = local
    service = make_service()
    logged = _Held(monkeypatch, "_log_decision", after=True)  # the decision is in the log
    txn = service.submit("create_items", RunOptions(), _planned(engine, 40), 40)["txn"]
    assert logged.reached.wait(20)
    reply = service.cancel(txn)
    assert not reply["success"] and reply["state"] == "committing" and not reply["rollback"], reply
    assert "commits" in reply["message"] and "rolled back" not in reply["message"]
    logged.release.set()
    result = service.wait(txn, 30)
    assert result["success"] and result["state"] == "completed" and result["itemsCreated"] == 40, result
    assert engine.count_items("S") == 40


def _one_phase(engine):
    """Five rows: one chunk at one participant, which commits in one phase (apply+commit)."""
    planned = list(engine.planner.create_items("S", "Rows", [{"n": i} for i in range(5)], batch_size=10).chunks)
    assert len(planned) == 1
    return planned


def test_a_cancel_while_a_one_phase_commit_is_at_its_participant_says_it_stands(local, monkeypatch):
    """Sending a one-phase batch's only chunk (apply+commit) is its decision: a cancellation
    that comes while it is at the participant promises no rollback, and the batch commits."""
    engine, make_service = local
    service = make_service()
    planned = _one_phase(engine)
    participant = engine.runtime.participants[planned[0].participant]
    reached, release = threading.Event(), threading.Event()
    apply = participant.apply

    def held_commit(ref, chunk, prepare=False, commit=False):
        if commit:
            reached.set()
            assert release.wait(20)
        return apply(ref, chunk, prepare=prepare, commit=commit)

    monkeypatch.setattr(participant, "apply", held_commit)
    txn = service.submit("create_items", RunOptions(), planned, 5)["txn"]
    assert reached.wait(20)  # the apply+commit is at the participant
    reply = service.cancel(txn)
    release.set()
    result = service.wait(txn, 30)
    assert result["state"] == "completed" and result["itemsCreated"] == 5, result
    assert not reply["success"] and not reply["rollback"] and "rolled back" not in reply["message"], reply
    assert engine.count_items("S") == 5


def test_a_cancel_before_a_one_phase_commit_is_sent_stops_it(local, monkeypatch):
    """A cancellation that comes after the stop was looked for in the dispatch loop but before
    the apply+commit goes is found at the last look: nothing is sent, the batch is cancelled."""
    engine, make_service = local
    service = make_service()
    reached, release = held(monkeypatch, ApplyPhase, "_dispatch")
    txn = service.submit("create_items", RunOptions(), _one_phase(engine), 5)["txn"]
    assert reached.wait(20)  # the loop looked for a stop and found none; the chunk is about to go
    reply = service.cancel(txn)
    assert reply["success"] and reply["rollback"], reply
    release.set()
    result = service.wait(txn, 30)
    assert result["state"] == "cancelled" and result["itemsCreated"] == 0, result
    assert result["error"]["code"] == "CANCELLED", result
    assert engine.count_items("S") == 0
    assert service.status(txn)["state"] == "cancelled"


def test_cancelling_a_non_atomic_batch_that_reruns_its_conflicted_chunks_says_what_it_keeps(local, monkeypatch):
    engine, make_service = local
    service = make_service()
    ids = engine.create_items("S", "Rows", [{"n": 1} for _ in range(6)], batch_size=3).item_ids
    last = max(engine.layout.shard_names)
    locked = next(i for i in ids if engine.layout.shard_of(i) == last)
    first = next(i for i in ids if engine.layout.shard_of(i) != last)
    engine.runtime.participants[last].locks.acquire("batch-holding-it", 1, [locked])  # older: wait-die kills ours
    updates = [{"selector": {"itemId": first}, "values": {"n": 7}},
               {"selector": {"query": "n > 0"}, "values": {"n": "=n + 1"}}]
    plan = engine.planner.update_items("S", updates)
    # the re-run is the conflicted chunk alone, which commits in one phase: held before it is
    # sent (its sending is its decision), so that the cancellation comes while it can stop it
    reached, release = held(monkeypatch, ApplyPhase, "_dispatch", when=lambda phase, *_: phase.run.txn.endswith(".r2"))
    txn = service.submit("update_items", RunOptions(atomic=False, timeout=20_000), list(plan.chunks), plan.total)["txn"]
    assert reached.wait(20), "the re-run of the conflicted chunk"
    reply = service.cancel(txn)
    release.set()
    assert reply["success"] and not reply["rollback"], reply
    assert "everything" not in reply["message"] and f"committed ({txn})" in reply["message"], reply
    result = service.wait(txn, 30)
    assert result["state"] == "cancelled" and result["itemsUpdated"] > 0, result
    values = {item["id"]: item["values"]["n"] for item in engine.get_items("S")}
    assert values[first] == 8 and values[locked] == 1  # the first attempt's work stayed; the locked item untouched
    engine.runtime.participants[last].locks.release_all("batch-holding-it")


def test_a_feed_of_a_queued_batch_answers_at_once_and_the_driver_feeds_once_it_runs(local):
    engine, make_service = local
    service = make_service(max_running=1)
    blocker = service.submit("create_items", RunOptions())["txn"]  # holds the only slot
    until(lambda: service.status(blocker)["state"] == "running")
    txn = service.submit("create_items", RunOptions())["txn"]
    assert service.status(txn)["state"] == "queued"
    planned = _planned(engine, 20)
    started = time.monotonic()
    reply = service.feed(txn, planned)
    assert time.monotonic() - started < 0.5  # not held until the batch starts
    assert not reply and reply.queued and service.budget.in_use == 0

    fed = {}

    def driver():  # what a driver does: wait for the start without holding a thread there, then feed
        if when_started(lambda: service.feed(txn, [])):
            fed["reply"] = service.feed(txn, planned)
            service.close_input(txn, 20)

    feeder = threading.Thread(target=driver)
    feeder.start()
    time.sleep(0.3)
    assert "reply" not in fed
    service.close_input(blocker, 0)
    feeder.join(20)
    assert fed["reply"] and not fed["reply"].queued
    result = service.wait(txn, 30)
    assert result["success"] and result["itemsCreated"] == 20, result
    assert engine.count_items("S") == 20

    blocker = service.submit("create_items", RunOptions())["txn"]
    until(lambda: service.status(blocker)["state"] == "running")
    queued = service.submit("create_items", RunOptions())["txn"]
    assert service.cancel(queued)["state"] == "cancelled"
    reply = service.feed(queued, [])
    assert not reply and not reply.queued  # it takes no input any more: nothing to wait for
    service.cancel(blocker)
    assert not service.feed(blocker, [])  # the same for a running batch cancelled


def test_ended_batches_release_their_input_and_only_the_recent_ones_stay(local):
    engine, make_service = local
    service = make_service()
    service.KEEP_ENDED = 3
    txns = []
    for k in range(6):
        options = RunOptions(idempotency_key=f"key-{k}")
        txns.append(service.submit("create_items", options, _planned(engine, 20), 20, wait=10)["txn"])
    blocker = service.submit("create_items", RunOptions())["txn"]
    until(lambda: service.status(blocker)["state"] == "running")
    until(lambda: all(txn not in service.runs or service.runs[txn].ended.is_set() for txn in txns))
    assert set(service.runs) == {*txns[-3:], blocker}  # the three most recent ended ones, and the running one
    assert all(service.runs[txn].planned is None for txn in txns[-3:])
    old = txns[0]
    result = service.wait(old, 1)
    assert result["success"] and result["itemsCreated"] == 20, result
    assert service.status(old)["state"] == "completed"
    assert not service.cancel(old)["success"]
    assert not service.feed(old, []) and service.keep_alive(old) is False
    service.close_input(old, 20)  # nothing to close: no error
    again = service.submit("create_items", RunOptions(idempotency_key="key-0"), _planned(engine, 20), 20, wait=10)
    assert again["txn"] == old and again["prior"] is not None and again["result"]["itemsCreated"] == 20
    service.close_input(blocker, 0)
    assert service.wait(blocker, 30)["success"]
    assert engine.count_items("S") == 120


def test_a_failure_after_the_decision_keeps_the_committed_result(local, monkeypatch):
    engine, make_service = local
    service = make_service()
    driver = service.executor.driver
    finish = driver.finish
    failed = []

    def finish_once(*args, **kwargs):  # the first phase 2 cannot mark its decision done
        if not failed:
            failed.append(True)
            raise StoreError("database or disk is full")
        return finish(*args, **kwargs)

    monkeypatch.setattr(driver, "finish", finish_once)
    txn = service.submit("create_items", RunOptions(), _planned(engine, 40), 40)["txn"]
    until(lambda: service.runs[txn].ended.is_set())
    result = service.wait(txn, 1)
    assert result["state"] == "completed" and result["success"] and result["itemsCreated"] == 40, result
    assert result["error"]["code"] == "STORE" and result["error"]["details"]["committed"] is True, result
    until(lambda: not engine.runtime.log.unfinished()[1], what="the settler finishing phase 2")
    assert engine.count_items("S") == 40


def test_a_commit_point_whose_record_fails_answers_the_committed_result(local, monkeypatch):
    """The batch's result is recorded at its commit point, after the decision: a log that
    cannot write that record (a full disk) used to end the run there, answered ``failed`` with
    a bare STORE error, for a batch whose decision was commit (a caller would run it again)."""
    engine, make_service = local
    service = make_service()
    log = engine.runtime.log
    set_state = log.set_state
    failed = []

    def commit_point_record_fails_once(txn, state, result=None):
        if result is not None and not failed:
            failed.append(txn)
            raise StoreError("decision log: state failed: database or disk is full")
        return set_state(txn, state, result=result)

    monkeypatch.setattr(log, "set_state", commit_point_record_fails_once)
    told = []
    decided = service._decided
    monkeypatch.setattr(service, "_decided", lambda run, result: (told.append(result.dump()), decided(run, result)))
    txn = service.submit("create_items", RunOptions(), _planned(engine, 40), 40)["txn"]
    until(lambda: service.runs[txn].ended.is_set())
    assert failed == [txn] and len(told) == 1
    early = told[0]  # what waiters were answered at the commit point
    assert early["state"] == "completed" and early["itemsCreated"] == 40, early
    assert early["error"]["code"] == "STORE" and early["error"]["details"]["committed"] is True, early
    result = service.wait(txn, 1)  # recorded at the batch's end
    assert result["state"] == "completed" and result["success"] and result["itemsCreated"] == 40, result
    assert engine.count_items("S") == 40
    assert log.batch(txn)["state"] == "completed" and not log.unfinished()[1]


def test_an_undo_waiting_for_its_source_s_phase_2_ends_at_a_cancel(local, monkeypatch):
    """An undo waits for the batch it undoes to end here, phase 2 included; a cancellation (or
    its own timeout, which runs from its start) used to be looked for only after that wait,
    which lasted up to the undo's whole timeout, and its timeout then started afresh."""
    from batchray.core.plan.operations import plan_undo

    engine, make_service = local
    service = make_service()
    reached, release = held(monkeypatch, service.executor.driver, "finish",
                            when=lambda txn, *args: txn.startswith("create"))  # the source's phase 2
    source = service.submit("create_items", RunOptions(create_backups=True), _planned(engine, 40), 40)["txn"]
    assert service.wait(source, 20)["success"] and reached.wait(20)  # answered at its commit point
    try:
        plan = plan_undo(engine.planner, engine.runtime.log.batch, source)
        undo = service.submit("rollback_batch", RunOptions(undoes=source, timeout=8000), list(plan.chunks))["txn"]
        until(lambda: service.is_running(undo))
        time.sleep(0.2)  # waiting for its source to end
        assert service.cancel(undo)["success"]
        started = time.monotonic()
        result = service.wait(undo, 20)
        assert result["state"] == "cancelled", result
        assert time.monotonic() - started < 4.0, "the cancellation waited for the source's phase 2"
    finally:
        release.set()
    until(lambda: service.runs[source].ended.is_set())
    assert engine.count_items("S") == 40


def test_a_cancel_that_looks_while_its_batch_is_being_queued_never_strands_it(local, monkeypatch):
    """A cancellation that comes while ``submit`` registers a batch (in the log, not yet in
    the queue) either cancels it or leaves it to run: the batch never stays queued for good."""
    engine, make_service = local
    service = make_service(max_running=1)
    blocker = service.submit("create_items", RunOptions())["txn"]  # holds the only slot
    until(lambda: service.status(blocker)["state"] == "running")
    pushed, looked, replies = threading.Event(), threading.Event(), []

    class Runs(dict):
        """The service's batches: the canceller's look outside the service's lock finds the
        batch missing, and its next step comes only once ``submit`` queued it."""

        def get(self, key, default=None):
            value = super().get(key, default)
            if threading.current_thread().name == "canceller" and value is None:
                looked.set()
                if not service._lock._is_owned():
                    assert pushed.wait(20)
            return value

    service.runs = Runs(service.runs)
    push, begin = service.admission.push, service.executor.begin

    def pushing(txn, **kwargs):
        push(txn, **kwargs)
        pushed.set()

    def registering(*args, **kwargs):  # the batch is in the log: a cancellation finds it there
        txn, ts, prior = begin(*args, **kwargs)
        threading.Thread(target=lambda: replies.append(service.cancel(txn)), name="canceller").start()
        assert looked.wait(20)
        return txn, ts, prior

    monkeypatch.setattr(service.admission, "push", pushing)
    monkeypatch.setattr(service.executor, "begin", registering)
    txn = service.submit("create_items", RunOptions(), _planned(engine, 20), 20)["txn"]
    monkeypatch.undo()
    until(lambda: replies)
    service.close_input(blocker, 0)
    assert service.wait(blocker, 30)["success"]
    result = service.wait(txn, 30)
    assert result is not None, (replies, service.status(txn))  # it ran, or it was cancelled
    if replies[0]["success"]:
        assert result["state"] == "cancelled" and engine.count_items("S") == 0, (replies, result)
    else:
        assert result["success"] and engine.count_items("S") == 20, (replies, result)


def test_an_undo_run_by_the_coordinator_counts_its_deletes_and_names_a_batch_without_backups(local):
    """The coordinator plans a submitted batch again without the client's notes of an undo: an
    undo of a create answered ``updated`` for the items it deleted, and one of a batch that kept
    no backups failed with "batch None kept no backups" (``batchId`` None)."""
    from batchray.core.plan.operations import plan_undo

    engine, make_service = local
    service = make_service()
    source = service.submit("create_items", RunOptions(create_backups=True), _planned(engine, 40), 40)["txn"]
    assert service.wait(source, 20)["success"]
    plan = plan_undo(engine.planner, engine.runtime.log.batch, source)
    undo = service.submit("rollback_batch", RunOptions(undoes=source), list(plan.chunks), plan.total)["txn"]
    result = service.wait(undo, 20)
    assert result["success"] and result["itemsDeleted"] == 40 and result["itemsUpdated"] == 0, result
    assert engine.count_items("S") == 0
    bare = service.submit("create_items", RunOptions(), _planned(engine, 40), 40)["txn"]
    assert service.wait(bare, 20)["success"]
    plan = plan_undo(engine.planner, engine.runtime.log.batch, bare)
    undo = service.submit("rollback_batch", RunOptions(undoes=bare), list(plan.chunks), plan.total)["txn"]
    result = service.wait(undo, 20)
    assert result["error"]["code"] == "NOT_FOUND" and result["error"]["details"]["batchId"] == bare, result
    assert f"batch {bare} kept no backups" in result["error"]["message"], result


def _log_refuses_once(engine, monkeypatch, refused_state: str) -> list[str]:
    """The decision log refuses its first write of ``refused_state`` (a busy or full disk);
    the list returned names the batch it refused."""
    log = engine.runtime.log
    set_state = log.set_state
    refused: list[str] = []

    def refuse_once(txn, state, result=None):
        if state == refused_state and not refused:
            refused.append(txn)
            raise StoreError("decision log: state failed: database is locked")
        return set_state(txn, state, result=result)

    monkeypatch.setattr(log, "set_state", refuse_once)
    return refused


def _queued_behind_a_stream(engine, service) -> tuple[str, str]:
    """``(blocker, queued)``: a stream holding the only slot, and a 20-item batch queued behind it."""
    blocker = service.submit("create_items", RunOptions())["txn"]
    queued = service.submit("create_items", RunOptions(), _planned(engine, 20), 20)["txn"]
    return blocker, queued


def test_a_batch_whose_start_cannot_be_recorded_fails_and_frees_its_slot(local, monkeypatch):
    """A queued batch is marked running in the log when it starts; a log that refused that
    write (a busy or full disk) ended the batch's thread before anything could let its slot go:
    its waiters waited for ever, and with ``max_running`` such failures no batch ever ran
    again. It fails with the store's error instead, and the next batch runs."""
    engine, make_service = local
    service = make_service(max_running=1)
    refused = _log_refuses_once(engine, monkeypatch, "running")
    blocker, queued = _queued_behind_a_stream(engine, service)
    assert service.status(queued)["state"] == "queued"
    service.close_input(blocker, 0)
    assert service.wait(blocker, 30)["success"]
    result = service.wait(queued, 30)
    assert refused == [queued] and result is not None, result
    assert result["state"] == "failed" and not result["success"] and result["error"]["code"] == "STORE", result
    assert service.status(queued)["state"] == "failed"
    assert service.budget.in_use == 0 and service.admission.running == set()
    after = service.submit("create_items", RunOptions(), _planned(engine, 20), 20)["txn"]
    result = service.wait(after, 30)
    assert result is not None and result["success"] and result["itemsCreated"] == 20, result
    assert engine.count_items("S") == 20


def test_a_queued_batch_whose_cancel_cannot_be_recorded_waits_on_and_runs(local, monkeypatch):
    """A cancel of a queued batch took it out of its queue and then wrote its end to the log; a
    log that refused that write (a busy or full disk) raised with the batch out of the queue and
    never ended: it never ran, and its waiters waited for ever. The cancel now raises with the
    batch still queued, where it was, and it runs when its turn comes."""
    engine, make_service = local
    service = make_service(max_running=1)
    refused = _log_refuses_once(engine, monkeypatch, "cancelled")
    blocker, queued = _queued_behind_a_stream(engine, service)
    with pytest.raises(StoreError):
        service.cancel(queued)
    assert refused == [queued]
    status = service.status(queued)
    assert status["state"] == "queued" and status["queuePosition"] == 0, status
    assert service.feed(queued, []).queued  # its driver is told to wait, not to stop
    service.close_input(blocker, 0)
    assert service.wait(blocker, 30)["success"]
    result = service.wait(queued, 30)
    assert result is not None and result["success"] and result["itemsCreated"] == 20, result
    assert engine.count_items("S") == 20
