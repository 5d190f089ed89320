"""One conformance suite for every store: the SQLite shard files and PostgreSQL.

Each test runs once per store (``store`` below): on SQLite always, on PostgreSQL when
``BATCHRAY_TEST_PG_DSN`` names a server (``eval "$(bash .ci/postgres.sh start)"``; CI does it),
else that run is skipped and says why. Every PostgreSQL run has a schema of its own, dropped at
the end, and must leave no prepared transaction behind.

What is checked, through the participant protocol (hand-made chunks, explicit restarts) and
through :class:`~batchray.core.run.engine.LocalEngine` (planning, two-phase commit, reads):

* operations: create, update by query and by expression, delete, schema rename and retype,
  undo of a batch that kept backups;
* atomicity: one bad item rolls the whole batch back on every shard;
* isolation: no dirty read, active or prepared; wait-die (a younger requester fails with
  LockConflict at once, an older one waits for the holder's commit);
* recovery: a participant reopened after prepare can still commit or abort; work that never
  voted is aborted (presumed abort) and a late apply of it refused; in-doubt work keeps its
  locks;
* idempotency: every step delivered twice, or again after a restart, gives the same result;
  stale epochs change nothing.
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Optional

import orjson
import pytest

from batchray.core.txn.chunks import CreateItems, DeleteItems, TxnRef, UpdateItems, context_range
from batchray.core.run.engine import LocalEngine
from batchray.core.storage.store import CATALOG
from batchray.errors import InDoubtError, LockConflict, StaleEpochError, TransactionAborted

CTX = 1
LO, HI = context_range(CTX)
ITEMS = {LO + 1: {"name": "a", "mass": 1}, LO + 2: {"name": "b", "mass": 2}, LO + 3: {"name": "c", "mass": 3}}
PG_DSN = os.environ.get("BATCHRAY_TEST_PG_DSN")
NO_PG = "PostgreSQL runs need a server: set BATCHRAY_TEST_PG_DSN (eval \"$(bash .ci/postgres.sh start)\")"


# -- the stores ------------------------------------------------------------------------------

class SqliteHarness:
    kind = "sqlite"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root / "store")

    def participant(self, name: str = "s", *, lock_timeout: float = 2.0, recover: bool = True):
        from batchray.core.storage.sqlite.shard import SqliteShard

        return SqliteShard(self.root / f"{name}.sqlite", name=name, lock_timeout=lock_timeout, recover=recover)

    def finish(self) -> None:
        pass


class PgHarness:
    """A schema of its own; every participant opened as if by a new process (its own store
    object, its own connections)."""

    kind = "postgresql"

    def __init__(self, dsn: str) -> None:
        self.schema = f"conf_{uuid.uuid4().hex[:12]}"
        self.dsn = dsn
        self.url = f"{dsn}{'&' if '?' in dsn else '?'}schema={self.schema}"
        self.stores: list[Any] = []

    def participant(self, name: str = "s", *, lock_timeout: float = 2.0, recover: bool = True):
        from batchray.core.storage.postgres.participant import PgParticipant
        from batchray.core.storage.postgres.store import PgStore

        store = PgStore(self.url)
        self.stores.append(store)
        return PgParticipant(store, name, lock_timeout=lock_timeout, recover=recover)

    def prepared(self) -> list[str]:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return [g for (g,) in conn.execute(
                "SELECT gid FROM pg_prepared_xacts WHERE starts_with(gid, %s)", (f"batchray:{self.schema}:",))]

    def finish(self) -> None:
        import psycopg

        left = self.prepared()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for gid in left:  # keep the server clean whatever the test did
                conn.execute(f"ROLLBACK PREPARED '{gid}'")
            for store in self.stores:
                store.close()
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        assert not left, f"prepared transactions left behind: {left}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    if request.param == "postgresql":
        if not PG_DSN:
            pytest.skip(NO_PG)
        harness: Any = PgHarness(PG_DSN)
    else:
        harness = SqliteHarness(tmp_path)
    opened: list[Any] = []
    original = harness.participant

    def tracked(*args, **kwargs):
        participant = original(*args, **kwargs)
        opened.append(participant)
        return participant

    harness.participant = tracked
    yield harness
    for participant in opened:
        participant.close()
    harness.finish()


# -- helpers ----------------------------------------------------------------------------------

def _create(chunk_id: int, items: dict[int, dict]) -> CreateItems:
    return CreateItems(chunk_id, list(items), [orjson.dumps(v).decode() for v in items.values()])


def _update(chunk_id: int, ids: list[int], patch: dict) -> UpdateItems:
    return UpdateItems(chunk_id, CTX, ids=ids, patch=patch)


def _delete(chunk_id: int, ids: list[int]) -> DeleteItems:
    return DeleteItems(chunk_id, CTX, ids=ids)


def _seeded(store, **kwargs):
    participant = store.participant(**kwargs)
    ref = TxnRef("seed", 1)
    participant.apply(ref, _create(1, ITEMS))
    assert participant.prepare(ref)
    participant.commit(ref)
    return participant


def _visible(participant, own: Optional[str] = None) -> dict[int, dict]:
    return {i: orjson.loads(v) for i, v in participant.read_items(CTX, own_txn=own)}


def _clear(participant) -> None:
    left = participant.leftovers()
    assert (left["txns"], left["undo"], left["created"], left["applied"], left.get("prepared", 0)) == (0, 0, 0, 0, 0), left
    assert participant.pending() == []


def _same_images(a, b) -> bool:
    return (a.chunk_id, sorted(a.created), sorted(a.items), sorted(a.docs), a.affected) == (
        b.chunk_id, sorted(b.created), sorted(b.items), sorted(b.docs), b.affected)


COLLECTIONS = [{"name": "People", "attrs": [
    {"name": "name"}, {"name": "age", "type": "numeric"}, {"name": "balance", "type": "numeric", "min": 0}]}]


def _people(n: int) -> list[dict]:
    return [{"name": f"p{i}", "age": i % 50, "balance": i} for i in range(n)]


@pytest.fixture
def engine(store):
    with LocalEngine(store.url, shards=3, lock_timeout=2.0) as eng:
        assert eng.create_data_context("People", COLLECTIONS).success
        assert eng.create_items("People", "People", _people(60)).success
        yield eng
        for participant in eng.participants.values():
            _clear(participant)


def _values(engine) -> dict[int, dict]:
    return {item["id"]: item["values"] for item in engine.get_items("People")}


# -- operations ---------------------------------------------------------------------------------

def test_create_update_by_query_and_expression_and_delete(engine):
    model = _values(engine)
    assert len(model) == 60 and engine.count_items("People") == 60
    result = engine.update_items("People", [{"selector": {"query": "age >= 40"}, "values": {"balance": "=balance * 2 + age"}}])
    assert result.success and result.items_updated == sum(v["age"] >= 40 for v in model.values())
    for values in model.values():
        if values["age"] >= 40:
            values["balance"] = values["balance"] * 2 + values["age"]
    first = min(model)
    assert engine.update_items("People", [{"selector": {"itemId": first}, "values": {"name": "renamed"}}]).success
    model[first]["name"] = "renamed"
    assert _values(engine) == model
    assert engine.count_items("People", "age < 10") == sum(v["age"] < 10 for v in model.values())
    victim = max(i for i, v in model.items() if v["age"] >= 10)
    deleted = engine.delete_items("People", [{"query": "age < 10"}, {"itemId": victim}])
    assert deleted.success, deleted.error
    model = {i: v for i, v in model.items() if v["age"] >= 10 and i != victim}
    assert _values(engine) == model
    assert [item["id"] for item in engine.get_items("People", "age >= 45", offset=2, limit=3)] == \
        sorted(i for i, v in model.items() if v["age"] >= 45)[2:5]


def test_two_updates_of_one_item_in_one_batch_compose(engine):
    item_id, values = next(iter(_values(engine).items()))
    result = engine.update_items("People", [
        {"selector": {"itemId": item_id}, "values": {"balance": "=balance + 1"}},
        {"selector": {"itemId": item_id}, "values": {"balance": "=balance * 2", "name": "renamed"}},
    ])
    assert result.success, result.error
    assert _values(engine)[item_id] == {**values, "balance": (values["balance"] + 1) * 2, "name": "renamed"}


def test_schema_rename_and_retype_rewrite_every_item(engine):
    before = _values(engine)
    result = engine.schema_operations("People", [
        {"action": "update", "target": "attribute", "attribute": "age", "spec": {"name": "years", "type": "categorical"}},
        {"action": "update", "target": "attribute", "attribute": "name", "spec": {"name": "label"}},
    ])
    assert result.success, result.error
    renamed = {"age": "years", "name": "label"}
    assert _values(engine) == {i: {renamed.get(k, k): v for k, v in values.items()} for i, values in before.items()}
    attrs = engine.catalog.context("People")[1].attributes()
    assert {"years", "label"} <= set(attrs) and not {"age", "name"} & set(attrs)


def test_a_batch_with_backups_can_be_undone(engine):
    before = _values(engine)
    plan = engine.planner.update_items("People", [{"selector": {"query": "age < 5"}, "values": {"balance": "=balance + 1000"}}])
    plan.backup = True
    updated = engine.run(plan)
    assert updated.success and updated.items_updated == sum(v["age"] < 5 for v in before.values())
    undone = engine.rollback_batch(updated.transaction_id)
    assert undone.success, undone.error
    assert _values(engine) == before


# -- atomicity ----------------------------------------------------------------------------------

def test_one_bad_item_rolls_back_everything(engine):
    before = _values(engine)

    def rows():  # a stream: the workers validate, so the bad row is found while others are written
        for i in range(3000):
            yield {"name": f"n{i}", "age": "old" if i == 2500 else i % 50, "balance": i}

    result = engine.create_items("People", "People", rows(), batch_size=500)
    assert not result.success and result.state.value == "rolled_back"
    assert any(e.index == 2500 for e in result.errors)
    assert _values(engine) == before

    # an expression that breaks a constraint on one item: nothing of the update stays
    update = engine.update_items("People", [{"selector": {"query": "age >= 0"}, "values": {"balance": "=balance - 3"}}])
    assert not update.success and update.state.value == "rolled_back"
    assert _values(engine) == before


# -- isolation ----------------------------------------------------------------------------------

def test_no_dirty_read_while_active_or_prepared(store):
    participant = _seeded(store)
    ref = TxnRef("writer", 10)
    participant.apply(ref, _create(2, {LO + 50: {"name": "new", "mass": 99}}))
    participant.apply(ref, _update(3, [LO + 1], {"mass": 99}))
    participant.apply(ref, _delete(4, [LO + 2]))
    own = {LO + 1: {"name": "a", "mass": 99}, LO + 3: ITEMS[LO + 3], LO + 50: {"name": "new", "mass": 99}}
    reader = store.participant(recover=False)  # another process reading the same store
    for phase in ("active", "prepared"):
        for who in (participant, reader):
            for other in (None, "someone-else"):
                assert _visible(who, own=other) == ITEMS, (phase, other)
                assert [i for i, _ in who.read_items(CTX, "mass == 99", own_txn=other)] == []
                assert [i for i, _ in who.read_items(CTX, ids=[LO + 2, LO + 50], own_txn=other)] == [LO + 2]
            assert who.count_items(CTX) == 3 and who.count_items(CTX, "mass == 99") == 0
        if phase == "active":
            assert _visible(participant, own="writer") == own
            assert [i for i, _ in participant.read_items(CTX, "mass == 99", own_txn="writer")] == [LO + 1, LO + 50]
            assert participant.prepare(ref)
    participant.commit(ref)
    assert _visible(participant) == own and _visible(reader) == own
    _clear(participant)


def test_wait_die(store):
    participant = _seeded(store, lock_timeout=5.0)
    older, younger = TxnRef("older", 10), TxnRef("younger", 20)
    participant.apply(older, _update(2, [LO + 1], {"mass": 10}))
    started = time.monotonic()
    with pytest.raises(LockConflict):
        participant.apply(younger, _update(3, [LO + 1], {"mass": 20}))
    assert time.monotonic() - started < 1.0, "the younger transaction waited instead of dying"
    assert participant.before_images("younger") == []
    participant.abort(younger)
    assert participant.prepare(older)
    participant.commit(older)

    young, old = TxnRef("young", 40), TxnRef("old", 30)
    participant.apply(young, _update(4, [LO + 2], {"mass": 7}))
    outcome: dict = {}

    def waiter():
        try:
            outcome["images"] = participant.apply(old, _update(5, [LO + 2], {"mass": "=mass * 10"}))
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            outcome["error"] = exc

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    thread.join(0.4)
    assert thread.is_alive(), f"the older transaction did not wait: {outcome}"
    assert participant.prepare(young)
    participant.commit(young)
    thread.join(4.0)
    assert not thread.is_alive() and "error" not in outcome, outcome
    # it ran after the younger one committed, over the committed value
    assert outcome["images"].items == [(LO + 2, orjson.dumps({"name": "b", "mass": 7}).decode())]
    assert participant.prepare(old)
    participant.commit(old)
    assert _visible(participant)[LO + 2]["mass"] == 70
    assert participant.locks.lock_count() == 0
    _clear(participant)


def test_engine_reads_see_batches_whole(engine):
    """Concurrent readers through the engine never see part of a batch (the commit gate)."""
    base = engine.count_items("People")
    seen: set[int] = set()
    stop = threading.Event()

    def read():
        while not stop.is_set():
            seen.add(engine.count_items("People"))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    for _ in range(5):
        assert engine.create_items("People", "People", _people(90)).success
    stop.set()
    thread.join(10)
    assert seen <= {base + 90 * k for k in range(6)}, sorted(seen)


def _acquires(hold, timeout: float) -> bool:
    """Whether ``hold()`` (a gate's context manager) is entered within ``timeout`` seconds, from
    another thread (a flock of another open file, or another PostgreSQL session)."""
    entered = threading.Event()
    leave = threading.Event()

    def take():
        with hold():
            entered.set()
            leave.wait(30)

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    got = entered.wait(timeout)
    leave.set()
    if not got:
        thread.join(0)  # it enters once the holder lets go, then leaves at once
    return got


@pytest.mark.parametrize("touched, items_blocked, catalog_blocked", [
    ({"shard-0000"}, True, False),              # an item batch: schema reads (planning) go on
    ({CATALOG}, False, True),                   # a new data context: item reads go on
    ({CATALOG, "shard-0001"}, True, True),      # a schema change that rewrites items
    (None, True, True),                         # recovery: everything
])
def test_phase_2_holds_off_only_the_readers_of_what_it_touched(engine, touched, items_blocked, catalog_blocked):
    gate = engine.backend.gate()
    with gate.exclusive(touched):
        assert _acquires(lambda: gate.shared(), 0.5) is not items_blocked
        assert _acquires(lambda: gate.shared(CATALOG), 0.5) is not catalog_blocked
    assert _acquires(lambda: gate.shared(), 5) and _acquires(lambda: gate.shared(CATALOG), 5)


def test_only_an_item_batch_left_in_phase_2_makes_item_reads_in_doubt(engine):
    """A decided batch not yet finished everywhere (phase 2 interrupted) makes item reads
    refuse with InDoubtError, unless it touched the catalog alone: item reads do not hold the
    catalog's gate, and such a batch changed no item."""
    count = engine.count_items("People")
    engine.log.decide("catalog-only", {CATALOG: "commit"})
    try:
        assert engine.count_items("People") == count
    finally:
        engine.log.mark_done("catalog-only")
    engine.log.decide("with-a-shard", {CATALOG: "commit", "shard-0001": "commit"})
    try:
        with pytest.raises(InDoubtError):
            engine.count_items("People")
    finally:
        engine.log.mark_done("with-a-shard")
    assert engine.count_items("People") == count


# -- recovery -----------------------------------------------------------------------------------

@pytest.mark.parametrize("decision", ["commit", "abort"])
def test_a_participant_reopened_after_prepare_can_still_decide(store, decision):
    participant = _seeded(store)
    committed = _visible(participant)
    ref = TxnRef("t1", 10)
    participant.apply(ref, _update(2, [LO + 1], {"mass": 5}))
    participant.apply(ref, _create(3, {LO + 9: {"name": "z"}}))
    assert participant.prepare(ref)
    participant.close()

    participant = store.participant()  # a restart
    assert participant.in_doubt == [{"txn": "t1", "ts": 10, "shard": "s"}]
    assert participant.pending() == [{"txn": "t1", "state": "prepared", "ts": 10}]
    assert _visible(participant) == committed  # still invisible while in doubt
    with pytest.raises(LockConflict):  # and still locked: a younger writer dies
        participant.apply(TxnRef("t2", 11), _update(4, [LO + 1], {"mass": 6}))
    getattr(participant, decision)(ref)
    participant.close()

    participant = store.participant()  # a restart again: the decision is delivered again
    assert participant.in_doubt == []
    getattr(participant, decision)(ref)
    assert participant.outcome("t1") == ("committed" if decision == "commit" else "aborted")
    if decision == "commit":
        assert _visible(participant) == {**committed, LO + 1: {"name": "a", "mass": 5}, LO + 9: {"name": "z"}}
    else:
        assert _visible(participant) == committed
    _clear(participant)


def test_presumed_abort_of_unvoted_work(store):
    participant = _seeded(store)
    active = TxnRef("active", 10)
    participant.apply(active, _update(2, [LO + 1], {"mass": 50}))
    participant.apply(active, _create(3, {LO + 20: {"name": "new"}}))
    prepared = TxnRef("prepared", 11)
    participant.apply(prepared, _update(4, [LO + 2], {"mass": 60}))
    participant.apply(prepared, _delete(5, [LO + 3]))
    assert participant.prepare(prepared)
    participant.close()  # the process ends: its unvoted work with it

    participant = store.participant(lock_timeout=0.3)
    assert participant.in_doubt == [{"txn": "prepared", "ts": 11, "shard": "s"}]
    assert participant.outcome("active") == "aborted"
    assert participant.pending() == [{"txn": "prepared", "state": "prepared", "ts": 11}]
    assert _visible(participant) == ITEMS
    # the aborted transaction's item is free; the in-doubt one's are not
    free = TxnRef("free", 12)
    participant.apply(free, _update(6, [LO + 1], {"mass": 1}))
    participant.abort(free)
    with pytest.raises(LockConflict):
        participant.apply(TxnRef("younger", 13), _update(7, [LO + 2], {"mass": 1}))
    started = time.monotonic()
    with pytest.raises(LockConflict):
        participant.apply(TxnRef("older", 9), _update(8, [LO + 3], {"mass": 1}))
    assert time.monotonic() - started >= 0.25, "the older transaction did not wait for the in-doubt one"
    with pytest.raises(TransactionAborted):  # a late apply of the aborted transaction
        participant.apply(active, _update(9, [LO + 1], {"mass": 1}))
    participant.commit(prepared)
    assert _visible(participant) == {LO + 1: ITEMS[LO + 1], LO + 2: {"name": "b", "mass": 60}}
    _clear(participant)


def test_an_engine_restarted_after_the_decision_finishes_the_batch(store):
    """Decided, logged, not delivered: a new engine on the store commits it at every shard."""
    with LocalEngine(store.url, shards=2) as first:
        assert first.create_data_context("People", COLLECTIONS).success
        plan = first.planner.create_items("People", "People", _people(40))
        txn, ts, _ = first.executor.begin(plan.kind)
        first.driver.finish = lambda *args, **kwargs: ["shard-0000", "shard-0001"]  # phase 2 never happens
        result = first.executor.execute(txn, ts, plan)
        assert result.transaction_id == txn
    with LocalEngine(store.url) as second:
        assert second.count_items("People") == 40
        assert second.log.unfinished() == ([], [])
        for participant in second.participants.values():
            _clear(participant)


# -- idempotency --------------------------------------------------------------------------------

def test_apply_twice_returns_the_same_images_and_writes_once(store):
    participant = _seeded(store)
    ref = TxnRef("t1", 10)
    chunk = _update(2, [LO + 1, LO + 2], {"mass": "=mass + 100"})
    first = participant.apply(ref, chunk)
    second = participant.apply(ref, chunk)
    assert _same_images(first, second)
    assert sorted(first.items) == [(LO + 1, orjson.dumps(ITEMS[LO + 1]).decode()),
                                   (LO + 2, orjson.dumps(ITEMS[LO + 2]).decode())]
    assert _visible(participant, own="t1")[LO + 1]["mass"] == 101  # the expression ran once
    created = participant.apply(ref, _create(3, {LO + 10: {"name": "x"}}))
    again = participant.apply(ref, _create(3, {LO + 10: {"name": "x"}}))
    assert _same_images(created, again) and created.created == [(LO + 10, LO + 10, 1)]
    assert participant.prepare(ref) and participant.prepare(ref)
    assert participant.pending() == [{"txn": "t1", "state": "prepared", "ts": 10}]
    participant.commit(ref)
    participant.commit(ref)
    assert _visible(participant)[LO + 1]["mass"] == 101 and LO + 10 in _visible(participant)
    _clear(participant)


@pytest.mark.parametrize("decision", ["commit", "abort"])
@pytest.mark.parametrize("prepared", [True, False], ids=["prepared", "active"])
def test_decision_twice(store, decision, prepared):
    participant = _seeded(store)
    committed = _visible(participant)
    ref = TxnRef("t1", 10)
    participant.apply(ref, _update(2, [LO + 1], {"mass": 5}))
    participant.apply(ref, _delete(3, [LO + 2]))
    participant.apply(ref, _create(4, {LO + 9: {"name": "z"}}))
    if prepared:
        assert participant.prepare(ref)
    getattr(participant, decision)(ref)
    once = _visible(participant)
    getattr(participant, decision)(ref)
    assert _visible(participant) == once
    assert participant.outcome("t1") == ("committed" if decision == "commit" else "aborted")
    if decision == "abort":
        assert once == committed
    else:
        assert once == {LO + 1: {"name": "a", "mass": 5}, LO + 3: ITEMS[LO + 3], LO + 9: {"name": "z"}}
    for late in (_update(5, [LO + 3], {"mass": 6}), _create(6, {LO + 11: {"n": 1}})):
        with pytest.raises(TransactionAborted):
            participant.apply(ref, late)
    _clear(participant)


def test_prepare_of_unknown_work_votes_no_and_refuses_a_late_apply(store):
    participant = _seeded(store)
    ref = TxnRef("lost", 10)
    assert participant.prepare(ref) is False
    assert participant.prepare(ref) is False
    with pytest.raises(TransactionAborted):
        participant.apply(ref, _update(2, [LO + 1], {"mass": 5}))
    participant.abort(ref)
    assert participant.outcome("lost") == "aborted"
    assert _visible(participant) == ITEMS
    _clear(participant)


def test_stale_epochs_change_nothing(store):
    participant = _seeded(store)
    assert participant.claim(5) == 5
    with pytest.raises(StaleEpochError):
        participant.claim(4)
    assert participant.epoch == 5
    stale = TxnRef("old-owner", 10, epoch=4)
    with pytest.raises(StaleEpochError) as info:
        participant.apply(stale, _update(2, [LO + 1], {"mass": 5}))
    assert info.value.retryable and info.value.to_dict()["details"]["current"] == 5
    with pytest.raises(StaleEpochError):
        participant.prepare(stale)
    assert _visible(participant) == ITEMS and participant.pending() == []

    ref = TxnRef("t1", 11, epoch=5)
    participant.apply(ref, _update(3, [LO + 1], {"mass": 7}))
    assert participant.prepare(ref)
    for step in ("apply", "prepare", "commit", "abort"):
        late = TxnRef("t1", 11, epoch=4)
        with pytest.raises(StaleEpochError):
            if step == "apply":
                participant.apply(late, _update(4, [LO + 2], {"mass": 8}))
            else:
                getattr(participant, step)(late)
        assert participant.pending() == [{"txn": "t1", "state": "prepared", "ts": 11}], step
    with pytest.raises(LockConflict):  # the in-doubt item is still locked
        participant.apply(TxnRef("t2", 12, epoch=5), _update(5, [LO + 1], {"mass": 9}))
    participant.commit(ref)
    assert _visible(participant)[LO + 1]["mass"] == 7
    assert participant.claim_next() == 6
    _clear(participant)
