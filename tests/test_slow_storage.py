"""Slow storage: an fsync that takes seconds never lets a batch report success, or a reader see
it, before its decision is durable.

The durable commits (``synchronous=FULL``, where SQLite fsyncs) of the decision log take 2 s
and those of both shards 0.5 s (:mod:`batchray.testing.slow_sync`: the delay comes before the
real ``COMMIT``, so the write is neither visible nor durable until it is over). One atomic
update over both shards runs while a reader thread reads every item again and again. Then:

* the decision's commit was slow (>= 2 s) and the batch returned success only after it;
* every shard's vote (its durable apply-and-prepare write, itself slowed) was durable before
  the decision was written, and no shard was told to commit (nor wrote its commit) before the
  decision was durable;
* the decision is in the log's file, read by a connection of its own, once the batch returned;
* every read saw all the old values or all the new ones, and the new ones only in a read that
  ended after the decision was durable.

The same on PostgreSQL (``postgres`` marker; a schema of its own on the server
``$BATCHRAY_TEST_PG_DSN`` names): every connection the store opens is slowed
(:func:`batchray.testing.slow_sync.slowed_store`): the decision log's write of the decision takes
2 s, each shard's vote (``PREPARE TRANSACTION``) and its commit (``COMMIT PREPARED``) 0.5 s, every
other write that commits on its own 0.05 s. The batch returns only after the decision's commit;
the decision is read by a connection of the test's own once it returned; each vote was durable
before the decision was written and each ``COMMIT PREPARED`` started after it was durable;
readers see all-old or all-new, the new only after the decision; nothing is left prepared.
"""
from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from local_runtime import local_client
from pg_schema import own_schema

from batchray.testing.slow_sync import slowed, slowed_store

COLLECTIONS = [{"name": "People", "attrs": [{"name": "name"}, {"name": "n", "type": "numeric"}]}]
DECISION_SECONDS = 2.0
SHARD_SECONDS = 0.5
OTHER_SECONDS = 0.05  # PostgreSQL: every other write that commits on its own
OLD = list(range(20))
NEW = [k + 100 for k in OLD]
UPDATE = {"selector": {"query": "n >= 0"}, "values": {"n": "=n + 100"}}


class Reader:
    """A thread reading every item again and again while the block runs; :meth:`check` says
    each read saw all the old values or all the new ones, the new ones only in a read that
    ended after ``durable`` (when the decision was durable)."""

    def __init__(self, client) -> None:
        self.client = client
        self.reads: list = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.done.is_set():
            began = time.monotonic()
            values = [item["values"]["n"] for item in self.client.get_items("People")]
            self.reads.append((began, time.monotonic(), values))

    def __enter__(self) -> "Reader":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join(30)

    def check(self, durable: float) -> None:
        assert self.reads, "the reader never finished a read"
        for began, ended, values in self.reads:
            assert values in (OLD, NEW), f"a read saw part of the batch: {values}"
            if values == NEW:
                assert ended >= durable, "a reader saw the batch before its decision was durable"


def _people(client) -> list[int]:
    assert client.create_data_context("People", COLLECTIONS).success
    created = client.create_items("People", "People", [{"name": f"p{k}", "n": k} for k in OLD],
                                  batch_size=max(1, len(OLD) // 2))  # a chunk per shard (one chunk would go to one)
    assert created.success
    assert len({client.layout.shard_of(i) for i in created.item_ids}) == 2  # the batch spans both
    return created.item_ids


def _record(participant, step: str, calls: list, when: str) -> None:
    real = getattr(participant, step)

    def wrapped(*args, **kwargs):
        if when == "called":
            calls.append((participant.name, step, time.monotonic()))
        value = real(*args, **kwargs)
        if when == "returned":
            calls.append((participant.name, step, time.monotonic()))
        return value

    setattr(participant, step, wrapped)  # an instance attribute: apply-with-vote calls it too


def test_a_slow_fsync_never_lets_a_batch_succeed_before_its_decision_is_durable(tmp_path):
    with local_client(tmp_path / "store", shards=2) as client:
        _people(client)
        shards = [p for name, p in sorted(client.runtime.participants.items()) if name.startswith("shard-")]
        calls: list = []
        for shard in shards:
            _record(shard, "prepare", calls, "returned")  # a vote asked for on its own
            _record(shard, "commit", calls, "called")
        with slowed(client.runtime.log, DECISION_SECONDS) as log_sync, \
                slowed(shards[0], SHARD_SECONDS) as sync0, slowed(shards[1], SHARD_SECONDS) as sync1:
            with Reader(client) as reader:
                result = client.update_items("People", [UPDATE], progress=False)
                returned = time.monotonic()
                with sqlite3.connect(f"file:{client.runtime.log.path}?mode=ro", uri=True) as look:
                    logged = look.execute("SELECT outcomes FROM decisions WHERE txn=?",
                                          (result.transaction_id,)).fetchone()
        assert result.success, result.error
        decisions = [c for c in log_sync.commits if "INTO decisions" in c.statement]
        assert len(decisions) == 1, log_sync.commits
        decision = decisions[0]
        assert decision.durable - decision.started >= DECISION_SECONDS
        assert returned >= decision.durable, "the batch reported success before its decision was durable"
        assert logged is not None and "commit" in logged[0]
        assert sync0.commits and sync1.commits  # the shards' durable writes were slowed too
        prepared = [t for name, step, t in calls if step == "prepare"]
        committed = [t for name, step, t in calls if step == "commit"]
        assert prepared == []  # the vote rode on each shard's last apply (one durable write)
        for sync in (sync0, sync1):  # each shard: its vote durable before the decision was
            # written, its commit after the decision was durable
            assert [c.durable <= decision.started for c in sync.commits] == [True, False], sync.commits
            assert sync.commits[1].started >= decision.durable
        assert len(committed) == 2 and min(committed) >= decision.durable
        reader.check(decision.durable)


@pytest.fixture
def pg_url():
    """A schema of the test's own on the shared server; no prepared transaction may be left."""
    with own_schema("slow") as schema:
        yield schema.url
    assert schema.left == [], f"prepared transactions left behind: {schema.left}"


def _pg_delay(statement: str, ending: str) -> float:
    """The decision 2 s, a shard's vote and its COMMIT PREPARED 0.5 s, any other commit 0.05 s."""
    if ending == "" and "decisions" in statement and "INSERT" in statement.upper():
        return DECISION_SECONDS
    if ending.upper().startswith(("PREPARE TRANSACTION", "COMMIT PREPARED")) and ":shard-" in ending:
        return SHARD_SECONDS
    return OTHER_SECONDS


@pytest.mark.postgres
def test_a_slow_fsync_on_postgresql_never_lets_a_batch_succeed_before_its_decision_is_durable(pg_url):
    import psycopg

    with local_client(pg_url, shards=2) as client:
        _people(client)
        runtime = client.runtime
        store = runtime.backend.store
        dsn, schema = store.dsn, store.schema
        with slowed_store(store, _pg_delay, reconnect=[runtime.log, *runtime.participants.values()]) as slow:
            with Reader(client) as reader:
                result = client.update_items("People", [UPDATE], progress=False)
                returned = time.monotonic()
                with psycopg.connect(dsn, autocommit=True) as look:  # a connection of the test's own
                    logged = look.execute(f'SELECT outcomes FROM "{schema}".decisions WHERE txn=%s',
                                          (result.transaction_id,)).fetchone()
                    prepared = look.execute("SELECT gid FROM pg_prepared_xacts WHERE starts_with(gid, %s)",
                                            (f"batchray:{schema}:",)).fetchall()
        assert result.success, result.error
        txn = result.transaction_id
        commits = list(slow.commits)
        decisions = [c for c in commits if c.ending == "" and "decisions" in c.statement
                     and "INSERT" in c.statement.upper()]
        assert len(decisions) == 1, commits
        decision = decisions[0]
        assert decision.durable - decision.started >= DECISION_SECONDS
        assert returned >= decision.durable, "the batch reported success before its decision was durable"
        assert logged is not None and "commit" in logged[0]
        votes = [c for c in commits if c.ending.startswith("PREPARE TRANSACTION") and txn in c.ending]
        delivered = [c for c in commits if c.ending.startswith("COMMIT PREPARED") and txn in c.ending]
        assert sorted(":shard-0000:" in c.ending for c in votes) == [False, True], votes  # one vote per shard
        for vote in votes:  # slowed, and durable before the decision was written
            assert vote.durable - vote.started >= SHARD_SECONDS and vote.durable <= decision.started, (vote, decision)
        assert len(delivered) == 2, commits  # each shard's commit, slowed, after the decision was durable
        for commit in delivered:
            assert commit.started >= decision.durable and commit.durable - commit.started >= SHARD_SECONDS
        assert prepared == []  # the batch returned after its decision; phase 2 was over by then
        reader.check(decision.durable)
        assert [item["values"]["n"] for item in client.get_items("People")] == NEW
        for participant in runtime.participants.values():
            assert participant.pending() == [] and not any(participant.leftovers().values()), participant.name
