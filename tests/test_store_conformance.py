"""One conformance suite for every store: the SQLite shard files and PostgreSQL.

Each test runs once per store (``store`` below): on SQLite always, on PostgreSQL when
``BATCHRAY_TEST_PG_DSN`` names a server (``eval "$(bash .ci/postgres.sh start)"``; CI does it),
else that run is skipped and says why. Every PostgreSQL run has a schema of its own, dropped at
the end, and must leave no prepared transaction behind.

What is checked here, through the in-process runtime (:class:`~batchray.core.run.local.LocalRuntime`) (planning,
two-phase commit, reads) on a whole store:

* operations: create, update by query and by expression, delete, schema rename and retype,
  undo of a batch that kept backups, and a drop of those backups (on every shard or none);
* atomicity: one bad item rolls the whole batch back on every shard;
* isolation: readers see batches whole (the commit gates);
* recovery: an engine restarted after a decision finishes the batch.

The participant protocol itself (steps delivered twice, refusals, stale epochs, recovery of a
participant, no dirty reads, wait-die) is :mod:`batchray.testing.conformance`'s suite, run on
both stores by tests/test_participant_protocol.py.
"""
from __future__ import annotations

import threading
import time

import pytest

from batchray.core.model.batch import RunOptions
from local_runtime import Client, local_client
from batchray.core.storage.store import CATALOG
from batchray.errors import InDoubtError, SchemaError, ValidationError
from batchray.testing.conformance import assert_clear
from batchray.testing.conformance_stores import STORE_KINDS, store_for


# -- the stores ------------------------------------------------------------------------------

@pytest.fixture(params=STORE_KINDS)
def store(request, tmp_path):
    harness = store_for(request.param, tmp_path)
    yield harness
    harness.close()


# -- helpers ----------------------------------------------------------------------------------

COLLECTIONS = [{"name": "People", "attrs": [
    {"name": "name"}, {"name": "age", "type": "numeric"}, {"name": "balance", "type": "numeric", "min": 0}]}]


def _people(n: int) -> list[dict]:
    return [{"name": f"p{i}", "age": i % 50, "balance": i} for i in range(n)]


@pytest.fixture
def engine(store):
    with local_client(store.url, shards=3, lock_timeout=2.0) as eng:
        assert eng.create_data_context("People", COLLECTIONS).success
        assert eng.create_items("People", "People", _people(60)).success
        yield eng
        for participant in eng.runtime.participants.values():
            assert_clear(participant)


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
    assert engine.count_items("People", query="age < 10") == sum(v["age"] < 10 for v in model.values())
    victim = max(i for i, v in model.items() if v["age"] >= 10)
    deleted = engine.delete_items("People", [{"query": "age < 10"}, {"itemId": victim}])
    assert deleted.success, deleted.error
    model = {i: v for i, v in model.items() if v["age"] >= 10 and i != victim}
    assert _values(engine) == model
    assert [item["id"] for item in engine.get_items("People", query="age >= 45", offset=2, limit=3)] == \
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


def test_a_retype_to_checkbox_rewrites_numbers_that_python_holds_equal_to_booleans(engine):
    # 1 == True and 0 == False in Python: a converted value must still be written
    assert engine.create_data_context("Flags", [{"name": "F", "attrs": [{"name": "name"},
                                                                         {"name": "on", "type": "numeric"}]}]).success
    flags = engine.create_items("Flags", "F", [{"name": "one", "on": 1}, {"name": "zero", "on": 0},
                                               {"name": "float", "on": 1.0}])
    assert flags.success, flags.error
    result = engine.schema_operations("Flags", [
        {"action": "update", "target": "attribute", "attribute": "on", "spec": {"type": "checkbox"}}])
    assert result.success, result.error
    on = {item["values"]["name"]: item["values"]["on"] for item in engine.get_items("Flags")}
    assert on == {"one": True, "zero": False, "float": True} and all(type(v) is bool for v in on.values()), on
    assert engine.count_items("Flags", query="on == true") == 2


def test_a_batch_with_backups_can_be_undone(engine):
    before = _values(engine)
    plan = engine.planner.update_items("People", [{"selector": {"query": "age < 5"}, "values": {"balance": "=balance + 1000"}}])
    plan.backup = True
    updated = engine.run_plan(plan)
    assert updated.success and updated.items_updated == sum(v["age"] < 5 for v in before.values())
    undone = engine.rollback_batch(updated.transaction_id)
    assert undone.success, undone.error
    assert _values(engine) == before


def test_a_rollback_of_a_batch_that_kept_no_backups_changes_nothing_and_leaves_it_completed(engine):
    before = _values(engine)
    updated = engine.update_items("People", [{"selector": {"query": "age < 5"}, "values": {"balance": 0}}])
    assert updated.success
    after = _values(engine)
    refused = engine.rollback_batch(updated.transaction_id)
    assert not refused.success and refused.error["code"] == "NOT_FOUND", refused
    assert engine.status(updated.transaction_id)["state"] == "completed"  # it was not undone
    assert _values(engine) == after != before


def test_dropped_backups_go_from_every_shard_in_one_batch_and_the_batch_can_no_longer_be_undone(engine):
    before = _values(engine)
    raised = engine.update_items("People", [{"selector": {"query": "age < 10"}, "values": {"balance": "=balance + 1"}}],
                                 create_backups=True)
    made = engine.create_items("People", "People", _people(7), create_backups=True)
    assert raised.success and made.success
    after = _values(engine)
    dropped = engine.drop_backups([raised.transaction_id, made.transaction_id])
    assert dropped.success, dropped.error
    assert dropped.results == [{"itemBackupsDropped": raised.items_updated + 7,
                                "batches": [raised.transaction_id, made.transaction_id]}]
    assert dropped.batches_processed == 2 * len(engine.layout.shard_names)  # one chunk per batch and shard
    for batch in (raised, made):
        refused = engine.rollback_batch(batch.transaction_id)
        assert not refused.success and refused.error["code"] == "NOT_FOUND", refused
        assert engine.status(batch.transaction_id)["state"] == "completed"
    assert _values(engine) == after != before
    again = engine.drop_backups(raised.transaction_id)
    assert not again.success and again.error["code"] == "NOT_FOUND"


def test_backups_older_than_an_age_are_dropped_and_an_undo_spends_its_own(engine):
    bump = [{"selector": {"query": "age < 3"}, "values": {"balance": "=balance + 1"}}]
    engine.update_items("People", bump)  # keeps no backups
    old = engine.update_items("People", bump, create_backups=True)
    time.sleep(0.05)
    cutoff = time.time()
    time.sleep(0.05)
    new = engine.update_items("People", bump, create_backups=True)
    undone = engine.update_items("People", bump, create_backups=True)
    assert engine.rollback_batch(undone.transaction_id).success  # its backups went with the undo
    first = engine.drop_backups(older_than=time.time() - cutoff)
    assert first.success and first.results == [{"itemBackupsDropped": old.items_updated,
                                                "batches": [old.transaction_id]}], first
    second = engine.drop_backups(older_than=0)
    assert second.success and second.results == [{"itemBackupsDropped": new.items_updated,
                                                  "batches": [new.transaction_id]}], second
    third = engine.drop_backups(older_than=0)  # nothing left: no error, nothing dropped
    assert third.success and third.results == [{"itemBackupsDropped": 0, "batches": []}], third
    assert engine.rollback_batch(new.transaction_id).error["code"] == "NOT_FOUND"
    with pytest.raises(ValidationError):
        engine.drop_backups([new.transaction_id], older_than=0)
    with pytest.raises(ValidationError):
        engine.drop_backups(older_than=-1)


@pytest.mark.parametrize("seed", range(4))
def test_an_undo_and_a_drop_of_the_same_backups_at_once_undo_all_or_nothing(engine, seed):
    before = _values(engine)
    raised = engine.update_items("People", [{"selector": {"query": "age < 20"}, "values": {"balance": "=balance + 1"}}],
                                 create_backups=True)
    assert raised.success
    after = _values(engine)
    results: dict[str, object] = {}
    go = threading.Barrier(2)

    def run(name, call):
        go.wait()
        results[name] = call(raised.transaction_id)

    threads = [threading.Thread(target=run, args=(name, call)) for name, call in
               (("undo", engine.rollback_batch), ("drop", engine.drop_backups))[::1 if seed % 2 else -1]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    undone = results["undo"]
    assert _values(engine) == (before if undone.success else after), (seed, undone, results["drop"])


def test_a_transaction_that_changed_its_own_new_items_is_undone_without_force(engine):
    # its update and delete of the items it created are its own changes, no later batch's
    before = _values(engine)
    ops = [
        {"id": "make", "type": "data", "operation": "create", "target": "People",
         "data": {"collection": "People", "items": [{"name": f"new{i}", "age": 90, "balance": i} for i in range(4)]}},
        {"id": "raise", "type": "data", "operation": "update", "target": "People", "dependencies": ["make"],
         "data": {"updates": [{"selector": {"query": "age == 90"}, "values": {"balance": "=balance + 100"}}]}},
        {"id": "drop", "type": "data", "operation": "delete", "target": "People", "dependencies": ["raise"],
         "data": {"selectors": [{"query": "name == new0"}]}},
    ]
    done = engine.execute_transaction(ops, {"recoveryStrategy": "rollback", "createBackups": True})
    assert done["success"], done
    assert sorted(v["balance"] for v in _values(engine).values() if v["age"] == 90) == [101, 102, 103]
    undone = engine.rollback_batch(done["transactionIds"][0])
    assert undone.success, undone.error
    assert _values(engine) == before
    # a later batch's change to an item the transaction created is still a conflict
    again = engine.execute_transaction(ops[:2], {"recoveryStrategy": "rollback", "createBackups": True})
    assert again["success"], again
    assert engine.update_items("People", [{"selector": {"query": "name == new1"}, "values": {"balance": 7}}]).success
    refused = engine.rollback_batch(again["transactionIds"][0])
    assert not refused.success and "changed by later batches" in refused.error["message"]


def test_concurrent_schema_changes_all_land_and_a_name_is_created_once(engine):
    # each batch rewrites the whole context document: one planned on a document another batch
    # changed first is refused there and planned again, never written over the other's change
    gate = threading.Barrier(4)
    results: dict = {}

    def add(k: int) -> None:
        gate.wait()
        results[k] = engine.schema_operations("People", [
            {"action": "create", "target": "attribute", "collection": "People", "spec": {"name": f"extra{k}"}}])

    def create(k: int) -> None:
        gate.wait()
        try:
            results[k] = engine.create_data_context("Twice", [{"name": "C", "attrs": [{"name": f"a{k}"}]}])
        except SchemaError as exc:
            results[k] = exc

    for work in (add, create):
        results.clear()
        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        if work is add:
            assert all(r.success for r in results.values()), {k: r.error for k, r in results.items()}
            attrs = engine.catalog.context("People")[1].attributes()
            assert {f"extra{k}" for k in range(4)} <= set(attrs)
        else:
            made = [k for k, r in results.items() if not isinstance(r, SchemaError) and r.success]
            assert len(made) == 1, results
            assert all("already exists" in r.message for r in results.values() if isinstance(r, SchemaError))
            assert list(engine.catalog.context("Twice")[1].attributes()) == [f"a{made[0]}"]


def test_a_catalog_write_planned_on_a_document_since_changed_is_refused(engine):
    from batchray.core.plan.operations import plan_schema

    stale = plan_schema(engine.planner, "People", [
        {"action": "create", "target": "attribute", "collection": "People", "spec": {"name": "late"}}])[0]
    assert engine.schema_operations("People", [
        {"action": "create", "target": "attribute", "collection": "People", "spec": {"name": "first"}}]).success
    refused = engine.run_plan(stale)
    assert not refused.success and refused.error["code"] == "CONFLICT"
    assert refused.error["details"]["catalogChanged"] is True
    attrs = engine.catalog.context("People")[1].attributes()
    assert "first" in attrs and "late" not in attrs


def test_a_string_holding_a_nul_character_leaves_queries_over_its_items_working(engine):
    # PostgreSQL's text cannot hold U+0000: such a string once made every query over the
    # context's items fail (reads, and updates and deletes by query), on every item
    assert engine.create_items("People", "People", [{"name": "nul\x00inside", "age": 7, "balance": 1},
                                                    {"name": "\\u0000", "age": 8, "balance": 2}]).success
    before = _values(engine)
    assert engine.count_items("People", query="age == 7") == sum(v["age"] == 7 for v in before.values())
    assert engine.count_items("People", query='name == "\\\\u0000"') == 1  # a backslash and 'u0000'
    assert engine.count_items("People", query='name < "p1"') == sum(v["name"] < "p1" for v in before.values())
    result = engine.update_items("People", [{"selector": {"query": "age == 7"}, "values": {"balance": 99}}])
    assert result.success, result.error
    assert [v["name"] for v in _values(engine).values() if v["balance"] == 99 and v["age"] == 7] == \
        [v["name"] for v in before.values() if v["age"] == 7]
    assert engine.delete_items("People", [{"query": "age == 8"}]).success
    assert "nul\x00inside" in {v["name"] for v in _values(engine).values()}


def test_numeric_texts_past_every_double_compare_as_infinities_or_zero(engine):
    # PostgreSQL refuses CAST AS numeric of an exponent past its range: a text such as
    # "1e999999" once made every numeric comparison of its attribute fail
    texts = ["1e999999", "-2E+1000", "1e-5000", "-0.5e0999", "0e4000"]
    assert engine.create_items("People", "People", [{"name": t, "age": 1, "balance": 1} for t in texts]).success
    counts = {q: engine.count_items("People", query=q) for q in
              ["name > 1", "name < 0", "name == 0", "name > 1e308", "name < -1e300", "name >= -1e999999"]}
    assert counts == {"name > 1": 1, "name < 0": 2, "name == 0": 2, "name > 1e308": 1, "name < -1e300": 2,
                      "name >= -1e999999": 5}


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
    gate = engine.runtime.backend.gate()
    with gate.exclusive(touched):
        assert _acquires(lambda: gate.shared(), 0.5) is not items_blocked
        assert _acquires(lambda: gate.shared(CATALOG), 0.5) is not catalog_blocked
    assert _acquires(lambda: gate.shared(), 5) and _acquires(lambda: gate.shared(CATALOG), 5)


def test_only_an_item_batch_left_in_phase_2_makes_item_reads_in_doubt(engine):
    """A decided batch not yet finished everywhere (phase 2 interrupted) makes item reads
    refuse with InDoubtError, unless it touched the catalog alone: item reads do not hold the
    catalog's gate, and such a batch changed no item."""
    count = engine.count_items("People")
    engine.runtime.log.decide("catalog-only", {CATALOG: "commit"})
    try:
        assert engine.count_items("People") == count
    finally:
        engine.runtime.log.mark_done("catalog-only")
    engine.runtime.log.decide("with-a-shard", {CATALOG: "commit", "shard-0001": "commit"})
    try:
        with pytest.raises(InDoubtError):
            engine.count_items("People")
    finally:
        engine.runtime.log.mark_done("with-a-shard")
    assert engine.count_items("People") == count


# -- recovery -----------------------------------------------------------------------------------

def test_an_engine_restarted_after_the_decision_finishes_the_batch(store):
    """Decided, logged, not delivered: a new engine on the store commits it at every shard."""
    with local_client(store.url, shards=2) as first:
        assert first.create_data_context("People", COLLECTIONS).success
        plan = first.planner.create_items("People", "People", _people(40))
        txn, ts, _ = first.runtime.executor.begin(plan.kind)
        first.runtime.driver.finish = lambda *args, **kwargs: ["shard-0000", "shard-0001"]  # phase 2 never happens
        result = first.runtime.executor.execute(txn, ts, plan, RunOptions())
        assert result.transaction_id == txn
    with local_client(store.url) as second:
        assert second.count_items("People") == 40
        assert second.runtime.log.unfinished() == ([], [])
        for participant in second.runtime.participants.values():
            assert_clear(participant)
