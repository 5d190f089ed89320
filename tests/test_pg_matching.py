"""Items selected by a query at a PostgreSQL participant (``PgLocking.matching``): locked in one
statement that does not wait when no other transaction holds any of them, and, when one does,
the free ones locked at once and the held ones waited for, their query checked again on the
version their holder leaves.

Each test has a schema of its own on the shared server (``tests/pg_schema.py``) and must leave no
prepared transaction behind.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
from pg_schema import DSN, SKIP_REASON, own_schema

from batchray.core.txn.chunks import CreateItems, TxnRef, UpdateItems, context_range

if not DSN:
    pytest.skip(SKIP_REASON, allow_module_level=True)

psycopg = pytest.importorskip("psycopg")

CTX = 1
LO, _ = context_range(CTX)
SCHEMA = {"name": "T", "collections": [{"name": "C", "attrs": [{"name": "n", "type": "numeric"}]}]}
COUNT = 20


@pytest.fixture
def participant():
    from batchray.core.storage.postgres.participant import PgParticipant
    from batchray.core.storage.postgres.store import PgStore

    with own_schema("pgmatch") as schema:
        shard = PgParticipant(PgStore(schema.url), "shard-0000", lock_timeout=10.0)
        seed = TxnRef("seed", 1)
        shard.apply(seed, CreateItems(1, [LO + i for i in range(COUNT)],
                                      [orjson.dumps({"n": i}).decode() for i in range(COUNT)]))
        assert shard.prepare(seed)
        shard.commit(seed)
        yield shard
        shard.close()
    assert not schema.left


def _values(shard) -> dict[int, float]:
    return {i - LO: orjson.loads(v)["n"] for i, v in shard.read_items(CTX)}


def _commit(shard, ref: TxnRef) -> None:
    assert shard.prepare(ref)
    shard.commit(ref)


def test_a_query_whose_items_no_one_holds_updates_them_all(participant):
    ref = TxnRef("t-free", 10)
    images = participant.apply(ref, UpdateItems(2, CTX, where="n < 10", patch={"n": "=n + 100"}, schema=SCHEMA))
    assert images.affected == 10 and not images.errors
    _commit(participant, ref)
    assert _values(participant) == {i: (i + 100 if i < 10 else i) for i in range(COUNT)}


@pytest.mark.parametrize("holder_leaves", [3, 50], ids=["no-longer-matching", "still-matching"])
def test_a_held_item_is_waited_for_and_checked_again(participant, holder_leaves):
    """An older transaction's query matches (in the committed data) an item a younger one
    holds (updated, not yet prepared): the others are locked at once, the held one is waited
    for (wait-die: the older waits), and it is updated only if it still matches once the
    holder has committed."""
    holder = TxnRef("t-young", 20)
    held = participant.apply(holder, UpdateItems(2, CTX, ids=[LO + 15], patch={"n": 40}, schema=SCHEMA))
    assert held.affected == 1
    older = TxnRef("t-old", 10)
    with ThreadPoolExecutor(1) as pool:
        query = pool.submit(participant.apply, older,
                            UpdateItems(3, CTX, where="n >= 10", patch={"n": "=n * 2"}, schema=SCHEMA))
        time.sleep(1.0)
        assert not query.done(), f"the query did not wait for the held item: {query.exception() or query.result()}"
        participant.apply(holder, UpdateItems(4, CTX, ids=[LO + 15], patch={"n": holder_leaves}, schema=SCHEMA))
        _commit(participant, holder)
        images = query.result(timeout=20)
    matched = [i for i in range(10, COUNT) if i != 15] + ([15] if holder_leaves >= 10 else [])
    assert images.affected == len(matched) and not images.errors
    _commit(participant, older)
    expected = {i: i for i in range(COUNT)}
    expected[15] = holder_leaves
    for i in matched:
        expected[i] *= 2
    assert _values(participant) == expected
