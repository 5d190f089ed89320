"""The shard's bulk paths: lock escalation for selections by query, the in-SQLite update and
delete that it enables, and the fast clean-up of before-images at commit.

Every bulk result is compared with the item-by-item path (``lock_escalation=None``) on a copy
of the same data: same values, same versions kept, same errors, same before-images, and the
same rollback.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import orjson
import pytest

from batchray.core.txn.chunks import CreateItems, DeleteItems, TxnRef, UpdateItems, context_range
from batchray.errors import LockConflict
from batchray.core.storage.sqlite.shard import SqliteShard

CTX = 1
LO, _ = context_range(CTX)
SCHEMA = {"name": "T", "collections": [{"name": "C", "attrs": [
    {"name": "n", "type": "numeric"}, {"name": "tag", "type": "categorical"},
    {"name": "pos", "type": "numeric", "min": 0}]}]}
COUNT = 40


def _values(i: int) -> dict:
    return {"n": i, "tag": "even" if i % 2 == 0 else "odd", "pos": i}


def _shard(path: Path, escalate_at) -> SqliteShard:
    shard = SqliteShard(path, name="s", lock_timeout=1.0)
    shard.lock_escalation = escalate_at
    ref = TxnRef("seed", 1)
    ids = [LO + i for i in range(COUNT)]
    shard.apply(ref, CreateItems(1, ids, [orjson.dumps(_values(i)).decode() for i in range(COUNT)]))
    assert shard.prepare(ref)
    shard.commit(ref)
    return shard


def _rows(shard: SqliteShard, own=None) -> dict[int, dict]:
    return {i: orjson.loads(v) for i, v in shard.read_items(CTX, own_txn=own)}


def _versions(path: Path) -> dict[int, int]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT id, ver FROM items").fetchall())
    finally:
        conn.close()


def _pair(tmp_path: Path):
    """The same data in two shards: one escalates at 5 matches, one never does."""
    return _shard(tmp_path / "bulk.sqlite", 5), _shard(tmp_path / "items.sqlite", None)


def _update(chunk_id: int, where: str, patch: dict) -> UpdateItems:
    return UpdateItems(chunk_id, CTX, where=where, patch=patch, schema=SCHEMA, indexes=[0])


@pytest.mark.parametrize("patch", [
    {"n": "=n * 1.1"},
    {"n": "=pos", "pos": "=n + 1"},  # each expression reads the values as they were
    {"tag": "seen", "n": "=n - 1"},
])
def test_escalated_update_matches_the_item_path(tmp_path, patch):
    bulk, items = _pair(tmp_path)
    for shard in (bulk, items):
        ref = TxnRef("t", 10)
        images = shard.apply(ref, _update(2, "tag == even", patch))
        assert images.affected == COUNT // 2 and not images.errors
        if shard is bulk:
            assert shard.locks.lock_count() == 1, "escalation takes one lock, not one per item"
        else:
            assert shard.locks.lock_count() == 1 + COUNT // 2
        assert shard.prepare(ref)
        shard.commit(ref)
        assert shard.locks.lock_count() == 0 and shard.leftovers()["undo"] == 0
    assert _rows(bulk) == _rows(items)
    assert _versions(bulk.path) == _versions(items.path)


def test_escalated_update_images_errors_and_rollback(tmp_path):
    bulk, items = _pair(tmp_path)
    before = _rows(bulk)
    results = {}
    for shard in (bulk, items):
        ref = TxnRef("t", 10)
        versions = _versions(shard.path)
        # pos has min 0: "=pos - 3" fails for pos 0 and 2 (and those items stay as they were)
        images = shard.apply(ref, _update(2, "tag == even", {"pos": "=pos - 3", "tag": "x"}))
        results[shard is bulk] = images
        assert images.affected == COUNT // 2 - 2
        assert sorted(e["itemId"] for e in images.errors) == [LO, LO + 2]
        assert {e["field"] for e in images.errors} == {"pos"} and {e["index"] for e in images.errors} == {0}
        mine = _rows(shard, own="t")
        assert mine[LO] == before[LO] and mine[LO + 2] == before[LO + 2]  # left unchanged
        assert mine[LO + 4] == {**before[LO + 4], "pos": 1, "tag": "x"}
        now = _versions(shard.path)
        assert now[LO] == versions[LO] and now[LO + 2] == versions[LO + 2]
        assert _rows(shard) == before  # others still read the committed values
        stored = shard.before_images("t")
        assert sorted(stored[0].items) == sorted(images.items)
        assert LO not in dict(images.items) and len(images.items) == COUNT // 2 - 2
        shard.abort(ref)  # a chunk with errors: the coordinator aborts
        assert _rows(shard) == before and shard.leftovers()["undo"] == 0
        assert _versions(shard.path) == versions
        assert shard.locks.lock_count() == 0
    assert sorted(results[True].items) == sorted(results[False].items)


def test_escalated_delete_matches_the_item_path_and_rolls_back(tmp_path):
    bulk, items = _pair(tmp_path)
    before = _rows(bulk)
    for shard in (bulk, items):
        ref = TxnRef("d", 10)
        images = shard.apply(ref, DeleteItems(2, CTX, where="n >= 10"))
        assert images.affected == COUNT - 10
        assert sorted(images.items) == sorted((i, orjson.dumps(v).decode()) for i, v in before.items() if v["n"] >= 10)
        assert len(_rows(shard, own="d")) == 10 and _rows(shard) == before
        shard.abort(ref)
        assert _rows(shard) == before
        ref = TxnRef("d2", 11)
        shard.apply(ref, DeleteItems(3, CTX, where="n >= 10"))
        assert shard.prepare(ref)
        shard.commit(ref)
    assert _rows(bulk) == _rows(items) and len(_rows(bulk)) == 10


def test_escalation_keeps_other_writers_out_and_lets_them_in_after(tmp_path):
    shard = _shard(tmp_path / "s.sqlite", 5)
    older, younger = TxnRef("older", 10), TxnRef("younger", 20)
    shard.apply(older, _update(2, "n >= 0", {"n": "=n + 100"}))
    # a younger writer of one item of the context dies at once (wait-die)
    started = time.monotonic()
    with pytest.raises(LockConflict):
        shard.apply(younger, UpdateItems(3, CTX, ids=[LO + 1], patch={"n": 0}, schema=SCHEMA))
    assert time.monotonic() - started < 0.5
    shard.abort(younger)
    # an older one waits for the escalated transaction to finish, then runs on its result
    oldest = TxnRef("oldest", 5)
    outcome = {}

    def waiter():
        try:
            outcome["images"] = shard.apply(oldest, UpdateItems(4, CTX, ids=[LO + 1], patch={"n": "=n * 2"}, schema=SCHEMA))
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            outcome["error"] = exc

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    thread.join(0.2)
    assert thread.is_alive()
    assert shard.prepare(older)
    shard.commit(older)
    thread.join(3.0)
    assert "error" not in outcome, outcome
    assert shard.prepare(oldest)
    shard.commit(oldest)
    assert _rows(shard)[LO + 1]["n"] == 202


def test_a_later_chunk_of_an_escalated_transaction_needs_no_more_locks(tmp_path):
    shard = _shard(tmp_path / "s.sqlite", 5)
    ref = TxnRef("t", 10)
    shard.apply(ref, _update(2, "n >= 0", {"n": "=n + 1"}))
    shard.apply(ref, _update(3, "n < 3", {"tag": "low"}))  # few matches, but the context is held
    shard.apply(ref, UpdateItems(4, CTX, ids=[LO + 5], patch={"n": "=n * 10"}, schema=SCHEMA))
    assert shard.locks.lock_count() == 1 + 1  # the context, and the item named by id
    assert shard.prepare(ref)
    shard.commit(ref)
    rows = _rows(shard)
    assert rows[LO]["n"] == 1 and rows[LO]["tag"] == "low" and rows[LO + 1]["tag"] == "low"
    assert rows[LO + 2]["tag"] == "even" and rows[LO + 5]["n"] == 60  # read after the first chunk


def test_commit_keeps_other_transactions_before_images(tmp_path):
    shard = _shard(tmp_path / "s.sqlite", 5)
    a, b = TxnRef("a", 10), TxnRef("b", 11)
    shard.apply(a, UpdateItems(2, CTX, ids=[LO + 1], patch={"n": 0}, schema=SCHEMA))
    shard.apply(b, UpdateItems(3, CTX, ids=[LO + 2], patch={"n": 0}, schema=SCHEMA))
    assert shard.prepare(a)
    shard.commit(a)
    assert shard.leftovers()["undo"] == 1  # b's before-image is still there
    assert _rows(shard)[LO + 2]["n"] == 2  # and b's write is still masked
    shard.abort(b)
    assert _rows(shard)[LO + 2]["n"] == 2 and shard.leftovers()["undo"] == 0


def test_prepared_escalated_transaction_survives_a_restart(tmp_path):
    path = tmp_path / "s.sqlite"
    shard = _shard(path, 5)
    ref = TxnRef("t", 10)
    shard.apply(ref, _update(2, "n >= 0", {"n": "=n + 1"}))
    assert shard.prepare(ref)
    shard.close()
    again = SqliteShard(path, name="s", lock_timeout=0.5)
    assert [d["txn"] for d in again.in_doubt] == ["t"]
    with pytest.raises(LockConflict):  # its items are locked again until the decision
        again.apply(TxnRef("late", 20), UpdateItems(3, CTX, ids=[LO + 1], patch={"n": 0}, schema=SCHEMA))
    again.abort(TxnRef("late", 20))
    again.commit(TxnRef("t", 10, again.epoch))
    assert _rows(again)[LO + 1]["n"] == 2 and again.locks.lock_count() == 0


def test_an_escalated_update_after_item_writes_of_the_same_transaction(tmp_path):
    bulk, items = _pair(tmp_path)
    before = _rows(bulk)
    for shard in (bulk, items):
        ref = TxnRef("t", 10)
        shard.apply(ref, UpdateItems(2, CTX, ids=[LO + 2], patch={"n": 1000}, schema=SCHEMA))
        images = shard.apply(ref, _update(3, "n >= 10", {"n": "=n + 1"}))  # matches the item above too
        assert images.affected == COUNT - 10 + 1
        assert dict(images.items)[LO + 2] == orjson.dumps({**before[LO + 2], "n": 1000}).decode()
        stored = {k: v for chunk in shard.before_images("t") for k, v in chunk.items}
        assert stored[LO + 2] == orjson.dumps(before[LO + 2]).decode()  # the first before-image stays
        shard.abort(ref)
        assert _rows(shard) == before
        ref = TxnRef("t2", 11)
        shard.apply(ref, UpdateItems(4, CTX, ids=[LO + 2], patch={"n": 1000}, schema=SCHEMA))
        shard.apply(ref, _update(5, "n >= 10", {"n": "=n + 1"}))
        assert shard.prepare(ref)
        shard.commit(ref)
    assert _rows(bulk) == _rows(items) and _rows(bulk)[LO + 2]["n"] == 1001


@pytest.mark.parametrize("ids_kind", ["range", "list"])
@pytest.mark.parametrize("encoded", [False, True])
def test_a_create_chunk_is_inserted_in_one_statement_row_by_row_exactly(tmp_path, ids_kind, encoded):
    """A create chunk reaches SQLite as one JSON array split by ``json_each`` (ids from a
    range, or ``[id, row]`` pairs for a list of ids, as when invalid rows were left out): each
    row is stored under its own id, byte for byte as ``orjson`` encodes it alone, and rows
    that fail validation are reported and not written."""
    shard = SqliteShard(tmp_path / "s.sqlite", name="s", lock_timeout=1.0)
    odd = [{"n": 1e-7, "tag": "ü\u2028\"q\\", "pos": 2 ** 62}, {"n": -0.0, "tag": "t", "pos": 1.5e300},
           {"n": 3, "tag": "x", "pos": -1}, {"n": 4}]  # the third breaks pos >= 0
    ids = range(LO + 10, LO + 50, 10) if ids_kind == "range" else [LO + 3, LO + 7, LO + 8, LO + 20]
    if encoded:  # rows already encoded by the planner (no schema): nothing is validated
        chunk = CreateItems(1, ids, [orjson.dumps(v).decode() for v in odd])
    else:
        chunk = CreateItems(1, ids, odd, schema=SCHEMA)
    ref = TxnRef("create", 5)
    images = shard.apply(ref, chunk)
    kept = [i for i in range(4) if encoded or i != 2]
    assert [e["index"] for e in images.errors] == ([] if encoded else [2])
    assert images.affected == len(kept)
    with sqlite3.connect(tmp_path / "s.sqlite") as conn:
        stored = dict(conn.execute("SELECT id, vals FROM items ORDER BY id"))
    assert stored == {list(ids)[i]: orjson.dumps(odd[i]).decode() for i in kept}
    shard.abort(ref)
    shard.close()
