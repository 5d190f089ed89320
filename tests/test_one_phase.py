"""One-phase commit (batchray/core/txn/onephase.py) gives what the two-phase path it shortcuts
gives: the same stored items, ids, results, errors, progress and history, on the in-process
runtime over SQLite shards. Each comparison runs the same requests on two fresh stores, one
whose transport takes ``apply+commit`` and one whose transport does not (two phases); the
ids match too, since a small create is placed on one shard either way.

Also: where a small create's ids go, an ``apply+commit`` whose answer is lost (resolved at the
shard), and a cancellation that comes while the ``apply+commit`` is at the shard.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import pytest

from batchray.core.model.batch import BatchState
from batchray.core.storage.decision_log import DecisionLog
from batchray.core.storage.sqlite.shard import SqliteShard
from batchray.core.txn.chunks import CreateItems, PlannedChunk
from batchray.core.txn.participant import Step
from batchray.core.txn.twophase import LocalTransport, TwoPhaseCommit, _Ready
from batchray.errors import CancelledError, InternalError, ParticipantUnavailable
from local_runtime import local_client
from pg_schema import own_schema

SCHEMA = [{"name": "People", "attrs": [{"name": "name", "type": "categorical"},
                                        {"name": "age", "type": "numeric", "min": 0}]}]


def _rows(n: int, bad: tuple[int, ...] = ()) -> list[dict]:
    return [{"name": f"p{i}", "age": -1 if i in bad else i} for i in range(n)]


class _Recorder:
    """Records the steps the driver sends (and can lose the answer of one ``apply+commit``)."""

    def __init__(self, client: Any, one_phase: bool = True) -> None:
        self.transport = client.runtime.transport
        self.steps: list[tuple[str, str]] = []
        self.lose_answers = 0
        self.lost_with: Any = ParticipantUnavailable("the answer was lost")
        self.transport.commits_one_phase = one_phase
        submit = self.transport.submit

        def recorded(participant, step, ref, chunk=None):
            self.steps.append((participant, str(step)))
            handle = submit(participant, step, ref, chunk)
            if step == Step.APPLY_COMMIT and self.lose_answers:
                self.lose_answers -= 1
                return _Ready(False, self.lost_with)
            return handle

        self.transport.submit = recorded


def _stored(client) -> list[tuple[int, dict]]:
    return sorted((item["id"], item["values"]) for item in client.get_items("P"))


def _assert_clear(client) -> None:
    for participant in client.runtime.participants.values():
        assert participant.leftovers() == {"txns": 0, "undo": 0, "created": 0, "applied": 0}, participant.name
        assert participant.locks.lock_count() == 0, participant.name
    assert client.runtime.log.unfinished() == ([], [])


def test_a_small_create_goes_to_one_shard_in_one_phase_with_its_ids_in_input_order(tmp_path):
    with local_client(tmp_path / "s", shards=3) as client:
        assert client.create_data_context("P", SCHEMA).success
        recorder = _Recorder(client)
        shards_used = set()
        for round_ in range(3):
            recorder.steps.clear()
            rows = _rows(10)
            result = client.create_items("P", "People", rows)
            assert result.success and result.items_created == 10, result
            assert len({i % 3 for i in result.item_ids}) == 1  # one shard under id % shards
            (participant, step), = recorder.steps
            assert step == "apply+commit" and participant == client.runtime.layout.shard_of(result.item_ids[0])
            shards_used.add(participant)
            # reads by id find each item, in input order
            got = client.get_items("P", query=None)
            by_id = {item["id"]: item["values"] for item in got}
            assert [by_id[i] for i in result.item_ids] == rows
            assert client.runtime.log.decision(result.transaction_id) is None  # no decision record
            assert client.status(result.transaction_id)["state"] == "completed"
        assert len(shards_used) == 3  # small batches spread over the shards
        _assert_clear(client)


def test_a_clean_apply_commit_leaves_no_registration_rows_to_write(tmp_path):
    """A clean ``apply+commit`` on a SQLite shard never registers its transaction (``txns``)
    or its applied chunk, which its commit would delete again in the same local transaction
    (each a page of the WAL to write and fsync), and leaves an empty undo log unwritten; one
    that found errors stays registered and open, as two phases need it, until its abort."""
    with local_client(tmp_path / "s", shards=1) as client:
        assert client.create_data_context("P", SCHEMA).success
        shard = client.runtime.participants["shard-0000"]
        statements: list[str] = []
        registers = ("INSERT INTO txns", "INSERT INTO applied", "DELETE FROM undo")

        def traced(call):
            statements.clear()
            shard._conn.set_trace_callback(statements.append)
            try:
                return call()
            finally:
                shard._conn.set_trace_callback(None)

        clean = traced(lambda: client.create_items("P", "People", _rows(10)))
        assert clean.success and clean.items_created == 10
        assert any(s.startswith("INSERT INTO one_phase") for s in statements), statements
        assert not [s for s in statements if s.startswith(registers)], statements
        bad = traced(lambda: client.create_items("P", "People", _rows(10, bad=(4,))))
        assert bad.state == BatchState.rolled_back and bad.errors[0].index == 4
        assert {r for r in registers[:2] if any(s.startswith(r) for s in statements)} == set(registers[:2])
        assert [v for _, v in _stored(client)] == _rows(10)
        _assert_clear(client)


def _workload(client, calls: list):
    """The same requests on a store; what each returned, the progress each reported, what is stored."""
    results = []
    assert client.create_data_context("P", SCHEMA).success

    def run(name, fn):
        seen: list[dict] = []
        outcome = fn(seen.append)
        last = dict(seen[-1]) if seen else None
        if last is not None:  # each progress names its batch; the rest is compared
            assert {p.get("batchId") for p in seen} == {outcome.transaction_id}, (name, seen)
            del last["batchId"]
        results.append((name, outcome, last, _stored(client)))
        return outcome

    created = run("create", lambda cb: client.create_items("P", "People", _rows(10), callback=cb))
    run("generator", lambda cb: client.create_items("P", "People", (r for r in _rows(5)), callback=cb))
    run("bad atomic", lambda cb: client.create_items("P", "People", (r for r in _rows(6, bad=(3,))), callback=cb))
    run("bad kept", lambda cb: client.create_items("P", "People", (r for r in _rows(6, bad=(2, 4))), atomic=False,
                                                   continue_on_error=True, callback=cb))
    ids = created.item_ids
    run("update", lambda cb: client.update_items("P", [{"selector": {"itemId": i}, "values": {"age": "=age + 1"}}
                                                       for i in ids[:4]], callback=cb))
    run("bad update", lambda cb: client.update_items("P", [{"selector": {"itemId": ids[0]}, "values": {"age": "=age - 50"}}],
                                                     callback=cb))
    run("delete", lambda cb: client.delete_items("P", [{"itemId": i} for i in ids[4:6]], callback=cb))
    dry = client.create_items("P", "People", _rows(3), dry_run=True)
    results.append(("dry run", dry, None, _stored(client)))
    backed = run("backed up", lambda cb: client.create_items("P", "People", _rows(2), create_backups=True, callback=cb))
    run("undo", lambda cb: client.rollback_batch(backed.transaction_id))
    calls.append([b["state"] for b in client.status()])
    return results


def _comparable(outcome: Any) -> Any:
    if not hasattr(outcome, "model_dump"):
        return outcome
    dumped = outcome.model_dump()
    for volatile in ("transaction_id", "duration", "throughput"):
        dumped.pop(volatile, None)
    if dumped.get("error"):
        dumped["error"] = {k: v for k, v in dumped["error"].items() if k != "message"}
        dumped["error"].pop("details", None)
    return dumped


def test_one_phase_gives_what_two_phases_give(tmp_path):
    histories: list = []
    runs = {}
    for one_phase in (True, False):
        with local_client(tmp_path / f"store-{one_phase}", shards=2) as client:
            recorder = _Recorder(client, one_phase)
            runs[one_phase] = _workload(client, histories)
            steps = {step for _, step in recorder.steps}
            assert ("apply+commit" in steps) == one_phase, steps
            _assert_clear(client)
    for (name, one, progress_one, stored_one), (_, two, progress_two, stored_two) in zip(runs[True], runs[False]):
        assert _comparable(one) == _comparable(two), name
        if progress_one is not None or progress_two is not None:
            keys = ("total", "completed", "failed")
            assert {k: progress_one.get(k) for k in keys} == {k: progress_two.get(k) for k in keys}, name
        assert stored_one == stored_two, name
    assert histories[0] == histories[1]
    outcomes = {name: outcome for name, outcome, _, _ in runs[True]}
    assert outcomes["create"].success and outcomes["generator"].success
    assert outcomes["bad atomic"].state == BatchState.rolled_back and outcomes["bad atomic"].errors[0].index == 3
    assert outcomes["bad kept"].items_created == 4 and [e.index for e in outcomes["bad kept"].errors] == [2, 4]
    assert not outcomes["bad update"].success and outcomes["undo"].success


@pytest.mark.parametrize("retries", [True, False])
def test_a_lost_answer_of_apply_commit_is_asked_again(tmp_path, retries):
    """Lost with a retryable error, the repeated ``apply+commit`` answers as the first did; with
    one that is not retried, the driver resolves the batch at the shard, which says it committed."""
    with local_client(tmp_path / "s", shards=2) as client:
        assert client.create_data_context("P", SCHEMA).success
        recorder = _Recorder(client)
        recorder.lose_answers = 1
        if not retries:
            recorder.lost_with = InternalError("the worker's reply could not be read")
        result = client.create_items("P", "People", _rows(10))
        assert result.success and result.items_created == 10 and len(result.item_ids) == 10, result
        assert [s for _, s in recorder.steps] == (["apply+commit"] * 2 if retries else ["apply+commit", "resolve"])
        assert [v for _, v in _stored(client)] == _rows(10)
        assert client.status(result.transaction_id)["state"] == "completed"
        _assert_clear(client)


class _Late:
    """A transport whose answers come after a few polls, so a stop can come while a step is out."""

    merges_prepare = True

    def __init__(self, participants: dict, one_phase: bool) -> None:
        self.local = LocalTransport(participants)
        self.commits_one_phase = one_phase
        self.polls = 0
        self.sent = 0

    def submit(self, participant, step, ref, chunk=None):
        self.sent += 1
        return _Ready(True, self.local.submit(participant, step, ref, chunk))

    def wait(self, handles, timeout=None):
        self.polls += 1
        return (list(handles), []) if self.polls > 3 else ([], list(handles))

    def result(self, handle):
        return self.local.result(handle.value)


@pytest.mark.parametrize("one_phase", [True, False])
def test_a_cancellation_while_apply_commit_is_out_finds_the_batch_committed(tmp_path: Path, one_phase):
    """The commit point of a one-phase batch is its ``apply+commit``: an abrupt cancellation that
    comes after it was sent does not abandon it (two phases: the batch rolls back)."""
    shard = SqliteShard(tmp_path / "s0.sqlite", name="s0")
    log = DecisionLog(tmp_path / "coordinator.sqlite")
    try:
        transport = _Late({"s0": shard}, one_phase)
        driver = TwoPhaseCommit(log, transport)

        def should_stop():  # the cancellation comes once the chunk was sent
            return CancelledError("now", graceful=False) if transport.sent else None

        chunk = CreateItems(1, range(100, 103), ['{"n": 1}', '{"n": 2}', '{"n": 3}'])
        outcome = driver.run("t1", 1, [PlannedChunk("s0", chunk, 64, 3)], should_stop=should_stop)
        stored = [i for i, _ in shard.read_items(0)]
        if one_phase:
            assert outcome.committed and outcome.cause is None and outcome.affected == 3
            assert stored == [100, 101, 102] and shard.outcome("t1") == "committed"
        else:
            assert not outcome.committed and isinstance(outcome.cause, CancelledError)
            assert stored == [] and shard.outcome("t1") == "aborted"
        assert shard.leftovers() == {"txns": 0, "undo": 0, "created": 0, "applied": 0}
    finally:
        shard.close()
        log.close()


@contextlib.contextmanager
def _store_url(kind: str, tmp_path: Path) -> Iterator[str]:
    """A fresh store of ``kind`` for the block (PostgreSQL: a schema of its own, dropped after)."""
    if kind == "sqlite":
        yield str(tmp_path / "store")
        return
    with own_schema("onephase") as schema:
        yield schema.url


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
@pytest.mark.parametrize("crash_at", ["shard-", "log:state"])
def test_a_crash_at_or_after_apply_commit_leaves_none_or_all(tmp_path, kind, crash_at):
    """A crash at the shard's ``apply+commit`` (before its local commit) leaves nothing of the
    batch; one after it (the batch's result being recorded) leaves it whole: the restarted
    runtime's recovery finds it committed at the shard and records it so. On either store."""
    from batchray.core.txn import crashpoints
    from batchray.core.txn.crashpoints import SimulatedCrash

    with _store_url(kind, tmp_path) as url:
        with local_client(url, shards=2) as client:
            assert client.create_data_context("P", SCHEMA).success
            crashpoints.arm(1, label_prefix=crash_at)
            try:
                with pytest.raises(SimulatedCrash):
                    client.create_items("P", "People", _rows(10))
            finally:
                crashpoints.arm(None)
        with local_client(url, shards=2) as client:  # the restart: recovery runs here
            batch = next(b for b in client.status() if b["kind"] == "create_items")
            if crash_at == "shard-":
                assert client.count_items("P") == 0 and batch["state"] == "rolled_back", batch
            else:
                assert [v for _, v in _stored(client)] == _rows(10) and batch["state"] == "completed", batch
            _assert_clear(client)
