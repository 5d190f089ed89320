"""Two-phase commit under a failure or a crash at each protocol step of each participant.

Every case runs one batch through the in-process runtime (:class:`~batchray.core.run.local.LocalRuntime`) over real SQLite
files, with one participant wrapped in a :class:`~batchray.testing.FaultyParticipant` that
fails (an error the coordinator sees) or crashes (a :class:`SimulatedCrash` that ends the
"process": everything is closed and a new engine is opened on the same directory, which runs
recovery). Then:

* a failure before the commit decision leaves every shard exactly as it was (raw table
  contents compared, so uncommitted in-place writes would show) with no 2PC state left;
* a failure at commit, after the decision, ends with the batch complete;
* every shard passes SQLite's integrity check, and a follow-up batch succeeds (no lock or
  in-doubt transaction left behind).

The batches are cut into several chunks (and a new context, one chunk, is run with one-phase
commit switched off), so that each goes through both phases; a batch of one chunk at one
participant commits in one phase, and its faults are the last cases here: a fault before its
``apply+commit`` leaves nothing, one after it leaves the batch committed.
"""
from __future__ import annotations

import functools
import shutil
import sqlite3
from pathlib import Path

import pytest

from batchray.core.txn.crashpoints import SimulatedCrash
from local_runtime import Client, local_client
from batchray.errors import SchemaError
from batchray.core.model.batch import BatchState
from batchray.core.storage.sqlite.shard import SqliteShard
from batchray.core.storage.store import CATALOG, StoreLayout, shard_name
from batchray.core.txn.participant import Step
from batchray.testing import FaultyParticipant

CONTEXT = "Mammals"
COLLECTIONS = [
    {
        "name": "animals",
        "attrs": [
            {"name": "name", "type": "categorical"},
            {"name": "mass", "type": "numeric"},
        ],
    }
]
SEED = [{"name": f"seed{i}", "mass": i} for i in range(9)]
NEW = [{"name": f"new{i}", "mass": 100 + i} for i in range(6)]


# -- helpers ----------------------------------------------------------------------------------

def _make_engine(root: Path, shards: int, wrappers=None) -> Client:
    """An engine over real shard files; ``wrappers`` maps participant names to wrapping callables."""
    layout = StoreLayout(root, shards)
    participants = {
        name: SqliteShard(layout.participant_path(name), name=name, lock_timeout=2.0)
        for name in layout.participant_names
    }
    for name, wrap in (wrappers or {}).items():
        participants[name] = wrap(participants[name])
    return local_client(root, shards=shards, participants=participants)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """``seeded(root, shards) -> item ids``: a copy of a store seeded once per shard count
    (its files are closed, so a plain copy is a consistent one)."""
    templates: dict[int, tuple[Path, list[int]]] = {}

    def seed(root: Path, shards: int) -> list[int]:
        if shards not in templates:
            template = tmp_path_factory.mktemp(f"template-{shards}") / "store"
            with _make_engine(template, shards) as engine:
                assert engine.create_data_context(CONTEXT, COLLECTIONS).success
                result = engine.create_items(CONTEXT, "animals", SEED, batch_size=3)
                assert result.success, result.error
                assert {engine.layout.shard_of(i) for i in result.item_ids} == set(engine.layout.shard_names)
            templates[shards] = (template, result.item_ids)
        template, ids = templates[shards]
        shutil.copytree(template, root)
        return ids

    return seed


def _raw(root: Path) -> dict[str, tuple[list, list]]:
    """Every participant's raw ``items`` and ``docs`` rows, uncommitted in-place writes included."""
    out = {}
    for path in sorted(root.glob("*.sqlite")):
        if path.name == "coordinator.sqlite":
            continue
        conn = sqlite3.connect(path)
        try:
            out[path.stem] = (
                conn.execute("SELECT id, vals FROM items ORDER BY id").fetchall(),
                conn.execute("SELECT key, doc FROM docs ORDER BY key").fetchall(),
            )
        finally:
            conn.close()
    return out


def _values(engine: Client) -> list[dict]:
    return sorted((item["values"] for item in engine.get_items(CONTEXT)), key=lambda v: v["name"])


def _check_clean(engine: Client) -> None:
    """No 2PC state anywhere, no unfinished decision, every file intact."""
    for name, participant in engine.runtime.participants.items():
        assert participant.leftovers() == {"txns": 0, "undo": 0, "created": 0, "applied": 0}, name
        assert participant.integrity_check() == "ok", name
        assert participant.locks.lock_count() == 0, name
    assert engine.runtime.log.unfinished() == ([], [])
    assert not engine.runtime.log.batches_in("running"), "a batch is still registered as running"


def _run_batch(engine: Client, batch: str, ids: list[int], chunk: int = 2):
    """The batch, ``chunk`` items a chunk (several chunks: two phases, even on one shard)."""
    if batch == "create":
        return engine.create_items(CONTEXT, "animals", NEW, batch_size=chunk)
    return engine.update_items(CONTEXT, [{"selector": {"itemId": i}, "values": {"mass": 1000 + k}} for k, i in enumerate(ids)],
                               batch_size=chunk)


def _expected_after_commit(batch: str) -> list[dict]:
    if batch == "create":
        rows = SEED + NEW
    else:
        rows = [{"name": r["name"], "mass": 1000 + k} for k, r in enumerate(SEED)]
    return sorted(rows, key=lambda v: v["name"])


def _positions(shards: int) -> list[tuple[int, str]]:
    if shards == 1:
        return [(1, "only")]
    return [(3, "first"), (3, "middle"), (3, "last")]


def _target(shards: int, position: str) -> str:
    index = {"only": 0, "first": 0, "middle": shards // 2, "last": shards - 1}[position]
    return shard_name(index)


CASES = [
    pytest.param(shards, position, step, kind, when, batch, id=f"{shards}shard-{position}-{step}-{kind}-{when}-{batch}")
    for shards, position in _positions(1) + _positions(3)
    for step in ("apply", "prepare", "commit", "abort")
    for kind in ("fail", "crash")
    for when in ("before", "after")
    for batch in ("create", "update")
]


def _wrappers(target: str, step: str, kind: str, when: str, abort_trigger: str, holder: list):
    """The fault under test at ``target``; for the abort step, ``abort_trigger`` votes no so that
    the batch is decided abort (delivered to every shard, the target included)."""
    arg = "crash_at" if kind == "crash" else "fail_at"

    def wrap_target(inner):
        faulty = FaultyParticipant(inner, **{arg: step}, when=when)
        holder.append(faulty)
        return faulty

    if step != "abort":
        return {target: wrap_target}
    vote_no = functools.partial(FaultyParticipant, fail_at="prepare")
    if abort_trigger == target:
        return {target: lambda inner: wrap_target(vote_no(inner))}
    return {target: wrap_target, abort_trigger: vote_no}


# -- item batches -----------------------------------------------------------------------------

@pytest.mark.parametrize("shards, position, step, kind, when, batch", CASES)
def test_failure_at_step(tmp_path, seeded, shards, position, step, kind, when, batch):
    root = tmp_path / "store"
    ids = seeded(root, shards)
    before = _raw(root)
    target = _target(shards, position)
    faulty: list[FaultyParticipant] = []
    # the trigger is never the first shard, so that with 3 shards the abort reaches shards that
    # voted yes as well as the one that voted no
    engine = _make_engine(root, shards, _wrappers(target, step, kind, when, shard_name(shards - 1), faulty))
    crashed = False
    result = None
    try:
        result = _run_batch(engine, batch, ids)
    except SimulatedCrash:
        crashed = True
    finally:
        engine.close()
    assert faulty[0].injected == 1, "the fault was never reached"
    assert crashed == (kind == "crash")
    decided_commit = step == "commit"
    if result is not None:  # the coordinator survived and finished the batch itself
        expected_state = BatchState.completed if decided_commit else BatchState.rolled_back
        assert result.state == expected_state, result
        assert result.success == decided_commit
        if not decided_commit:
            error = result.error
            assert error is not None and error["code"] and error["message"]

    with _make_engine(root, shards) as engine:  # restart: recovery runs on open
        if decided_commit:
            assert _values(engine) == _expected_after_commit(batch)
        else:
            assert _raw(root) == before, "a shard changed although the batch was not committed"
            assert _values(engine) == sorted(SEED, key=lambda v: v["name"])
        _check_clean(engine)
        if kind == "crash" and position in ("only", "last"):
            # nothing is left locked or in doubt: the same items can be written again
            follow = engine.update_items(CONTEXT, [{"selector": {"itemId": i}, "values": {"mass": -1}} for i in ids])
            assert follow.success, follow.error
            assert engine.count_items(CONTEXT, query="mass == -1") == len(ids)
            _check_clean(engine)


# -- the catalog participant ------------------------------------------------------------------

CATALOG_CASES = [
    pytest.param(step, kind, when, id=f"catalog-{step}-{kind}-{when}")
    for step in ("apply", "prepare", "commit", "abort")
    for kind in ("fail", "crash")
    for when in ("before", "after")
]


@pytest.mark.parametrize("step, kind, when", CATALOG_CASES)
def test_catalog_failure_at_step(tmp_path, seeded, step, kind, when):
    root = tmp_path / "store"
    seeded(root, 3)
    before = _raw(root)
    faulty: list[FaultyParticipant] = []
    engine = _make_engine(root, 3, _wrappers(CATALOG, step, kind, when, CATALOG, faulty))
    engine.runtime.transport.commits_one_phase = False  # a new context is one chunk: two phases here
    crashed = False
    try:
        result = engine.create_data_context("Birds", [{"name": "birds", "attrs": [{"name": "wingspan", "type": "numeric"}]}])
    except SimulatedCrash:
        crashed = True
    finally:
        engine.close()
    assert faulty[0].injected == 1
    assert crashed == (kind == "crash")
    committed = step == "commit"
    if not crashed:
        assert result.success == committed, result

    with _make_engine(root, 3) as engine:
        if committed:
            engine.count_items("Birds")  # exists
            assert sorted(engine.catalog.contexts()) == ["Birds", CONTEXT]
        else:
            assert _raw(root) == before
            with pytest.raises(SchemaError) as info:
                engine.count_items("Birds")
            assert info.value.to_dict()["details"]["field"] == "dataContextName"
        _check_clean(engine)
        assert engine.count_items(CONTEXT) == len(SEED)
        # the catalog is writable again (no lock on the context's key left behind)
        again = engine.create_data_context("Birds2", [{"name": "b", "attrs": [{"name": "x"}]}])
        assert again.success, again.error
        _check_clean(engine)


# -- one-phase commit -------------------------------------------------------------------------

ONE_PHASE_CASES = [
    pytest.param(target, step, kind, id=f"{target}-{step}-{kind}")
    for target in ("shard", CATALOG)
    for step in ("apply", "commit")  # before the one write, after it
    for kind in ("fail", "crash")
]


@pytest.mark.parametrize("target, step, kind", ONE_PHASE_CASES)
def test_one_phase_failure_at_step(tmp_path, seeded, target, step, kind):
    """A batch of one chunk at one participant (a create on one shard, a new context), with a
    fault before its ``apply+commit`` (nothing of it stays) or after it (it committed: the
    coordinator, which heard no answer, resolves it and reports it committed; after a crash,
    recovery finds it committed)."""
    root = tmp_path / "store"
    seeded(root, 1)
    before = _raw(root)
    name = CATALOG if target == CATALOG else shard_name(0)
    faulty: list[FaultyParticipant] = []
    engine = _make_engine(root, 1, _wrappers(name, step, kind, "before", name, faulty))
    crashed = False
    result = None
    try:
        if target == CATALOG:
            result = engine.create_data_context("Birds", [{"name": "birds", "attrs": [{"name": "wingspan"}]}])
        else:
            result = engine.create_items(CONTEXT, "animals", NEW)
    except SimulatedCrash:
        crashed = True
    finally:
        engine.close()
    assert faulty[0].injected == 1 and faulty[0].calls[Step.PREPARE] == 0, "not a one-phase commit"
    assert crashed == (kind == "crash")
    committed = step == "commit"
    if result is not None:
        assert result.success == committed and result.state == (BatchState.completed if committed else
                                                                 BatchState.rolled_back), result
    with _make_engine(root, 1) as engine:  # restart: recovery runs on open
        if not committed:
            assert _raw(root) == before
        elif target == CATALOG:
            assert sorted(engine.catalog.contexts()) == ["Birds", CONTEXT]
        else:
            assert _values(engine) == _expected_after_commit("create")
        batch = next(b for b in engine.status() if b["kind"] != "create_items" or target != CATALOG)
        assert batch["state"] == ("completed" if committed else "rolled_back"), batch
        _check_clean(engine)


# -- a non-atomic batch whose participant votes no ----------------------------------------------

@pytest.mark.parametrize("streamed", [False, True], ids=["list", "stream"])
def test_a_non_atomic_batch_reports_the_items_a_participant_that_voted_no_rolled_back(tmp_path, seeded, streamed):
    """A non-atomic batch commits where its participants voted yes; the items applied at one
    whose prepare failed are rolled back there. Its result used to count them created, with no
    error (a stream's batch even reported success), while they were not in the store."""
    root = tmp_path / "store"
    seeded(root, 2)
    target = shard_name(1)
    engine = _make_engine(root, 2, {target: lambda inner: FaultyParticipant(inner, fail_at="prepare", times=10)})
    rows = [{"name": f"new{i}", "mass": i} for i in range(12)]
    with engine:
        result = engine.create_items(CONTEXT, "animals", (row for row in rows) if streamed else rows, atomic=False,
                                     continue_on_error=True, batch_size=3)
        stored = engine.count_items(CONTEXT) - len(SEED)
        on_target = sum(1 for item in engine.get_items(CONTEXT)
                        if engine.layout.shard_of(item["id"]) == 1 and item["values"]["name"].startswith("new"))
    assert 0 < stored < len(rows) and on_target == 0, (stored, on_target)
    assert result.items_created == stored, result
    assert result.items_created + result.items_failed == len(rows), result
    assert not result.success and result.state == BatchState.completed, result
    assert any(target in error.message for error in result.errors), result.errors


def test_a_committed_batch_whose_phase_2_gave_up_says_why_it_is_not_a_success(tmp_path, seeded):
    """A batch decided commit whose phase 2 gave up on a participant (it is finished in the
    background) is no success yet; its result used to say so with no error at all, as if
    something had failed (a caller would run it again)."""
    root = tmp_path / "store"
    seeded(root, 2)
    target = shard_name(1)
    engine = _make_engine(root, 2, {target: lambda inner: FaultyParticipant(inner, fail_at="commit", times=3)})
    with engine:
        engine.runtime.driver.phase2_attempts = 2  # gives up after two rounds of delivery
        result = engine.create_items(CONTEXT, "animals", NEW, batch_size=2)
        assert result.state == BatchState.completed and not result.success, result
        assert result.error is not None and result.error["code"] == "IN_DOUBT", result
        assert result.error["details"]["committed"] is True and result.error["details"]["participants"] == [target]
        assert target in result.error["message"]
        engine.runtime.settler.close()
    with _make_engine(root, 2) as engine:  # recovery finishes it
        assert _values(engine) == _expected_after_commit("create")
        _check_clean(engine)
