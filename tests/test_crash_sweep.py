"""Crash-point sweep: crash a transaction at its 1st, 2nd, ... durable write.

For each n, a fresh store runs the transaction with :func:`batchray.core.txn.crashpoints.arm` set to
crash at the n-th durable write (coordinator log and shards alike), then "restarts" by closing
everything and opening a new engine on the same directory (recovery runs on open). The sweep
stops at the first n that the transaction survives. After every restart the transaction is
all-or-nothing, no 2PC state is left and every shard file is intact.

Two kinds of transaction are swept: one over three shards (two-phase commit: chunks of two
items, so the six items of a create, and the six seeded items an update names, spread over the
shards) and one of a single chunk at a single shard (one-phase commit, ``apply+commit``: a crash
at its write leaves nothing, and after it recovery finds the commit at the shard, with no
decision ever logged).
"""
from __future__ import annotations

import re

from pathlib import Path

import pytest

from batchray.core.txn import crashpoints
from batchray.core.txn.crashpoints import SimulatedCrash
from local_runtime import Client, local_client
from batchray.core.model.batch import BatchState

SHARDS = 3
CONTEXT = "Sweep"
COLLECTIONS = [{"name": "rows", "attrs": [{"name": "label", "type": "categorical"}, {"name": "n", "type": "numeric"}]}]
SEED = [{"label": f"s{i}", "n": i} for i in range(6)]
NEW = [{"label": f"c{i}", "n": 50 + i} for i in range(6)]
MAX_POINTS = 100


@pytest.fixture(autouse=True)
def _disarm():
    crashpoints.arm(None)
    yield
    crashpoints.arm(None)


def _make_engine(root: Path) -> Client:
    return local_client(root, shards=SHARDS, lock_timeout=2.0)


def _seed(root: Path, with_items: bool, spread: bool = True) -> list[int]:
    with _make_engine(root) as engine:
        assert engine.create_data_context(CONTEXT, COLLECTIONS).success
        if not with_items:
            return []
        # chunks of two items go to every shard; one chunk of six goes to one shard
        result = engine.create_items(CONTEXT, "rows", SEED, batch_size=2 if spread else None)
        assert result.success, result.error
        return result.item_ids


def _rows(engine: Client) -> list[dict]:
    return sorted((item["values"] for item in engine.get_items(CONTEXT)), key=lambda v: v["label"])


def _sweep(tmp_path: Path, name: str, transaction, seed_items: bool, before: list[dict], after: list[dict],
           spread: bool = True):
    """Run the sweep; return ``(crash labels in order, outcome per crash point)``."""
    before = sorted(before, key=lambda v: v["label"])
    after = sorted(after, key=lambda v: v["label"])
    labels: list[str] = []
    outcomes: list[str] = []
    for n in range(1, MAX_POINTS + 1):
        root = tmp_path / f"{name}-{n}"
        ids = _seed(root, seed_items, spread)
        engine = _make_engine(root)
        crashpoints.arm(n)
        try:
            result = transaction(engine, ids)
            crashed = None
        except SimulatedCrash as crash:
            crashed = str(crash)
        finally:
            crashpoints.arm(None)
            engine.close()

        with _make_engine(root) as engine:  # the restart; recovery runs here
            rows = _rows(engine)
            assert rows in (before, after), f"{name}: crash point {n} ({crashed}) left a partial batch: {rows}"
            for pname, participant in engine.runtime.participants.items():
                assert participant.leftovers() == {"txns": 0, "undo": 0, "created": 0, "applied": 0}, (n, pname)
                assert participant.integrity_check() == "ok", (n, pname)
                assert participant.locks.lock_count() == 0, (n, pname)
            assert engine.runtime.log.unfinished() == ([], []), n
            assert not engine.runtime.log.batches_in("running"), f"{name}: crash point {n} left a batch marked running"
            if crashed is None:
                assert result.state == BatchState.completed and rows == after, result
                return labels, outcomes
            labels.append(crashed)
            outcomes.append("all" if rows == after else "none")
    pytest.fail(f"{name}: still crashing after {MAX_POINTS} durable writes")


def _report(name: str, labels: list[str], outcomes: list[str]) -> None:
    print(f"\n{name}: swept {len(labels)} crash points")
    for n, (label, outcome) in enumerate(zip(labels, outcomes), start=1):
        print(f"  {n:2d} {outcome:4s} {label}")
    assert len(labels) > 5, labels
    # a crash before the decision is logged (at its write included: the crash comes before
    # the write) rolls back; a crash after it completes
    assert "none" in outcomes and "all" in outcomes, outcomes
    first_all = outcomes.index("all")
    assert all(o == "all" for o in outcomes[first_all:]), "a crash after the commit decision rolled back"
    assert "log:decide" in labels[first_all - 1], labels[first_all - 1]
    # every shard's apply, prepare and commit was a crash point (a shard's last chunk is
    # applied and voted in one durable write, labelled "apply+prepare")
    for step in ("apply", "prepare", "committed"):
        for shard in range(3):
            assert any(re.search(rf"shard-{shard:04d}:(\w+\+)?{step}\b", label) for label in labels), (step, shard, labels)


def test_crash_sweep_create(tmp_path):
    labels, outcomes = _sweep(
        tmp_path,
        "create",
        lambda engine, ids: engine.create_items(CONTEXT, "rows", NEW, batch_size=2),
        seed_items=False,
        before=[],
        after=NEW,
    )
    _report("create", labels, outcomes)


def test_crash_sweep_update(tmp_path):
    def update(engine, ids):
        return engine.update_items(CONTEXT, [{"selector": {"itemId": i}, "values": {"n": "=n * 10"}} for i in ids])

    labels, outcomes = _sweep(
        tmp_path,
        "update",
        update,
        seed_items=True,
        before=SEED,
        after=[{"label": r["label"], "n": r["n"] * 10} for r in SEED],
    )
    _report("update", labels, outcomes)


def _report_one_phase(name: str, labels: list[str], outcomes: list[str]) -> None:
    print(f"\n{name}: swept {len(labels)} crash points")
    for n, (label, outcome) in enumerate(zip(labels, outcomes), start=1):
        print(f"  {n:2d} {outcome:4s} {label}")
    # one durable write of the shard's commits the batch: a crash at it (before its commit)
    # leaves nothing, every crash after it leaves the batch whole, found committed by recovery
    commit_at = [n for n, label in enumerate(labels) if re.search(r"shard-\d{4}:apply\+commit\b", label)]
    assert len(commit_at) == 1, labels
    assert outcomes[commit_at[0]] == "none", (labels, outcomes)
    assert all(o == "none" for o in outcomes[:commit_at[0]]), (labels, outcomes)
    assert outcomes[commit_at[0] + 1:] and all(o == "all" for o in outcomes[commit_at[0] + 1:]), (labels, outcomes)
    # no vote, no decision, no phase 2
    assert not any(re.search(r"log:decide|:prepare|:committed", label) for label in labels), labels


def test_crash_sweep_one_phase_create(tmp_path):
    labels, outcomes = _sweep(
        tmp_path,
        "one-phase create",
        lambda engine, ids: engine.create_items(CONTEXT, "rows", NEW),
        seed_items=False,
        before=[],
        after=NEW,
    )
    _report_one_phase("one-phase create", labels, outcomes)


def test_crash_sweep_one_phase_update(tmp_path):
    def update(engine, ids):
        return engine.update_items(CONTEXT, [{"selector": {"itemId": i}, "values": {"n": "=n * 10"}} for i in ids])

    labels, outcomes = _sweep(
        tmp_path,
        "one-phase update",
        update,
        seed_items=True,
        before=SEED,
        after=[{"label": r["label"], "n": r["n"] * 10} for r in SEED],
        spread=False,
    )
    _report_one_phase("one-phase update", labels, outcomes)
