"""The participant conformance suite: the contracts of :mod:`batchray.core.txn.participant`,
checked on any participant.

A store under test is a :class:`~batchray.testing.conformance_stores.ConformanceStore`: it
opens participants on one fresh store and may offer views the generic checks cannot have (the
raw durable state, who holds an item's lock); :mod:`batchray.testing.conformance_stores` has
batchray's own two.

Two ways to run the suite:

* with pytest: import the ``test_*`` functions into a test module and define a fixture named
  ``conformance_store`` that yields a fresh ``ConformanceStore`` and calls its ``close``
  at the end::

      from batchray.testing.conformance import *  # noqa: F401,F403 - the suite's test functions

      @pytest.fixture
      def conformance_store(tmp_path):
          store = MyStore(tmp_path)
          yield store
          store.close()

* without: :func:`run_conformance` runs every case, with every parameter, each on a fresh
  store from a factory, and raises the first failure.

Each case drives one participant with hand-made chunks, so every step, repetition and
restart is explicit: steps delivered twice, refusals of late and stale steps, recovery
(presumed abort of unvoted work, prepared work kept in doubt with its locks), isolation (no
dirty reads, wait-die).
"""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import orjson
import pytest

from batchray.core.txn import crashpoints
from batchray.core.txn.chunks import (CreateItems, DeleteItems, DropBackups, TransformItems, TxnRef, UndoBatch, UpdateItems,
                                      context_range)
from batchray.core.txn.participant import Participant
from batchray.errors import InternalError, LockConflict, StaleEpochError, TransactionAborted
from batchray.testing.conformance_stores import ConformanceStore

CTX = 1
LO, HI = context_range(CTX)
ITEMS = {LO + 1: {"name": "a", "mass": 1}, LO + 2: {"name": "b", "mass": 2}, LO + 3: {"name": "c", "mass": 3}}
ZERO = {"txns": 0, "undo": 0, "created": 0, "applied": 0}


# -- running the suite without pytest -----------------------------------------------------------

CASES: list[Callable[..., None]] = []
"""Every case of the suite, each taking a :class:`ConformanceStore` (and its parameters)."""


def case(**params: list[Any]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register a case; ``params`` (name -> values) run it once per combination."""

    def register(fn: Callable[..., None]) -> Callable[..., None]:
        for name, values in reversed(list(params.items())):
            fn = pytest.mark.parametrize(name, values)(fn)
        fn.conformance_params = params  # type: ignore[attr-defined]
        CASES.append(fn)
        return fn

    return register


def run_conformance(make_store: Callable[[], ConformanceStore]) -> int:
    """Run every case with every parameter combination, each on a fresh store from
    ``make_store`` (closed after it); raise the first failure, naming the case. Returns the
    number of runs."""
    runs = 0
    for fn in CASES:
        params: dict[str, list[Any]] = getattr(fn, "conformance_params", {})
        for values in itertools.product(*params.values()):
            kwargs = dict(zip(params, values))
            store = make_store()
            try:
                fn(store, **kwargs)
            except BaseException as exc:
                raise AssertionError(f"{fn.__name__}{kwargs or ''} failed: {exc!r}") from exc
            finally:
                store.close()
            runs += 1
    return runs


# -- helpers ------------------------------------------------------------------------------------

def _create(chunk_id: int, items: dict[int, dict]) -> CreateItems:
    return CreateItems(chunk_id, list(items), [orjson.dumps(v).decode() for v in items.values()])


def apply_in_background(participant: Any, ref: TxnRef, chunk: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """``participant.apply(ref, chunk)`` on a thread of its own, started: ``(thread, outcome)``,
    ``outcome`` getting ``images`` (what the apply returned) or ``error`` (what it raised)."""
    outcome: dict[str, Any] = {}

    def apply() -> None:
        try:
            outcome["images"] = participant.apply(ref, chunk)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=apply, daemon=True)
    thread.start()
    return thread, outcome


def _update(chunk_id: int, ids: list[int], patch: dict) -> UpdateItems:
    return UpdateItems(chunk_id, CTX, ids=ids, patch=patch)


def _delete(chunk_id: int, ids: list[int]) -> DeleteItems:
    return DeleteItems(chunk_id, CTX, ids=ids)


def _seeded(store: ConformanceStore, **kwargs: Any) -> Participant:
    participant = store.open(**kwargs)
    ref = TxnRef("seed", 1)
    participant.apply(ref, _create(1, ITEMS))
    assert participant.prepare(ref)
    participant.commit(ref)
    return participant


def _visible(participant: Participant, own: Optional[str] = None) -> dict[int, dict]:
    return {i: orjson.loads(v) for i, v in participant.read_items(CTX, own_txn=own)}


def assert_clear(participant: Participant) -> None:
    """No two-phase-commit state is left at ``participant``: nothing pending, nothing recorded."""
    assert participant.leftovers() == ZERO, participant.leftovers()
    assert participant.pending() == []


def _same_images(a: Any, b: Any, *, affected: bool = True) -> bool:
    def key(images: Any) -> tuple:
        return (images.chunk_id, sorted(images.created), sorted(images.items), sorted(images.docs),
                images.affected if affected else None)

    return key(a) == key(b)


def _raw_items(store: ConformanceStore) -> Optional[dict[int, str]]:
    state = store.snapshot()
    return None if state is None else {row[0]: row[1] for row in state["items"]}


def _check_holders(store: ConformanceStore, participant: Participant, item_id: int, expected: dict[str, int],
                   why: str = "") -> None:
    holders = store.lock_holders(participant, item_id)
    if holders is not None:
        assert holders == expected, why or f"item {item_id - LO} is held by {holders}, not {expected}"


class _Writes:
    """Counts durable writes (see :mod:`batchray.core.txn.crashpoints`) since :meth:`reset`."""

    def reset(self) -> None:
        crashpoints.arm(10**9)

    def __call__(self) -> int:
        return crashpoints.writes_seen()


# -- the protocol itself --------------------------------------------------------------------------

@case()
def test_the_participant_declares_the_protocol(conformance_store):
    participant = conformance_store.open()
    assert isinstance(participant, Participant)
    assert participant.name == "s" and participant.in_doubt == []
    assert participant.locks.lock_count() == 0 and participant.locks.held_by("nobody") == set()
    assert participant.integrity_check() == "ok"
    assert_clear(participant)


@case()
def test_a_chunk_of_an_unknown_type_is_refused(conformance_store):
    @dataclass
    class Unknown:
        chunk_id: int
        context_id: int
        ids: list[int]

    participant = _seeded(conformance_store)
    ref = TxnRef("t1", 10)
    with pytest.raises(InternalError):
        participant.apply(ref, Unknown(2, CTX, [LO + 1]))
    participant.abort(ref)
    assert _visible(participant) == ITEMS
    assert participant.locks.lock_count() == 0
    assert_clear(participant)


@case()
def test_an_apply_that_prepares_votes_with_its_chunk(conformance_store):
    participant = _seeded(conformance_store)
    ref = TxnRef("t1", 10)
    images = participant.apply(ref, _update(2, [LO + 1], {"mass": 5}), prepare=True)
    assert images.vote is True and images.affected == 1
    assert participant.pending() == [{"txn": "t1", "state": "prepared", "ts": 10}]
    participant.commit(ref)
    assert _visible(participant)[LO + 1]["mass"] == 5

    bad = TxnRef("t2", 11)
    images = participant.apply(bad, _update(3, [LO + 99], {"mass": 5}), prepare=True)
    assert images.vote is False and [e["code"] for e in images.errors] == ["NOT_FOUND"]
    assert participant.pending() == [{"txn": "t2", "state": "active", "ts": 11}]
    participant.abort(bad)
    assert_clear(participant)


@case()
def test_an_apply_that_prepares_after_a_count_waits_for_the_chunks_before_it(conformance_store):
    """``TxnRef.prepare_after``: a transaction's last chunk sent while its others were still on
    their way prepares with itself only once that many of its chunks are applied here. Come
    first, it applies, casts no vote (None) and leaves the transaction active, so that the
    chunk before it may still land; once it has, the participant is ready and a prepare votes
    yes. Come last, it prepares with itself."""
    participant = _seeded(conformance_store)
    ref = TxnRef("t1", 10)
    counted = TxnRef("t1", 10, prepare_after=2)
    images = participant.apply(counted, _update(3, [LO + 2], {"mass": 7}), prepare=True)
    assert images.vote is None and images.affected == 1
    assert participant.pending() == [{"txn": "t1", "state": "active", "ts": 10}]
    assert not participant.ready_to_prepare(counted) and participant.ready_to_prepare(ref)
    participant.apply(ref, _update(2, [LO + 1], {"mass": 5}))  # the chunk before it lands
    assert participant.ready_to_prepare(counted) and participant.prepare(ref) is True
    participant.commit(ref)
    visible = _visible(participant)
    assert (visible[LO + 1]["mass"], visible[LO + 2]["mass"]) == (5, 7)

    ref = TxnRef("t2", 11)
    participant.apply(ref, _update(4, [LO + 1], {"mass": 8}))
    images = participant.apply(TxnRef("t2", 11, prepare_after=2), _update(5, [LO + 2], {"mass": 9}), prepare=True)
    assert images.vote is True
    assert participant.pending() == [{"txn": "t2", "state": "prepared", "ts": 11}]
    participant.abort(ref)
    assert (_visible(participant)[LO + 1]["mass"], _visible(participant)[LO + 2]["mass"]) == (5, 7)
    assert_clear(participant)


# -- one-phase commit --------------------------------------------------------------------------

@case(kind=["update", "create"])
def test_an_apply_that_commits_does_it_in_one_write_and_answers_a_repeat_the_same(conformance_store, kind):
    participant = _seeded(conformance_store)
    ref = TxnRef("t1", 10)
    chunk = _update(2, [LO + 1], {"mass": "=mass + 100"}) if kind == "update" else _create(2, {LO + 10: {"name": "x"}})
    writes = _Writes()
    writes.reset()
    try:
        first = participant.apply(ref, chunk, commit=True)
        wrote = writes()  # one local transaction (a store may count its apply inside it apart)
        assert 1 <= wrote <= 2, wrote
        once = conformance_store.snapshot()
        again = participant.apply(ref, chunk, commit=True)
        assert writes() == wrote, "a repeated apply+commit wrote again"
    finally:
        crashpoints.arm(None)
    assert conformance_store.snapshot() == once
    assert first.vote is True and first.affected == 1 and not first.errors
    assert (again.vote, again.affected, again.errors) == (True, 1, [])
    expected = dict(ITEMS)
    if kind == "update":
        expected[LO + 1] = {**ITEMS[LO + 1], "mass": 101}  # the "=mass + 100" ran once
    else:
        expected[LO + 10] = {"name": "x"}
    assert _visible(participant) == expected
    assert participant.outcome("t1") == "committed" and participant.resolve(ref) == "committed"
    assert participant.locks.lock_count() == 0
    with pytest.raises(TransactionAborted):
        participant.apply(ref, _update(3, [LO + 2], {"mass": 7}))
    assert _visible(participant) == expected
    assert_clear(participant)


@case()
def test_an_apply_that_commits_with_errors_is_left_unvoted(conformance_store):
    participant = _seeded(conformance_store)
    ref = TxnRef("t1", 10)
    chunk = _update(2, [LO + 1, LO + 99], {"mass": 5})
    images = participant.apply(ref, chunk, commit=True)
    assert images.vote is False and [e["code"] for e in images.errors] == ["NOT_FOUND"]
    assert participant.pending() == [{"txn": "t1", "state": "active", "ts": 10}]
    assert _visible(participant) == ITEMS and participant.outcome("t1") is None
    again = participant.apply(ref, chunk, commit=True)
    assert again.vote is False and len(again.errors) == 1
    participant.abort(ref)
    assert _visible(participant) == ITEMS
    assert_clear(participant)


@case(state=["active", "prepared", "unknown"])
def test_resolve_aborts_what_did_not_commit_and_a_late_apply_is_refused(conformance_store, state):
    participant = _seeded(conformance_store)
    ref = TxnRef("t1", 10)
    chunk = _update(2, [LO + 1], {"mass": 5})
    if state != "unknown":
        participant.apply(ref, chunk)
    if state == "prepared":
        assert participant.prepare(ref)
    assert participant.resolve(ref) == "aborted"
    assert participant.resolve(ref) == "aborted"
    assert participant.outcome("t1") == "aborted"
    with pytest.raises(TransactionAborted):
        participant.apply(ref, chunk, commit=True)
    assert _visible(participant) == ITEMS and participant.locks.lock_count() == 0
    assert_clear(participant)


# -- each step delivered twice ----------------------------------------------------------------

@case()
def test_apply_twice_returns_the_same_images_and_writes_once(conformance_store):
    participant = _seeded(conformance_store)
    ref = TxnRef("t1", 10)
    chunk = _update(2, [LO + 1, LO + 2], {"mass": "=mass + 100"})
    writes = _Writes()
    writes.reset()
    try:
        first = participant.apply(ref, chunk)
        assert writes() == 1
        once = conformance_store.snapshot()
        second = participant.apply(ref, chunk)
        assert writes() == 1, "a repeated apply wrote again"
    finally:
        crashpoints.arm(None)
    assert conformance_store.snapshot() == once
    assert first == second and _same_images(first, second)
    assert first.items == [(LO + 1, orjson.dumps(ITEMS[LO + 1]).decode()),
                           (LO + 2, orjson.dumps(ITEMS[LO + 2]).decode())]
    assert _visible(participant, own="t1")[LO + 1]["mass"] == 101  # the "=mass + 100" ran once
    created = participant.apply(ref, _create(3, {LO + 10: {"name": "x"}}))
    again = participant.apply(ref, _create(3, {LO + 10: {"name": "x"}}))
    assert created == again and _same_images(created, again) and created.created == [(LO + 10, LO + 10, 1)]
    assert participant.prepare(ref) and participant.prepare(ref)
    assert participant.pending() == [{"txn": "t1", "state": "prepared", "ts": 10}]
    participant.commit(ref)
    participant.commit(ref)
    assert _visible(participant)[LO + 1]["mass"] == 101 and LO + 10 in _visible(participant)
    assert_clear(participant)


@case()
def test_prepare_twice(conformance_store):
    participant = _seeded(conformance_store)
    ref = TxnRef("t1", 10)
    participant.apply(ref, _update(2, [LO + 1], {"mass": 5}))
    assert participant.prepare(ref) is True
    once = conformance_store.snapshot()
    assert participant.prepare(ref) is True
    assert conformance_store.snapshot() == once
    assert participant.pending() == [{"txn": "t1", "state": "prepared", "ts": 10}]
    participant.abort(ref)
    assert_clear(participant)


@case(decision=["commit", "abort"], prepared=[True, False])
def test_decision_twice(conformance_store, decision, prepared):
    participant = _seeded(conformance_store)
    committed = _visible(participant)
    ref = TxnRef("t1", 10)
    participant.apply(ref, _update(2, [LO + 1], {"mass": 5}))
    participant.apply(ref, _delete(3, [LO + 2]))
    participant.apply(ref, _create(4, {LO + 9: {"name": "z"}}))
    if prepared:
        assert participant.prepare(ref)
    getattr(participant, decision)(ref)
    once, state = _visible(participant), conformance_store.snapshot()
    getattr(participant, decision)(ref)
    assert _visible(participant) == once and conformance_store.snapshot() == state
    assert participant.outcome("t1") == ("committed" if decision == "commit" else "aborted")
    assert participant.leftovers() == ZERO
    assert participant.locks.lock_count() in (0, 1)
    assert participant.locks.held_by("t1") == set()
    if decision == "abort":
        assert once == committed
    else:
        assert once == {LO + 1: {"name": "a", "mass": 5}, LO + 3: ITEMS[LO + 3], LO + 9: {"name": "z"}}
    for late in (_update(5, [LO + 3], {"mass": 6}), _create(6, {LO + 11: {"n": 1}})):
        with pytest.raises(TransactionAborted):
            participant.apply(ref, late)
    assert_clear(participant)


@case(decision=["commit", "abort"])
def test_a_participant_reopened_after_prepare_can_still_decide(conformance_store, decision):
    participant = _seeded(conformance_store)
    committed = _visible(participant)
    ref = TxnRef("t1", 10)
    participant.apply(ref, _update(2, [LO + 1], {"mass": 5}))
    participant.apply(ref, _create(3, {LO + 9: {"name": "z"}}))
    assert participant.prepare(ref)
    participant.close()

    participant = conformance_store.open()  # a restart
    assert participant.in_doubt == [{"txn": "t1", "ts": 10, "shard": "s"}]
    assert participant.pending() == [{"txn": "t1", "state": "prepared", "ts": 10}]
    _check_holders(conformance_store, participant, LO + 1, {"t1": 10})
    assert _visible(participant) == committed  # still invisible while in doubt
    with pytest.raises(LockConflict):  # and still locked: a younger writer dies
        participant.apply(TxnRef("t2", 11), _update(4, [LO + 1], {"mass": 6}))
    getattr(participant, decision)(ref)
    once = conformance_store.snapshot()
    participant.close()

    participant = conformance_store.open()  # a restart again: the decision is delivered again
    assert participant.in_doubt == []
    getattr(participant, decision)(ref)
    assert conformance_store.snapshot() == once
    assert participant.leftovers() == ZERO
    assert participant.locks.lock_count() == 0
    assert participant.outcome("t1") == ("committed" if decision == "commit" else "aborted")
    if decision == "commit":
        assert _visible(participant) == {**committed, LO + 1: {"name": "a", "mass": 5}, LO + 9: {"name": "z"}}
    else:
        assert _visible(participant) == committed
    assert participant.integrity_check() == "ok"
    assert_clear(participant)


@case()
def test_a_prepared_schema_rewrite_keeps_its_data_context_to_itself_across_a_restart(conformance_store):
    participant = _seeded(conformance_store)
    rename = TxnRef("rename", 10)
    participant.apply(rename, TransformItems(2, CTX, renames={"mass": "weight"}))
    assert participant.prepare(rename)
    participant.close()

    participant = conformance_store.open()  # a restart, the rewrite in doubt
    assert participant.in_doubt == [{"txn": "rename", "ts": 10, "shard": "s"}]
    late = TxnRef("late", 11)  # a create planned on the schema before the rename
    with pytest.raises(LockConflict):  # as before the restart: the context is the rewrite's
        participant.apply(late, _create(3, {LO + 60: {"name": "late", "mass": 4}}))
    participant.abort(late)
    participant.commit(rename)
    assert all(set(values) == {"name", "weight"} for values in _visible(participant).values())
    assert participant.locks.lock_count() == 0
    assert_clear(participant)


# -- refusals ---------------------------------------------------------------------------------

@case()
def test_prepare_of_unknown_work_votes_no_and_refuses_a_late_apply(conformance_store):
    participant = _seeded(conformance_store)
    before = conformance_store.snapshot()
    ref = TxnRef("lost", 10)
    assert participant.prepare(ref) is False
    assert participant.prepare(ref) is False
    with pytest.raises(TransactionAborted):
        participant.apply(ref, _update(2, [LO + 1], {"mass": 5}))
    after = conformance_store.snapshot()
    if before is not None:
        assert after["items"] == before["items"]
    assert participant.leftovers() == ZERO
    assert participant.locks.lock_count() == 0, "a refused apply kept its locks"
    # the transaction counts as aborted: an abort is a no-op, a commit would be a bug
    participant.abort(ref)
    assert conformance_store.snapshot() == after
    assert participant.outcome("lost") == "aborted"
    assert _visible(participant) == ITEMS
    assert_clear(participant)


@case(decision=["commit", "abort"])
def test_apply_after_decision_is_refused(conformance_store, decision):
    participant = _seeded(conformance_store)
    ref = TxnRef("t1", 10)
    participant.apply(ref, _update(2, [LO + 1], {"mass": 5}))
    assert participant.prepare(ref)
    getattr(participant, decision)(ref)
    after = conformance_store.snapshot()
    for chunk in (_update(3, [LO + 2], {"mass": 6}), _update(2, [LO + 1], {"mass": 5}), _create(4, {LO + 9: {"n": 1}})):
        with pytest.raises(TransactionAborted) as info:
            participant.apply(ref, chunk)
        assert info.value.to_dict()["details"]["outcome"] == participant.outcome("t1")
    assert conformance_store.snapshot() == after
    assert participant.locks.lock_count() == 0
    assert_clear(participant)


@case()
def test_decision_for_a_txn_never_seen_is_recorded(conformance_store):
    participant = _seeded(conformance_store)
    ref = TxnRef("ghost", 10)
    participant.abort(ref)
    assert participant.outcome("ghost") == "aborted"
    with pytest.raises(TransactionAborted):
        participant.apply(ref, _update(2, [LO + 1], {"mass": 5}))
    assert _visible(participant) == ITEMS
    assert_clear(participant)


# -- epochs -----------------------------------------------------------------------------------

@case()
def test_stale_epochs_change_nothing(conformance_store):
    participant = _seeded(conformance_store)
    assert participant.claim(5) == 5
    with pytest.raises(StaleEpochError):
        participant.claim(4)
    assert participant.epoch == 5

    # a new transaction from a replaced owner
    before = conformance_store.snapshot()
    stale = TxnRef("old-owner", 10, epoch=4)
    with pytest.raises(StaleEpochError) as info:
        participant.apply(stale, _update(2, [LO + 1], {"mass": 5}))
    assert info.value.retryable and info.value.to_dict()["details"]["current"] == 5
    with pytest.raises(StaleEpochError):
        participant.apply(stale, _create(3, {LO + 9: {"n": 1}}))
    with pytest.raises(StaleEpochError):
        participant.prepare(stale)
    assert conformance_store.snapshot() == before
    assert participant.locks.lock_count() == 0
    assert _visible(participant) == ITEMS and participant.pending() == []

    # a prepared transaction of the current owner: stale steps touch neither data nor locks
    ref = TxnRef("t1", 11, epoch=5)
    participant.apply(ref, _update(4, [LO + 1], {"mass": 7}))
    assert participant.prepare(ref)
    prepared = conformance_store.snapshot()
    for step in ("apply", "prepare", "commit", "abort"):
        late = TxnRef("t1", 11, epoch=4)
        with pytest.raises(StaleEpochError):
            if step == "apply":
                participant.apply(late, _update(5, [LO + 2], {"mass": 8}))
            else:
                getattr(participant, step)(late)
        assert conformance_store.snapshot() == prepared, step
        assert participant.pending() == [{"txn": "t1", "state": "prepared", "ts": 11}], step
        _check_holders(conformance_store, participant, LO + 1, {"t1": 11}, f"a stale {step} released the prepared locks")
    # so another transaction still cannot overwrite the in-doubt item
    with pytest.raises(LockConflict):
        participant.apply(TxnRef("t2", 12, epoch=5), _update(6, [LO + 1], {"mass": 9}))
    participant.commit(ref)
    assert _visible(participant)[LO + 1]["mass"] == 7
    assert participant.leftovers() == ZERO
    assert participant.claim_next() == 6
    assert_clear(participant)


# -- recovery ---------------------------------------------------------------------------------

@case()
def test_presumed_abort_of_unvoted_work(conformance_store):
    participant = _seeded(conformance_store)
    active = TxnRef("active", 10)
    participant.apply(active, _update(2, [LO + 1], {"mass": 50}))
    participant.apply(active, _create(3, {LO + 20: {"name": "new"}}))
    prepared = TxnRef("prepared", 11)
    participant.apply(prepared, _update(4, [LO + 2], {"mass": 60}))
    participant.apply(prepared, _delete(5, [LO + 3]))
    assert participant.prepare(prepared)
    participant.close()  # the process ends: its unvoted work with it

    participant = conformance_store.open(lock_timeout=0.3)
    assert participant.in_doubt == [{"txn": "prepared", "ts": 11, "shard": "s"}]
    assert participant.outcome("active") == "aborted"
    assert participant.pending() == [{"txn": "prepared", "state": "prepared", "ts": 11}]
    raw = _raw_items(conformance_store)
    if raw is not None:
        assert LO + 20 not in raw and orjson.loads(raw[LO + 1]) == ITEMS[LO + 1], "the unvoted writes were not undone"
    _check_holders(conformance_store, participant, LO + 1, {})
    _check_holders(conformance_store, participant, LO + 2, {"prepared": 11})
    _check_holders(conformance_store, participant, LO + 3, {"prepared": 11})
    assert _visible(participant) == ITEMS
    # the aborted transaction's item is free; the in-doubt one's are not
    free = TxnRef("free", 12)
    participant.apply(free, _update(6, [LO + 1], {"mass": 1}))
    participant.abort(free)
    # the re-taken locks keep others out: a younger dies, an older waits and times out
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
    assert participant.leftovers() == ZERO and participant.locks.lock_count() == 0
    assert_clear(participant)


@case()
def test_before_images_are_kept_until_the_decision(conformance_store):
    participant = _seeded(conformance_store)
    ref = TxnRef("t1", 10)
    returned = [
        participant.apply(ref, _update(2, [LO + 1, LO + 2], {"mass": 0})),
        participant.apply(ref, _create(3, {LO + 7: {"name": "x"}, LO + 8: {"name": "y"}})),
        participant.apply(ref, _delete(4, [LO + 3])),
    ]
    assert [r.affected for r in returned] == [2, 2, 1]
    stored = participant.before_images("t1")
    assert len(stored) == 3 and all(_same_images(a, b, affected=False) for a, b in zip(returned, stored))
    assert sorted(stored[0].items) == [(LO + 1, orjson.dumps(ITEMS[LO + 1]).decode()),
                                       (LO + 2, orjson.dumps(ITEMS[LO + 2]).decode())]
    assert stored[1].created == [(LO + 7, LO + 8, 2)]
    assert stored[2].items == [(LO + 3, orjson.dumps(ITEMS[LO + 3]).decode())]
    assert participant.prepare(ref)
    participant.close()

    participant = conformance_store.open()
    after_restart = participant.before_images("t1")
    if conformance_store.prepared_state_readable:  # durable: still there after a restart
        assert len(after_restart) == 3
        assert all(_same_images(a, b, affected=False) for a, b in zip(returned, after_restart))
    else:
        assert after_restart == []
    participant.commit(ref)
    assert participant.before_images("t1") == []
    assert_clear(participant)


@case()
def test_backups_go_only_when_their_drop_or_undo_commits_and_are_held_against_an_undo_till_then(conformance_store):
    participant = _seeded(conformance_store, lock_timeout=5.0)
    source = TxnRef("src", 5, backup=True)
    participant.apply(source, _update(2, [LO + 1], {"mass": 50}))
    assert participant.prepare(source)
    participant.commit(source)

    def undo(txn: str, ts: int) -> int:
        """An undo of ``src`` applied and aborted: how many items it would restore."""
        ref = TxnRef(txn, ts)
        try:
            return participant.apply(ref, UndoBatch(ts, "src")).affected
        finally:
            participant.abort(ref)

    dropped = TxnRef("drop", 10)
    assert participant.apply(dropped, DropBackups(3, "src")).affected == 1
    with pytest.raises(LockConflict):  # held till the decision: a younger undo dies
        undo("undo-1", 11)
    participant.abort(dropped)
    assert undo("undo-2", 12) == 1  # an aborted drop leaves the backups

    dropped = TxnRef("drop-2", 13)
    participant.apply(dropped, DropBackups(4, "src"))
    assert participant.prepare(dropped)
    participant.close()
    participant = conformance_store.open(lock_timeout=5.0)  # a restart: the prepared drop still holds them
    with pytest.raises(LockConflict):
        undo("undo-3", 14)
    participant.commit(dropped)
    assert undo("undo-4", 15) == 0  # gone once the drop committed
    assert _visible(participant)[LO + 1]["mass"] == 50  # a drop changes no item

    source = TxnRef("src-2", 16, backup=True)  # an undo that commits spends the backups it restored from
    participant.apply(source, _update(5, [LO + 2], {"mass": 60}))
    assert participant.prepare(source)
    participant.commit(source)
    undone = TxnRef("undo-5", 17)
    assert participant.apply(undone, UndoBatch(6, "src-2")).affected == 1
    assert participant.prepare(undone)
    participant.commit(undone)
    assert _visible(participant)[LO + 2]["mass"] == 2
    ref = TxnRef("undo-6", 18)
    assert participant.apply(ref, UndoBatch(7, "src-2")).affected == 0
    participant.abort(ref)
    assert participant.locks.lock_count() == 0
    assert_clear(participant)


# -- isolation --------------------------------------------------------------------------------

@case()
def test_no_dirty_read_while_active_or_prepared(conformance_store):
    participant = _seeded(conformance_store)
    ref = TxnRef("writer", 10)
    participant.apply(ref, _create(2, {LO + 50: {"name": "new", "mass": 99}}))
    participant.apply(ref, _update(3, [LO + 1], {"mass": 99}))
    participant.apply(ref, _delete(4, [LO + 2]))
    own = {LO + 1: {"name": "a", "mass": 99}, LO + 3: ITEMS[LO + 3], LO + 50: {"name": "new", "mass": 99}}
    reader = conformance_store.open(recover=False)  # another process reading the same store
    for phase in ("active", "prepared"):
        for who in (participant, reader):
            for other in (None, "someone-else"):
                assert _visible(who, own=other) == ITEMS, (phase, other)
                assert [i for i, _ in who.read_items(CTX, "mass == 99", own_txn=other)] == [], (phase, other)
                assert [i for i, _ in who.read_items(CTX, ids=[LO + 2, LO + 50], own_txn=other)] == [LO + 2]
            assert who.count_items(CTX) == 3 and who.count_items(CTX, "mass == 99") == 0
            rows, total = who.read_page(CTX, "mass != 99", limit=2, after=LO)
            assert ([i for i, _ in rows], total) == ([LO + 1, LO + 2], 3), phase
        if phase == "active" or conformance_store.prepared_state_readable:
            assert _visible(participant, own="writer") == own, phase
            assert [i for i, _ in participant.read_items(CTX, "mass == 99", own_txn="writer")] == [LO + 1, LO + 50]
        if phase == "active":
            assert participant.prepare(ref)
    participant.commit(ref)
    assert _visible(participant) == own and _visible(reader) == own
    rows, total = reader.read_page(CTX, "mass == 99")
    assert ([i for i, _ in rows], total) == ([LO + 1, LO + 50], 2)
    assert_clear(participant)


@case(then=["update", "delete"])
def test_no_dirty_read_of_items_a_pending_transaction_created_and_then_changed(conformance_store, then):
    participant = _seeded(conformance_store)
    ref = TxnRef("writer", 10)
    participant.apply(ref, _create(2, {LO + 50: {"name": "new", "mass": 1}}))
    participant.apply(ref, _update(3, [LO + 50], {"mass": 99}) if then == "update" else _delete(3, [LO + 50]))
    reader = conformance_store.open(recover=False)
    for phase in ("active", "prepared"):
        for who in (participant, reader):
            assert _visible(who) == ITEMS, (phase, then)
            assert [i for i, _ in who.read_items(CTX, "name == new", own_txn="someone-else")] == [], (phase, then)
            assert who.count_items(CTX) == 3, (phase, then)
            rows, total = who.read_page(CTX)
            assert ([i for i, _ in rows], total) == (sorted(ITEMS), 3), (phase, then)
        if phase == "active":
            assert participant.prepare(ref)
    participant.abort(ref)
    assert _visible(participant) == ITEMS and _visible(reader) == ITEMS
    assert_clear(participant)


@case(then=["update", "delete"])
def test_items_a_pending_transaction_created_are_not_found_by_another_that_names_them(conformance_store, then):
    participant = _seeded(conformance_store)
    creator, other = TxnRef("creator", 10), TxnRef("other", 20)
    participant.apply(creator, _create(2, {LO + 50: {"name": "new", "mass": 1}}))
    chunk = _update(3, [LO + 50], {"mass": 99}) if then == "update" else _delete(3, [LO + 50])
    images = participant.apply(other, chunk)  # its ids guessed: they are the creator's until it commits
    assert [e["code"] for e in images.errors] == ["NOT_FOUND"] and images.affected == 0, images.errors
    participant.abort(other)
    assert participant.prepare(creator)
    participant.commit(creator)
    assert _visible(participant) == {**ITEMS, LO + 50: {"name": "new", "mass": 1}}
    assert_clear(participant)


@case()
def test_wait_die(conformance_store):
    participant = _seeded(conformance_store, lock_timeout=5.0)
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
    thread, outcome = apply_in_background(participant, old, _update(5, [LO + 2], {"mass": "=mass * 10"}))
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
    assert_clear(participant)


__all__ = [
    "CASES",
    "assert_clear",
    "run_conformance",
    *(fn.__name__ for fn in CASES),
]
