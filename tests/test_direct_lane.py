"""The direct lane (batchray/core/run/direct.py, actors/direct.py): a small one-phase batch sent
by its driver straight to its participant's worker gives what the coordinator's path gives.

On Ray, the same requests run on one store with the lane and on another without it: the same
results, progress, stored items and batch history (the one-phase workload of
tests/test_one_phase.py: clean and failing creates, updates, deletes, a backed-up batch and its
undo), and the lane is shown to have carried the clean ones (their records say so) while every
batch that found errors left no trace of its try. Also: concurrent increments of one item lose
nothing (a lock held ends a try at once, and the batch waits the usual way); a coordinator
with a waiting or full queue closes the lane; an answer lost after the commit is resolved at the
participant and reported committed once. The core steps are checked on a real SQLite shard and
decision log without Ray.
"""
from __future__ import annotations

import threading
import time

import pytest
import ray

from batchray.core.model.batch import RunOptions
from batchray.core.plan.plan import SMALL_BATCH
from batchray.core.run.direct import DirectBatch, record, resolve_lost
from batchray.core.storage.decision_log import DecisionLog
from batchray.core.txn.chunks import TxnRef
from batchray.core.txn.onephase import commit_alone
from batchray.errors import ParticipantUnavailable
from local_runtime import local_client
from test_one_phase import SCHEMA, _comparable, _rows, _workload

VOLATILE_RECORD = ("txn", "ts", "submitted", "started", "finished", "idem_key", "request", "result")


def _history(client) -> list[dict]:
    """Each batch of the store's history, oldest first, less what differs from run to run."""
    records = [client.runtime.batch_record(b["batchId"]) for b in reversed(client.status(limit=100))]
    return [{"state": r["state"], "kind": r["kind"], "success": (r.get("result") or {}).get("success"),
             "created": (r.get("result") or {}).get("itemsCreated"), "direct": bool((r.get("request") or {}).get("direct"))}
            for r in records]


def _run_workload(client) -> list:
    results = _workload(client, [])
    return [(name, _comparable(outcome), progress, [v for _, v in stored]) for name, outcome, progress, stored in results]


@pytest.mark.ray
def test_the_lane_gives_what_the_coordinators_path_gives(make_client):
    _compare_lane(make_client("lane", workers=2, shards=2), make_client("plain", workers=2, shards=2))


@pytest.mark.ray
@pytest.mark.postgres
def test_on_postgresql_the_lane_gives_what_the_coordinators_path_gives(ray_session):
    import batchray
    from pg_schema import dsn_or_skip, own_schema

    dsn_or_skip()
    with own_schema("lane") as lane_schema, own_schema("plain") as plain_schema:
        clients = [batchray.connect(schema.url, progress=False, workers=2, shards=2)
                   for schema in (lane_schema, plain_schema)]
        try:
            _compare_lane(*clients)
        finally:
            for client in clients:
                client.shutdown()


def _compare_lane(lane_client, plain_client) -> None:
    """The one-phase workload with the lane (``lane_client``) and without it: the same results,
    progress, items and history; the lane carried the clean batches and only those."""
    plain_client.runtime.lane = None
    with_lane = _run_workload(lane_client)
    without = _run_workload(plain_client)
    assert with_lane == without
    history = _history(lane_client)
    assert [{k: v for k, v in h.items() if k != "direct"} for h in history] == \
        [{k: v for k, v in h.items() if k != "direct"} for h in _history(plain_client)]
    # the clean one-phase batches went by the lane; the failing ones, the backed-up one and the
    # undo did not, and a failing try left no record of its own
    direct = [h["kind"] for h in history if h["direct"]]
    assert direct == ["create_data_context", "create_items", "create_items", "update_items", "delete_items"], history
    assert not any(h["direct"] for h in _history(plain_client))
    lane = lane_client.runtime.lane
    assert lane.committed == 5 and lane.sent == 8  # 3 tries found errors and were run again
    workers = lane_client.runtime.info()["workers"]
    assert sum(w["directCalls"] for w in workers) == 8
    for participant, left in ray.get(lane_client.runtime.coordinator.leftovers.remote()).items():
        assert not any(left.values()), (participant, left)


@pytest.fixture(scope="module")
def shared(open_store):
    """One store for the tests below that need nothing special of it (each its own contexts)."""
    client = open_store("shared", workers=2, shards=2)
    assert client.create_data_context("Opening", SCHEMA).success
    return client


@pytest.mark.ray
def test_a_direct_batchs_status_and_progress_are_there_when_it_returns(shared):
    """Also: a schema change takes the lane too; a batch with the caller's idempotency key does not."""
    client = shared
    committed = client.runtime.lane.committed
    assert client.create_data_context("P", SCHEMA).success
    result = client.create_items("P", "People", _rows(10))
    assert result.success and client.runtime.lane.committed == committed + 2
    status = client.status(result.transaction_id)
    assert status["state"] == "completed" and status["result"]["itemsCreated"] == 10
    assert status["progress"]["completed"] == 10 and status["progress"]["failed"] == 0
    assert client.status(limit=1)[0]["batchId"] == result.transaction_id
    # a schema change by the lane (at the catalog), and items into what it made
    assert client.create_data_context("Q", SCHEMA).success and client.runtime.lane.committed == committed + 3
    assert client.create_items("Q", "People", _rows(3)).success and client.count_items("Q") == 3
    # a caller's idempotency key is looked up by the coordinator: never by the lane
    sent = client.runtime.lane.sent
    first = client.create_items("P", "People", _rows(2), idempotency_key="once")
    again = client.create_items("P", "People", _rows(2), idempotency_key="once")
    assert client.runtime.lane.sent == sent and again.transaction_id == first.transaction_id
    assert client.count_items("P") == 12


@pytest.mark.ray
def test_concurrent_increments_of_one_item_lose_nothing(shared):
    client = shared
    assert client.create_data_context("Hot", SCHEMA).success
    committed = client.runtime.lane.committed
    (item,) = client.create_items("Hot", "People", [{"name": "x", "age": 0}]).item_ids
    errors: list = []

    def bump(times: int) -> None:
        for _ in range(times):
            result = client.update_items("Hot", [{"selector": {"itemId": item}, "values": {"age": "=age + 1"}}])
            if not result.success:
                errors.append(result.error)

    threads = [threading.Thread(target=bump, args=(15,)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert client.get_items("Hot")[0]["values"]["age"] == 45
    assert client.runtime.lane.committed >= committed + 2  # the create, and some increments


@pytest.mark.ray
def test_a_busy_queue_closes_the_lane(make_client):
    client = make_client("queue", workers=2, shards=2, max_running=1)
    assert client.create_data_context("P", SCHEMA).success
    assert client.create_items("P", "People", _rows(3)).success
    lane = client.runtime.lane
    assert lane.open and lane.committed == 2  # the context and the 3 items: the lane is open

    def slow():  # more than a small batch (so it streams), its tail slow
        for i, row in enumerate(_rows(SMALL_BATCH + 30)):
            if i >= SMALL_BATCH:
                time.sleep(0.03)
            yield row

    long = client.create_items("P", "People", slow(), batch_size=1000, wait=False)  # takes the only slot
    sent = lane.sent
    small = client.create_items("P", "People", _rows(4))
    assert small.success and lane.sent == sent  # it waited in the queue, not in the lane
    first, second = client.runtime.batch_record(long), client.runtime.batch_record(small.transaction_id)
    assert first["state"] == "completed" and second["started"] >= first["finished"] - 0.05
    assert client.count_items("P") == 3 + SMALL_BATCH + 30 + 4


@pytest.mark.ray
def test_an_answer_lost_after_the_commit_is_resolved_committed(make_client):
    # each apply sleeps 2 s after its commit; the batch's 1.2 s run out before the answer (and
    # leave the apply time to reach its shard and commit on a busy machine: a resolve that
    # comes first aborts it there, and the batch goes the coordinator's way instead)
    client = make_client("lost", workers=2, shards=2, shard_apply_delay=2.0)
    assert client.create_data_context("P", SCHEMA).success
    result = client.create_items("P", "People", _rows(10), timeout=1200)
    assert result.success and result.items_created == 10 and result.duration >= 1.2  # resolved after the wait
    assert client.runtime.lane.sent == 2 and client.runtime.lane.committed == 2  # the context, and this one
    assert client.count_items("P") == 10
    assert client.runtime.batch_record(result.transaction_id)["state"] == "completed"


@ray.remote
def _aborted_after(seconds: float) -> None:
    from batchray.errors import TransactionAborted

    time.sleep(seconds)
    raise TransactionAborted("the resolve came first")


@pytest.mark.ray
def test_an_answer_given_up_on_is_read_when_it_comes_not_printed_as_unhandled(ray_session, monkeypatch):
    """An apply that the lane stopped waiting for, and that the resolve then overtook at its
    shard, ends in TransactionAborted; the lane dropped its ref unread, and Ray printed the error
    as unhandled, traceback and all, in the user's output. The lane now keeps such a ref and
    reads it once it has come. (A ref dropped unread is shown reported first, so that the
    check can fail.)"""
    import gc

    import ray._private.worker as ray_worker

    from actors.direct import DirectLane

    reported: list[str] = []
    monkeypatch.setattr(ray_worker, "_unhandled_error_handler", lambda exc: reported.append(repr(exc)))

    def settled(condition, seconds: float = 30) -> bool:
        deadline = time.monotonic() + seconds
        while not condition() and time.monotonic() < deadline:
            gc.collect()
            time.sleep(0.05)
        return condition()

    dropped = _aborted_after.remote(0.5)
    with pytest.raises(ray.exceptions.GetTimeoutError):
        ray.get(dropped, timeout=0.01)  # as the lane's wait for an answer gives up
    del dropped
    assert settled(lambda: any("TransactionAborted" in r for r in reported)), "Ray reports a ref dropped unread"
    reported.clear()

    lane = DirectLane(coordinator=lambda: None, call=None, max_bytes=0)
    lane._abandon(_aborted_after.remote(0.5))
    lane._collect()  # not come yet: kept
    assert len(lane._abandoned) == 1
    ray.wait(list(lane._abandoned), timeout=30)
    lane.settle()  # come: read
    assert lane._abandoned == []
    assert not settled(lambda: bool(reported), 3), reported  # a dropped ref is reported as its error comes


# -- the core steps, on a real shard and log, without Ray -----------------------------------

def _chunk(client, rows):
    plan = client.planner.create_items("P", "People", rows)
    (planned,) = list(plan.chunks)
    return planned


def test_commit_alone_commits_a_clean_chunk_and_leaves_nothing_of_a_failing_one(tmp_path):
    with local_client(tmp_path / "s", shards=1) as client:
        assert client.create_data_context("P", SCHEMA).success
        shard = client.runtime.participants["shard-0000"]
        clean = _chunk(client, _rows(5))
        images = commit_alone(shard, TxnRef("create-1-a", 1, lock_deadline=time.time()), clean.chunk)
        assert images.vote and images.affected == 5
        assert shard.resolve(TxnRef("create-1-a", 1)) == "committed"
        bad = _chunk(client, _rows(5, bad=(2,)))
        images = commit_alone(shard, TxnRef("create-2-b", 2, lock_deadline=time.time()), bad.chunk)
        assert not images.vote and images.errors[0]["index"] == 2
        assert shard.resolve(TxnRef("create-2-b", 2)) == "aborted"
        assert client.count_items("P") == 5
        assert not any(shard.leftovers().values()) and shard.locks.lock_count() == 0


class _Silent:
    """A 2PC driver whose participant never answers a resolve."""

    phase2_deadline = 0.05
    phase2_attempts = 1
    rng = None

    def __init__(self) -> None:
        self.unsettled: list[str] = []
        self.on_unsettled = self.unsettled.append
        self.transport = self

    def ref(self, txn, ts, participant):
        return TxnRef(txn, ts)

    def submit(self, participant, step, ref):
        return "handle"

    def wait(self, pending):
        return pending, []

    def result(self, handle):
        raise ParticipantUnavailable("down")

    def sleep(self, seconds):
        pass


def test_a_record_is_written_once_and_an_unanswered_resolve_leaves_the_batch_to_the_settler(tmp_path):
    log = DecisionLog(tmp_path / "log.sqlite")
    batch = DirectBatch("create-5-c", 5, "create_items", "shard-0000", RunOptions(), 10)
    result = {"success": True, "state": "completed", "itemsCreated": 10, "transactionId": batch.txn}
    assert record(log, batch, result) and not record(log, batch, result)
    stored = log.batch(batch.txn)
    assert stored["state"] == "completed" and stored["result"]["itemsCreated"] == 10
    assert stored["request"] == {"onePhase": "shard-0000", "direct": True}
    silent = _Silent()
    lost = DirectBatch("create-6-d", 6, "create_items", "shard-0000", RunOptions(), 10)
    with pytest.raises(ParticipantUnavailable):
        resolve_lost(log, silent, lost)
    assert silent.unsettled == [lost.txn]
    assert log.batch(lost.txn)["state"] == "running"  # registered one-phase: recovery resolves it
    assert log.batch(lost.txn)["request"]["onePhase"] == "shard-0000"
    log.close()


def test_a_record_written_late_keeps_its_place_in_the_history(tmp_path):
    """The lane's record travels to the coordinator after the batch committed; a batch submitted
    after it but registered before the record arrives is still listed after it."""
    log = DecisionLog(tmp_path / "log.sqlite")
    early = DirectBatch("create-7-e", 7, "create_items", "shard-0000", RunOptions(), 5)
    time.sleep(0.01)
    log.add_batch("create-8-f", kind="create_items", ts=8)  # registered by the coordinator first
    assert record(log, early, {"success": True, "state": "completed", "itemsCreated": 5})
    assert [b["txn"] for b in reversed(log.recent())] == ["create-7-e", "create-8-f"]
    assert log.batch(early.txn)["submitted"] == pytest.approx(early.submitted)
    log.close()
