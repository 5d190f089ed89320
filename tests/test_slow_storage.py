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
"""
from __future__ import annotations

import sqlite3
import threading
import time

from local_runtime import local_client

from batchray.testing.slow_sync import slowed

COLLECTIONS = [{"name": "People", "attrs": [{"name": "name"}, {"name": "n", "type": "numeric"}]}]
DECISION_SECONDS = 2.0
SHARD_SECONDS = 0.5


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
        assert client.create_data_context("People", COLLECTIONS).success
        created = client.create_items("People", "People", [{"name": f"p{k}", "n": k} for k in range(20)],
                                      batch_size=10)  # a chunk per shard (one chunk would go to one)
        assert created.success
        shards = [p for name, p in sorted(client.runtime.participants.items()) if name.startswith("shard-")]
        assert len({client.layout.shard_of(i) for i in created.item_ids}) == 2  # the batch spans both
        calls: list = []
        for shard in shards:
            _record(shard, "prepare", calls, "returned")  # a vote asked for on its own
            _record(shard, "commit", calls, "called")
        old = list(range(20))
        new = [k + 100 for k in old]
        reads: list = []
        done = threading.Event()

        def reader() -> None:
            while not done.is_set():
                began = time.monotonic()
                values = [item["values"]["n"] for item in client.get_items("People")]
                reads.append((began, time.monotonic(), values))

        with slowed(client.runtime.log, DECISION_SECONDS) as log_sync, \
                slowed(shards[0], SHARD_SECONDS) as sync0, slowed(shards[1], SHARD_SECONDS) as sync1:
            thread = threading.Thread(target=reader, daemon=True)
            thread.start()
            result = client.update_items("People", [{"selector": {"query": "n >= 0"}, "values": {"n": "=n + 100"}}],
                                         progress=False)
            returned = time.monotonic()
            with sqlite3.connect(f"file:{client.runtime.log.path}?mode=ro", uri=True) as look:
                logged = look.execute("SELECT outcomes FROM decisions WHERE txn=?", (result.transaction_id,)).fetchone()
            done.set()
            thread.join(30)
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
        assert reads, "the reader never finished a read"
        for began, ended, values in reads:
            assert values in (old, new), f"a read saw part of the batch: {values}"
            if values == new:
                assert ended >= decision.durable, "a reader saw the batch before its decision was durable"
