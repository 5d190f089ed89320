"""A paused owner that wakes after being replaced is fenced (real processes, SIGSTOP/SIGCONT).

An owner process (``tests/paused_owner.py``) claims epoch 1 of a participant, applies an update
of one item in a transaction of its own, and is frozen with SIGSTOP for longer than the lock
timeout (2 s here). Meanwhile a new owner (this process) opens the participant, which recovers
it, claims epoch 2, and commits a transaction of its own over the same item, without waiting
on the frozen one. The old owner is then woken with SIGCONT and told to prepare and commit its
transaction, as a coordinator that never heard of the takeover would: each step is refused
(``STALE_EPOCH``; on PostgreSQL its prepare votes no, the new owner's recovery having ended
its session and so its transaction), and the item keeps the new owner's value,
the store no 2PC leftovers, PostgreSQL no prepared transaction.

A second test pauses the old owner *after its vote* (applied and prepared): the new owner's
recovery finds the transaction in doubt and, told the coordinator's decision, commits it; the
woken owner, told to roll it back (a decision it would have taken from a coordinator that lost
its log, say), is refused with ``STALE_EPOCH``, and the committed values stay.

SQLite shard files, and a schema of the shared PostgreSQL test server (``postgres`` marker:
nothing here crashes the server or changes its settings). The pauses of a worker and of the
coordinator of the Ray runtime at each protocol point are in tests/test_pause_sweep.py. The pause of a worker or the
coordinator of the Ray runtime under the bank workload is in tests/test_bank_faults.py.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from batchray.core.txn.chunks import CreateItems, TxnRef, UpdateItems, context_range
from batchray.testing.conformance_stores import STORE_KINDS, store_for

HERE = Path(__file__).resolve().parent
LO, _ = context_range(1)
ITEMS = {LO + 1: {"name": "a", "mass": 1}, LO + 2: {"name": "b", "mass": 2}}
PAUSE = 3.0  # seconds: longer than the 2 s lock timeout of both owners


class Owner:
    """The old owner's process."""

    def __init__(self, kind: str, store: str, epoch: int) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen([sys.executable, str(HERE / "paused_owner.py"), kind, store, "s", str(epoch)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert self.reply() == {"ok": "ready"}

    def reply(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, "the owner process died"
        return json.loads(line)

    def step(self, **request) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self.reply()

    def close(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _seed(store) -> None:
    """Commit :data:`ITEMS` to the participant ``s`` of ``store`` (and close it)."""
    seed = store.open("s")
    seed.apply(TxnRef("seed", 1), CreateItems(1, list(ITEMS), [orjson.dumps(v).decode() for v in ITEMS.values()]))
    assert seed.prepare(TxnRef("seed", 1))
    seed.commit(TxnRef("seed", 1))
    seed.close()


def _values(participant) -> dict[int, dict]:
    return {i: orjson.loads(v) for i, v in participant.read_items(1)}


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_a_paused_owner_woken_after_its_replacement_is_fenced(kind, tmp_path):
    store = store_for(kind, tmp_path)
    target = str(tmp_path / "s.sqlite") if kind == "sqlite" else store.url
    try:
        _seed(store)

        old = Owner(kind, target, epoch=1)
        try:
            assert old.step(step="apply", txn="paused", ts=10, chunk=1, id=LO + 1, mass=50) == {"ok": 1}
            os.kill(old.proc.pid, signal.SIGSTOP)
            frozen = time.monotonic()

            new = store.open("s", lock_timeout=2.0)  # opening recovers: the frozen owner's work is undone
            assert new.claim(2) == 2
            ref = TxnRef("takeover", 20, epoch=2)
            started = time.monotonic()
            new.apply(ref, UpdateItems(1, 1, ids=[LO + 1], patch={"mass": 7}))
            assert new.prepare(ref)
            new.commit(ref)
            assert time.monotonic() - started < 2.0, "the new owner waited on the frozen one"
            time.sleep(max(0.0, PAUSE - (time.monotonic() - frozen)))

            os.kill(old.proc.pid, signal.SIGCONT)
            for step in ("prepare", "commit"):
                answer = old.step(step=step, txn="paused", ts=10)
                # SQLite: the epoch check; PostgreSQL: prepare votes no (the new owner's recovery
                # ended the frozen session, and its transaction with it), commit hears the epoch
                refused = answer.get("error") == "STALE_EPOCH" or (step == "prepare" and answer == {"ok": False})
                assert refused, f"the woken owner's {step} was not refused: {answer}"
            apply_again = old.step(step="apply", txn="later", ts=11, chunk=1, id=LO + 2, mass=99)
            assert apply_again.get("error") == "STALE_EPOCH", apply_again

            assert _values(new) == {**ITEMS, LO + 1: {"name": "a", "mass": 7}}
            assert new.pending() == [] and not any(new.leftovers().values())
            new.close()
        finally:
            old.close()
    finally:
        store.close()


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_an_owner_paused_after_its_vote_and_woken_after_its_replacement_is_fenced(kind, tmp_path):
    store = store_for(kind, tmp_path)
    target = str(tmp_path / "s.sqlite") if kind == "sqlite" else store.url
    try:
        _seed(store)

        old = Owner(kind, target, epoch=1)
        try:
            assert old.step(step="apply", txn="voted", ts=10, chunk=1, id=LO + 1, mass=50) == {"ok": 1}
            assert old.step(step="prepare", txn="voted", ts=10) == {"ok": True}
            os.kill(old.proc.pid, signal.SIGSTOP)
            frozen = time.monotonic()

            new = store.open("s", lock_timeout=2.0)  # recovery: the vote is durable, in doubt
            assert [d["txn"] for d in new.in_doubt] == ["voted"], new.in_doubt
            assert new.claim(2) == 2
            new.commit(TxnRef("voted", 10, epoch=2))  # the coordinator's decision, delivered
            time.sleep(max(0.0, PAUSE - (time.monotonic() - frozen)))

            os.kill(old.proc.pid, signal.SIGCONT)
            for step in ("abort", "commit"):
                answer = old.step(step=step, txn="voted", ts=10)
                assert answer.get("error") == "STALE_EPOCH", f"the woken owner's {step} was not refused: {answer}"
            assert _values(new) == {**ITEMS, LO + 1: {"name": "a", "mass": 50}}
            assert new.pending() == [] and not any(new.leftovers().values())
            new.close()
        finally:
            old.close()
    finally:
        store.close()
