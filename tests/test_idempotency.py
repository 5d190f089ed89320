"""Idempotency keys: a batch never runs twice under one key (no Ray; fast).

What these tests show:

* The in-process runtime: a batch recovery finished (recorded as ``{"recovered": true, ...}``)
  answers its key and ``wait`` with a :class:`BatchResult`.
* The executor over each decision log (SQLite; PostgreSQL with ``BATCHRAY_TEST_PG_DSN``):
  a registration that lost the race for a new key (it looked the key up before the other
  registered it) gets the other batch as its prior one, not the log's UNIQUE violation.
"""
from __future__ import annotations

import pytest

from local_runtime import local_client
from pg_schema import own_schema

COLLECTION = [{"name": "P", "attrs": [{"name": "n"}, {"name": "v", "type": "numeric"}]}]


def _rows(count: int) -> list[dict]:
    return [{"n": f"x{i}", "v": i} for i in range(count)]


def test_a_batch_recovery_finished_answers_its_key_and_wait(tmp_path):
    store = tmp_path / "store"
    with local_client(store, shards=2) as client:
        assert client.create_data_context("P", collections=COLLECTION).success
        # registered under the key, then the process ended before the batch ran
        txn, _, _ = client.runtime.executor.begin("create_items", idempotency_key="load-3")
    with local_client(store, shards=2) as client:  # recovery rolls it back
        assert client.runtime.log.batch(txn)["result"] == {"recovered": True, "committed": False}
        for answer in (client.create_items("P", "P", _rows(3), idempotency_key="load-3"), client.wait(txn)):
            assert answer.transaction_id == txn and not answer.success
            assert answer.state.value == "rolled_back" and answer.error["code"] == "ABORTED"
        assert client.count_items("P") == 0


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_registration_that_lost_the_race_for_a_key_gets_the_winner(kind, tmp_path, monkeypatch):
    if kind == "sqlite":
        _lost_race(str(tmp_path / "store"), monkeypatch)
    else:
        with own_schema("idem") as schema:
            _lost_race(schema.url, monkeypatch)


def _lost_race(store: str, monkeypatch) -> None:
    with local_client(store, shards=2) as client:
        executor, log = client.runtime.executor, client.runtime.log
        winner, ts, prior = executor.begin("create_items", idempotency_key="load-4")
        assert prior is None
        lookup = log.batch_by_key
        stale = iter([None])  # the loser's lookup ran before the winner registered
        monkeypatch.setattr(log, "batch_by_key", lambda key: next(stale, None) or lookup(key))
        txn, ts_again, prior = executor.begin("create_items", idempotency_key="load-4")
        assert (txn, ts_again) == (winner, ts) and prior["txn"] == winner
        assert log.add_batch("other", kind="create_items", ts=1, idempotency_key="load-4") is False
        assert log.batch("other") is None
        assert log.add_batch("other", kind="create_items", ts=1, idempotency_key="load-5") is True
