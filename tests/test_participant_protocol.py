"""The participant protocol contract (batchray/core/txn/participant.py), checked on SqliteShard.

Each test drives one shard file directly with hand-made chunks, so every step, repetition and
restart is explicit. "State" below is the full content of every table of the shard file.
"""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import orjson
import pytest

from batchray.core.txn import crashpoints
from batchray.core.txn.chunks import CreateItems, DeleteItems, TxnRef, UpdateItems, context_range
from batchray.errors import LockConflict, StaleEpochError, TransactionAborted
from batchray.core.storage.sqlite.shard import SqliteShard

CTX = 1
LO, HI = context_range(CTX)
ITEMS = {LO + 1: {"name": "a", "mass": 1}, LO + 2: {"name": "b", "mass": 2}, LO + 3: {"name": "c", "mass": 3}}
TABLES = ("items", "docs", "undo", "created", "applied", "txns", "finished", "meta")
ZERO = {"txns": 0, "undo": 0, "created": 0, "applied": 0}


# -- helpers ----------------------------------------------------------------------------------

def _make_shard(path: Path, lock_timeout: float = 2.0) -> SqliteShard:
    return SqliteShard(path, name="s", lock_timeout=lock_timeout)


def _create(chunk_id: int, items: dict[int, dict]) -> CreateItems:
    return CreateItems(chunk_id, list(items), [orjson.dumps(v).decode() for v in items.values()])


def _update(chunk_id: int, ids: list[int], patch: dict) -> UpdateItems:
    return UpdateItems(chunk_id, CTX, ids=ids, patch=patch)


def _delete(chunk_id: int, ids: list[int]) -> DeleteItems:
    return DeleteItems(chunk_id, CTX, ids=ids)


def _seeded(tmp_path: Path, **kwargs) -> SqliteShard:
    shard = _make_shard(tmp_path / "s.sqlite", **kwargs)
    ref = TxnRef("seed", 1)
    shard.apply(ref, _create(1, ITEMS))
    assert shard.prepare(ref)
    shard.commit(ref)
    return shard


def _visible(shard: SqliteShard, own: str | None = None) -> dict[int, dict]:
    return {i: orjson.loads(v) for i, v in shard.read_items(CTX, own_txn=own)}


def _state(path: Path) -> dict[str, list]:
    conn = sqlite3.connect(path)
    try:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in TABLES}
    finally:
        conn.close()


def _same_images(a, b) -> bool:
    return (a.chunk_id, sorted(a.created), sorted(a.items), sorted(a.docs)) == (
        b.chunk_id, sorted(b.created), sorted(b.items), sorted(b.docs))


@pytest.fixture
def writes():
    """Counts durable writes: ``writes()`` returns the count since the last ``writes.reset()``."""

    class Counter:
        def reset(self):
            crashpoints.arm(10**9)

        def __call__(self):
            return crashpoints.writes_seen()

    counter = Counter()
    counter.reset()
    yield counter
    crashpoints.arm(None)


# -- each step delivered twice ----------------------------------------------------------------

def test_apply_twice_returns_equal_images_and_writes_once(tmp_path, writes):
    shard = _seeded(tmp_path)
    path = shard.path
    ref = TxnRef("t1", 10)
    chunk = _update(2, [LO + 1, LO + 2], {"mass": "=mass + 100"})
    writes.reset()
    first = shard.apply(ref, chunk)
    assert writes() == 1
    once = _state(path)
    second = shard.apply(ref, chunk)
    assert writes() == 1, "a repeated apply wrote again"
    assert _state(path) == once
    assert first == second
    assert first.items == [(LO + 1, orjson.dumps(ITEMS[LO + 1]).decode()), (LO + 2, orjson.dumps(ITEMS[LO + 2]).decode())]
    assert _visible(shard, own="t1")[LO + 1]["mass"] == 101  # the "=mass + 100" ran once

    created = shard.apply(ref, _create(3, {LO + 10: {"name": "x"}}))
    again = shard.apply(ref, _create(3, {LO + 10: {"name": "x"}}))
    assert created == again and created.created == [(LO + 10, LO + 10, 1)]
    shard.close()


def test_prepare_twice(tmp_path):
    shard = _seeded(tmp_path)
    ref = TxnRef("t1", 10)
    shard.apply(ref, _update(2, [LO + 1], {"mass": 5}))
    assert shard.prepare(ref) is True
    once = _state(shard.path)
    assert shard.prepare(ref) is True
    assert _state(shard.path) == once
    assert shard.pending() == [{"txn": "t1", "state": "prepared", "ts": 10}]
    shard.close()


@pytest.mark.parametrize("decision", ["commit", "abort"])
@pytest.mark.parametrize("prepared", [True, False], ids=["prepared", "active"])
def test_decision_twice(tmp_path, decision, prepared):
    shard = _seeded(tmp_path)
    committed = _visible(shard)
    ref = TxnRef("t1", 10)
    shard.apply(ref, _update(2, [LO + 1], {"mass": 5}))
    shard.apply(ref, _delete(3, [LO + 2]))
    shard.apply(ref, _create(4, {LO + 9: {"name": "z"}}))
    if prepared:
        assert shard.prepare(ref)
    getattr(shard, decision)(ref)
    once = _state(shard.path)
    getattr(shard, decision)(ref)
    assert _state(shard.path) == once
    assert shard.outcome("t1") == ("committed" if decision == "commit" else "aborted")
    assert shard.leftovers() == ZERO
    assert shard.locks.lock_count() == 1 or shard.locks.lock_count() == 0
    assert shard.locks.held_by("t1") == set()
    if decision == "abort":
        assert _visible(shard) == committed
    else:
        expected = dict(committed)
        expected[LO + 1] = {**expected[LO + 1], "mass": 5}
        del expected[LO + 2]
        expected[LO + 9] = {"name": "z"}
        assert _visible(shard) == expected
    shard.close()


@pytest.mark.parametrize("decision", ["commit", "abort"])
def test_decision_after_restart(tmp_path, decision):
    shard = _seeded(tmp_path)
    committed = _visible(shard)
    path = shard.path
    ref = TxnRef("t1", 10)
    shard.apply(ref, _update(2, [LO + 1], {"mass": 5}))
    shard.apply(ref, _create(3, {LO + 9: {"name": "z"}}))
    assert shard.prepare(ref)
    shard.close()

    shard = _make_shard(path)  # restart
    assert shard.in_doubt == [{"txn": "t1", "ts": 10, "shard": "s"}]
    assert shard.locks.holders(LO + 1) == {"t1": 10}
    assert _visible(shard) == committed  # still masked while in doubt
    getattr(shard, decision)(ref)
    once = _state(path)
    shard.close()

    shard = _make_shard(path)  # restart again: the decision is redelivered
    assert shard.in_doubt == []
    getattr(shard, decision)(ref)
    assert _state(path) == once
    assert shard.leftovers() == ZERO
    assert shard.locks.lock_count() == 0
    if decision == "commit":
        assert _visible(shard) == {**committed, LO + 1: {"name": "a", "mass": 5}, LO + 9: {"name": "z"}}
    else:
        assert _visible(shard) == committed
    assert shard.integrity_check() == "ok"
    shard.close()


# -- refusals ---------------------------------------------------------------------------------

def test_prepare_of_unknown_txn_votes_no_and_refuses_a_late_apply(tmp_path):
    shard = _seeded(tmp_path)
    before = _state(shard.path)
    ref = TxnRef("lost", 10)
    assert shard.prepare(ref) is False
    assert shard.prepare(ref) is False
    with pytest.raises(TransactionAborted):
        shard.apply(ref, _update(2, [LO + 1], {"mass": 5}))
    after = _state(shard.path)
    assert after["items"] == before["items"]
    assert shard.leftovers() == ZERO
    assert shard.locks.lock_count() == 0, "a refused apply kept its locks"
    # the transaction counts as aborted: an abort is a no-op, a commit would be a bug
    shard.abort(ref)
    assert _state(shard.path) == after
    shard.close()


@pytest.mark.parametrize("decision", ["commit", "abort"])
def test_apply_after_decision_is_refused(tmp_path, decision):
    shard = _seeded(tmp_path)
    ref = TxnRef("t1", 10)
    shard.apply(ref, _update(2, [LO + 1], {"mass": 5}))
    assert shard.prepare(ref)
    getattr(shard, decision)(ref)
    after = _state(shard.path)
    for chunk in (_update(3, [LO + 2], {"mass": 6}), _update(2, [LO + 1], {"mass": 5}), _create(4, {LO + 9: {"n": 1}})):
        with pytest.raises(TransactionAborted) as info:
            shard.apply(ref, chunk)
        assert info.value.to_dict()["details"]["outcome"] == shard.outcome("t1")
    assert _state(shard.path) == after
    assert shard.locks.lock_count() == 0
    shard.close()


def test_decision_for_a_txn_never_seen_is_recorded(tmp_path):
    shard = _seeded(tmp_path)
    ref = TxnRef("ghost", 10)
    shard.abort(ref)
    assert shard.outcome("ghost") == "aborted"
    with pytest.raises(TransactionAborted):
        shard.apply(ref, _update(2, [LO + 1], {"mass": 5}))
    assert _visible(shard) == ITEMS
    shard.close()


# -- epochs -----------------------------------------------------------------------------------

def test_stale_epoch_changes_nothing(tmp_path):
    shard = _seeded(tmp_path)
    assert shard.claim(5) == 5
    with pytest.raises(StaleEpochError):
        shard.claim(4)
    assert shard.epoch == 5

    # a new transaction from a replaced owner
    before = _state(shard.path)
    stale = TxnRef("old-owner", 10, epoch=4)
    with pytest.raises(StaleEpochError) as info:
        shard.apply(stale, _update(2, [LO + 1], {"mass": 5}))
    assert info.value.retryable and info.value.to_dict()["details"]["current"] == 5
    with pytest.raises(StaleEpochError):
        shard.apply(stale, _create(3, {LO + 9: {"n": 1}}))
    with pytest.raises(StaleEpochError):
        shard.prepare(stale)
    assert _state(shard.path) == before
    assert shard.locks.lock_count() == 0

    # a prepared transaction of the current owner: stale decisions touch neither data nor locks
    ref = TxnRef("t1", 11, epoch=5)
    shard.apply(ref, _update(4, [LO + 1], {"mass": 7}))
    assert shard.prepare(ref)
    prepared = _state(shard.path)
    for step in ("apply", "prepare", "commit", "abort"):
        late = TxnRef("t1", 11, epoch=4)
        with pytest.raises(StaleEpochError):
            if step == "apply":
                shard.apply(late, _update(5, [LO + 2], {"mass": 8}))
            else:
                getattr(shard, step)(late)
        assert _state(shard.path) == prepared, step
        assert shard.locks.holders(LO + 1) == {"t1": 11}, f"a stale {step} released the prepared locks"
    # so another transaction still cannot overwrite the in-doubt item
    with pytest.raises(LockConflict):
        shard.apply(TxnRef("t2", 12, epoch=5), _update(6, [LO + 1], {"mass": 9}))
    shard.commit(ref)
    assert _visible(shard)[LO + 1]["mass"] == 7
    assert shard.leftovers() == ZERO
    shard.close()


# -- recovery ---------------------------------------------------------------------------------

def test_recover_aborts_unvoted_and_keeps_prepared_in_doubt(tmp_path):
    shard = _seeded(tmp_path)
    path = shard.path
    active = TxnRef("active", 10)
    shard.apply(active, _update(2, [LO + 1], {"mass": 50}))
    shard.apply(active, _create(3, {LO + 20: {"name": "new"}}))
    prepared = TxnRef("prepared", 11)
    shard.apply(prepared, _update(4, [LO + 2], {"mass": 60}))
    shard.apply(prepared, _delete(5, [LO + 3]))
    assert shard.prepare(prepared)
    shard.close()

    shard = _make_shard(path, lock_timeout=0.2)
    assert shard.in_doubt == [{"txn": "prepared", "ts": 11, "shard": "s"}]
    assert shard.outcome("active") == "aborted"
    assert shard.pending() == [{"txn": "prepared", "state": "prepared", "ts": 11}]
    raw = {row[0]: row[1] for row in _state(path)["items"]}
    assert LO + 20 not in raw and orjson.loads(raw[LO + 1]) == ITEMS[LO + 1], "the unvoted writes were not undone"
    assert shard.locks.holders(LO + 1) == {}
    assert shard.locks.holders(LO + 2) == {"prepared": 11}
    assert shard.locks.holders(LO + 3) == {"prepared": 11}
    assert _visible(shard) == ITEMS
    # the re-taken locks keep others out: a younger dies, an older waits and times out
    with pytest.raises(LockConflict):
        shard.apply(TxnRef("younger", 12), _update(6, [LO + 2], {"mass": 1}))
    started = time.monotonic()
    with pytest.raises(LockConflict):
        shard.apply(TxnRef("older", 9), _update(7, [LO + 3], {"mass": 1}))
    assert time.monotonic() - started >= 0.15
    # a late apply of the aborted transaction is refused
    with pytest.raises(TransactionAborted):
        shard.apply(active, _update(8, [LO + 1], {"mass": 1}))
    shard.commit(prepared)
    assert _visible(shard) == {LO + 1: ITEMS[LO + 1], LO + 2: {"name": "b", "mass": 60}}
    assert shard.leftovers() == ZERO and shard.locks.lock_count() == 0
    shard.close()


def test_before_images_are_durable_until_the_decision(tmp_path):
    shard = _seeded(tmp_path)
    path = shard.path
    ref = TxnRef("t1", 10)
    returned = [
        shard.apply(ref, _update(2, [LO + 1, LO + 2], {"mass": 0})),
        shard.apply(ref, _create(3, {LO + 7: {"name": "x"}, LO + 8: {"name": "y"}})),
        shard.apply(ref, _delete(4, [LO + 3])),
    ]
    assert [r.affected for r in returned] == [2, 2, 1]
    stored = shard.before_images("t1")
    assert len(stored) == 3 and all(_same_images(a, b) for a, b in zip(returned, stored))
    assert sorted(stored[0].items) == [(LO + 1, orjson.dumps(ITEMS[LO + 1]).decode()), (LO + 2, orjson.dumps(ITEMS[LO + 2]).decode())]
    assert stored[1].created == [(LO + 7, LO + 8, 2)]
    assert stored[2].items == [(LO + 3, orjson.dumps(ITEMS[LO + 3]).decode())]
    assert shard.prepare(ref)
    shard.close()

    shard = _make_shard(path)
    after_restart = shard.before_images("t1")
    assert all(_same_images(a, b) for a, b in zip(returned, after_restart)) and len(after_restart) == 3
    shard.commit(ref)
    assert shard.before_images("t1") == []
    shard.close()


# -- isolation --------------------------------------------------------------------------------

def test_reads_never_show_uncommitted_writes_of_others(tmp_path):
    shard = _seeded(tmp_path)
    ref = TxnRef("writer", 10)
    shard.apply(ref, _create(2, {LO + 50: {"name": "new", "mass": 99}}))
    shard.apply(ref, _update(3, [LO + 1], {"mass": 99}))
    shard.apply(ref, _delete(4, [LO + 2]))
    own = {LO + 1: {"name": "a", "mass": 99}, LO + 3: ITEMS[LO + 3], LO + 50: {"name": "new", "mass": 99}}
    for phase in ("active", "prepared"):
        for reader in (None, "someone-else"):
            assert _visible(shard, own=reader) == ITEMS, (phase, reader)
            assert [i for i, _ in shard.read_items(CTX, "mass == 99", own_txn=reader)] == [], (phase, reader)
            assert [i for i, _ in shard.read_items(CTX, ids=[LO + 2, LO + 50], own_txn=reader)] == [LO + 2]
        assert shard.count_items(CTX) == 3
        assert shard.count_items(CTX, "mass == 99") == 0
        assert _visible(shard, own="writer") == own, phase
        assert [i for i, _ in shard.read_items(CTX, "mass == 99", own_txn="writer")] == [LO + 1, LO + 50]
        if phase == "active":
            assert shard.prepare(ref)
    shard.commit(ref)
    assert _visible(shard) == own
    shard.close()
