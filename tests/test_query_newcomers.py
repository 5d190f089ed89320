"""An update selected by a query that waited for another batch's items sees what that batch
committed: the items it made match are updated too (both stores, at the participant).

An older transaction's query matched one item that a younger one held (wait-die: the older
waits); the younger changed that item and made another match, then committed. The older one
then updated the item it waited for, over the younger's value, and skipped the one that had
come to match: a result of neither order (run after the younger, it updates both; before it,
its update of the first is overwritten). It now takes every item that matches once it has
waited, as if it ran after the batches it waited for.
"""
from __future__ import annotations

import orjson
import pytest

from batchray.core.txn.chunks import CreateItems, TxnRef, UpdateItems, context_range
from batchray.testing.conformance import apply_in_background
from batchray.testing.conformance_stores import STORE_KINDS, store_for

CTX = 1
LO, _ = context_range(CTX)


@pytest.fixture(params=STORE_KINDS)
def store(request, tmp_path):
    harness = store_for(request.param, tmp_path)
    yield harness
    harness.close()


def _commit(participant, ref: TxnRef) -> None:
    assert participant.prepare(ref)
    participant.commit(ref)


def test_a_query_that_waited_updates_the_items_the_batch_it_waited_for_made_match(store):
    participant = store.open(lock_timeout=10.0)
    seed = TxnRef("seed", 1)
    participant.apply(seed, CreateItems(1, [LO + 1, LO + 2, LO + 3],
                                        [orjson.dumps({"mass": m}).decode() for m in (1, 2, 3)]))
    _commit(participant, seed)
    younger, older = TxnRef("younger", 20), TxnRef("older", 10)
    participant.apply(younger, UpdateItems(2, CTX, ids=[LO + 3, LO + 1], patch={"mass": 30}))
    thread, outcome = apply_in_background(participant, older, UpdateItems(3, CTX, where="mass >= 3",
                                                                          patch={"tag": "old"}))
    thread.join(0.5)
    assert thread.is_alive(), f"the older transaction did not wait: {outcome}"
    _commit(participant, younger)  # item 1 now matches the query too
    thread.join(10)
    assert not thread.is_alive() and "error" not in outcome, outcome
    assert outcome["images"].affected == 2, outcome["images"]
    _commit(participant, older)
    values = {i - LO: orjson.loads(v) for i, v in participant.read_items(CTX)}
    assert values == {1: {"mass": 30, "tag": "old"}, 2: {"mass": 2}, 3: {"mass": 30, "tag": "old"}}


def test_a_sqlite_newcomer_held_by_another_is_a_conflict_that_leaves_no_lock_behind(tmp_path, monkeypatch):
    """Under the shard's mutex a newcomer is not waited for: the chunk is refused with a
    LockConflict (applied again later, its lock plan waiting), and a transaction with nothing
    applied on the shard keeps none of the locks it took."""
    from batchray.core.storage.sqlite.shard import SqliteShard
    from batchray.core.txn.locks import SHARED
    from batchray.errors import LockConflict

    shard = SqliteShard(tmp_path / "s.sqlite", name="s", lock_timeout=1.0)
    seed = TxnRef("seed", 1)
    shard.apply(seed, CreateItems(1, [LO + 1, LO + 2], [orjson.dumps({"mass": m}).decode() for m in (1, 2)]))
    _commit(shard, seed)
    holder = TxnRef("holder", 30)
    shard.apply(holder, UpdateItems(2, CTX, ids=[LO + 2], patch={"tag": "h"}))
    query = UpdateItems(3, CTX, where="mass >= 1", patch={"tag": "q"})
    planned = SqliteShard._lock_plan
    with monkeypatch.context() as patched:  # as if item 2 came to match after the plan was made
        patched.setattr(SqliteShard, "_lock_plan",
                        lambda self, ref, chunk: [([("ctx", CTX)], SHARED), ([LO + 1], "X")])
        with pytest.raises(LockConflict):
            shard.apply(TxnRef("query", 10), query)
    assert shard.locks.held_by("query") == set() and shard.pending() == [{"txn": "holder", "state": "active", "ts": 30}]
    _commit(shard, holder)
    monkeypatch.setattr(SqliteShard, "_lock_plan", planned)
    assert shard.apply(TxnRef("query", 10), query).affected == 2
    _commit(shard, TxnRef("query", 10))
    assert [orjson.loads(v)["tag"] for _, v in shard.read_items(CTX)] == ["q", "q"]
    shard.close()
