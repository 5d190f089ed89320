"""Pauses on Ray at every protocol point: a worker, or the coordinator, frozen with SIGSTOP at a
point of two-phase commit for longer than the lock timeout and the drivers' waits, while other
drivers' batches run, then woken with SIGCONT.

The batch paused is an update of the 12 items of a data context (``n = n + 1000``, chunks of 3
over both shards, each by ``itemId``). How a pause lands on a point: the actors run with the
crash-point trigger file (:mod:`batchray.core.txn.crashpoints`, through ``tests/fault_rig.py``).
A trial arms it to *hold* the process that reaches the point (``POINTS``: shard-0001's first
apply write, its last apply write that carries its vote, the coordinator's decision write, its
commit message to shard-0000 just after the decision is logged, shard-0000's commit write),
SIGSTOPs the victim (the holder itself, or the other process: the worker of shard-0000 or the
coordinator), lets the holder go on (a holder that is the victim goes on from the point once
woken), keeps it stopped ``PAUSE`` seconds (past the shards' 10 s lock timeout and the drivers'
10 s waits for a reply; not past the coordinator's 120 s call timeout to a worker), starts two
other batches meanwhile (a driver process of its own streaming 4,000 items into a data context
of its own, and a second update of the same 12 items, from the agent, which needs the locks the
paused batch holds), then SIGCONTs it.

Where the paused worker is between writes (after its vote, and after the decision is logged:
the coordinator holds the point), the trial also **replaces** it while it is stopped, as a
restarted incarnation would: this process opens shard-0000, claims the next epoch and recovers
it (the batch's vote stays prepared, in doubt). Once woken, the old worker gets the
coordinator's commit and is fenced: three seconds later the batch is still prepared on
shard-0000 and the epoch is the replacement's (nothing the woken worker wrote landed; the
other driver's batch, sent to it too, is refused with ``STALE_EPOCH``). The old incarnation is
then SIGKILLed, as a supervisor ends a process it has replaced; Ray restarts the worker, and the
decision is delivered to it. (Nothing on Ray replaces a process that is only stopped: Ray
restarts dead actors, and a stopped coordinator keeps the store's owner lock.)

Every trial then checks, once the batches are over and recovery ran (``Rig.settle``):

* no batch hung: the three ended (completed or rolled back) within ``PAUSE + 90`` seconds of
  the pause (their timeout is the default 5 minutes);
* each is all-or-nothing, as its driver was told: the load's context holds all its items or
  none; every ``n`` of the updated context moved by 1000 for each update that reported success
  and by nothing else; every earlier trial's data is as it left it; a batch paused after its
  decision was logged (or replaced after its vote) completes;
* nothing is left: no batch running, no decision unfinished, no 2PC row or lock in any
  participant, every SQLite file passes ``PRAGMA integrity_check``.

``test_pause_worker_replaced_after_its_vote`` (the default suite) is the one representative
trial; ``test_pause_at_every_protocol_point`` (soak: ``pytest -m soak``) sweeps both processes
over the five points plus the two replacements (12 trials) and prints the table recorded in
docs/reliability.md. The Ray work runs in subprocesses (see tests/fault_rig.py); this module
never imports Ray.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from typing import Any, Optional

import pytest

from fault_rig import FINAL, SEED, Rig, kill

from batchray.core.storage.backends import open_backend

pytestmark = [pytest.mark.faults, pytest.mark.timeout(1200)]

PAUSE = 12.0  # seconds stopped: past the 10 s lock timeout and the drivers' 10 s waits
ITEMS = 12  # items of ``upd``, updated by the paused batch and another: 3-item chunks over both shards
UPDATED = "upd"
OTHER = 4_000  # the other driver's streamed load
NO_HANG = PAUSE + 90.0  # every batch ends within this many seconds of the pause
# point -> (label prefix of the crash point where the trial holds, which matching point: 1st, 2nd)
POINTS = {
    "during apply": ("shard-0001:apply", 1),  # shard-0001's first chunk, written, not committed
    "at the vote": ("shard-0001:apply+prepare", 1),  # its last chunk, the vote riding on it
    "after the votes": ("log:decide", 1),  # every shard prepared; the decision being written
    "after the decision is logged": ("send:commit:shard-0000", 1),  # nobody told yet
    "during commit": ("shard-0000:commit", 1),  # shard-0000's commit write
}
AFTER_DECISION = ("after the decision is logged", "during commit")
SWEEP = [(point, victim, False) for point in POINTS for victim in ("worker", "coordinator")] + [
    ("after the votes", "worker", True), ("after the decision is logged", "worker", True)]


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _shard_state(rig: Rig, shard: str, txns: list[str]) -> dict[str, Any]:
    """A shard file read from disk: its epoch, and which of ``txns`` it still holds open."""
    conn = sqlite3.connect(f"file:{rig.store / (shard + '.sqlite')}?mode=ro", uri=True, timeout=30)
    try:
        epoch = conn.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0]
        open_txns = {t for (t,) in conn.execute("SELECT txn FROM txns")}
    finally:
        conn.close()
    return {"epoch": epoch, "open": sorted(t for t in txns if t in open_txns)}


def _replace(rig: Rig, shard: str) -> dict[str, Any]:
    """Take ``shard`` over as a restarted worker would: claim the next epoch, recover."""
    backend = open_backend(str(rig.store))
    try:
        participant = backend.open_participant(shard, recover=False, lock_timeout=2.0)
        try:
            epoch = participant.claim_next()
            in_doubt = [d["txn"] for d in participant.recover()]
        finally:
            participant.close()
    finally:
        backend.close()
    return {"epoch": epoch, "in_doubt": in_doubt}


class PauseTrials:
    """The trials of one store: ``upd`` (``ITEMS`` items whose ``n`` every trial's two updates
    raise by 1000 each) and the data contexts of the streamed loads."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.base = 0  # every n of ``upd`` is base + its index
        rig.new_context(UPDATED)
        rig.call("start_load", tag="upd-seed", context=UPDATED, n=ITEMS, batch_size=3)
        assert rig.join("upd-seed")["result"]["success"]
        assert rig.call("quiesce")["quiet"]
        self.rig.expected[UPDATED] = ITEMS

    def run(self, trial: str, point: str, victim: str, replace: bool = False) -> dict[str, Any]:
        """One trial (see the module docstring); returns its row of the table."""
        rig = self.rig
        label, at = POINTS[point]
        other = rig.new_context(f"{trial}-d")
        info = rig.pids()  # before anything is stopped: the coordinator answers this
        t0 = time.time()
        rig.arm(trial, label, at)
        rig.call("start_batch", tag=trial, kind="update", context=UPDATED, n=ITEMS, batch_size=3)
        hit = rig.wait_hit()
        assert hit["label"].startswith(label), hit
        holder_is_worker = any(w["pid"] == hit["pid"] for w in info["workers"])
        if victim == "worker":
            pid = hit["pid"] if holder_is_worker else rig.worker_of(info, "shard-0000")
        else:
            pid = info["coordinator"]
        _signal(pid, signal.SIGSTOP)
        stopped = time.monotonic()
        replaced: Optional[dict[str, Any]] = None
        try:
            if replace:
                assert pid != hit["pid"] and pid == rig.worker_of(info, "shard-0000"), (pid, hit)
                replaced = _replace(rig, "shard-0000")  # the paused worker voted: its part is in doubt
                assert replaced["in_doubt"], f"{trial}: nothing prepared on shard-0000 to take over: {replaced}"
            rig.release()  # the holder goes on (once woken, if it is the one stopped)
            # other drivers' batches, meanwhile: a driver process streaming a load of its own,
            # and an update of the paused batch's items (it waits on their locks)
            driver = rig.start_driver(other, n=OTHER)
            rig.call("start_batch", tag=f"{trial}-a", kind="update", context=UPDATED, n=ITEMS, batch_size=3)
            time.sleep(max(0.0, PAUSE - (time.monotonic() - stopped)))
        finally:
            _signal(pid, signal.SIGCONT)
        woke = time.monotonic()
        fenced = None
        if replaced is not None:
            time.sleep(3.0)  # the woken worker gets the commit: refused, its epoch is stale
            state = _shard_state(rig, "shard-0000", replaced["in_doubt"])
            assert state["epoch"] == replaced["epoch"], f"{trial}: the epoch moved past the replacement's: {state}"
            assert state["open"] == replaced["in_doubt"], f"{trial}: the woken, replaced worker's commit landed: {state}"
            fenced = "its commit refused (STALE_EPOCH): the batch still prepared, epoch unchanged"
            kill(pid)  # the supervisor ends the replaced incarnation; Ray restarts the worker
        reported = {"paused": rig.join(trial), "update": rig.join(f"{trial}-a")}
        driver.proc.wait(timeout=NO_HANG)
        reported["driver"] = rig.driver_report(driver)
        driver.close()
        ended = time.monotonic()
        assert ended - woke <= NO_HANG, f"{trial}: the batches took {ended - woke:.0f} s after the pause"
        states = self.check(trial, t0, other, reported)
        if point in AFTER_DECISION or replace:
            assert states["paused"] == "completed", f"{trial}: decided to commit, yet {states['paused']}"
        refused = {name: _code(r) for name, r in reported.items() if _code(r)}
        row = {"point": point, "paused": victim, "held at": hit["label"], "replaced": replace, "refusals": refused,
               "paused batch": states["paused"], "other update": states["update"], "other driver": states["driver"],
               "fenced": fenced, "seconds": round(time.time() - t0, 1)}
        print(f"  {trial}: {json.dumps(row)}")
        return row

    def check(self, trial: str, since: float, other: str, reported: dict[str, dict]) -> dict[str, str]:
        """Recover; every batch since ``since`` ended, all-or-nothing, as its driver was told;
        earlier trials unchanged; nothing left behind. Each batch's state."""
        rig = self.rig
        s = rig.call("settle", since=since, contexts=sorted(rig.expected))
        where = f"trial {trial} (seed {SEED}): {json.dumps(s['batches'])}"
        assert all(b["state"] in FINAL for b in s["batches"]), f"a batch did not finish: {where}"
        assert s["undecided"] == [] and s["decided_not_done"] == [], where
        for participant, left in s["leftovers"].items():
            assert not any(left.values()), f"{participant} kept 2PC state or locks: {left}; {where}"
        rig.check_files(where)
        told = {}
        for name, report in reported.items():
            result = (report or {}).get("result")
            assert result is not None, f"{name}: no result reported ({report}); {where}"
            told[name] = bool(result["success"])
        # the streamed load: all its items or none, as its driver was told
        count = s["counts"][other]
        assert count == (OTHER if told["driver"] else 0), f"{other}: {count} of {OTHER} items, told {told}; {where}"
        rig.expected[other] = count
        # the two updates: each moved every n by 1000 or none, as its driver was told
        values = rig.call("values", context=UPDATED)
        moved = sum(told[name] for name in ("paused", "update"))
        expected = [self.base + 1000 * moved + i for i in range(ITEMS)]
        assert values == expected, f"{UPDATED}: {values}, expected {expected} (told {told}); {where}"
        self.base += 1000 * moved
        assert s["counts"] == rig.expected, f"earlier batches changed: {s['counts']} != {rig.expected}; {where}"
        return {name: "completed" if ok else "rolled_back" for name, ok in told.items()}


def _code(reported: Optional[dict[str, Any]]) -> Optional[str]:
    """The error code a rolled-back batch's driver was told (None for a success)."""
    result = (reported or {}).get("result") or {}
    if result.get("success", True):
        return None
    error = result.get("error") or {}
    return error.get("code") if isinstance(error, dict) else str(error)[:40]


def test_pause_worker_replaced_after_its_vote(rig: Rig) -> None:
    """The representative trial: the worker of shard-0000 stopped after its vote, replaced,
    woken (fenced), the batch completed, the other batches ended, nothing left."""
    row = PauseTrials(rig).run("rep", "after the votes", "worker", replace=True)
    assert row["fenced"] and row["paused batch"] == "completed"


@pytest.mark.soak
def test_pause_at_every_protocol_point(rig: Rig) -> None:
    started = time.time()
    trials = PauseTrials(rig)
    rows = [trials.run(f"p{index}", point, victim, replace) for index, (point, victim, replace) in enumerate(SWEEP)]
    print(f"\nswept {len(rows)} pauses in {time.time() - started:.0f} s (seed {SEED}); anomalies: 0")
    print("| point | paused | held at | replaced | paused batch | other update | other driver | refusals | s |")
    for r in rows:
        print(f"| {r['point']} | {r['paused']} | {r['held at']} | {'yes, fenced' if r['replaced'] else 'no'} | "
              f"{r['paused batch']} | {r['other update']} | {r['other driver']} | "
              f"{', '.join(sorted(set(r['refusals'].values()))) or '-'} | {r['seconds']} |")
    assert len(rows) == len(SWEEP)
