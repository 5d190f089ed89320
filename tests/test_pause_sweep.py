"""Pauses on Ray at every protocol point: a worker, or the coordinator, frozen with SIGSTOP at a
point of two-phase commit for longer than the lock timeout and the drivers' waits, while other
drivers' batches run, then woken with SIGCONT.

How a pause lands on a point: the actors run with the crash-point trigger file
(:mod:`batchray.core.txn.crashpoints`, through ``tests/fault_rig.py``). A trial arms it to *hold*
the process that reaches the point (the points of ``fault_rig.POINTS``: the 2nd apply write on
shard-0001, the coordinator's decision write, its commit message to shard-0000 just after the
decision is logged, shard-0000's commit write), SIGSTOPs the victim (the holder itself, or the
other process: the worker of shard-0000 or the coordinator), lets the holder go on (a holder
that is the victim goes on from the point once woken), keeps it stopped ``PAUSE`` seconds (past
the shards' 10 s lock timeout and the drivers' 10 s waits for a reply), starts two other
batches meanwhile (a driver process of its own streaming 4,000 items into a data context of its
own, and a 12-item batch of the agent's), then SIGCONTs it.

Where the paused worker is between writes (after its vote, and after the decision is logged:
the coordinator holds the point), the trial also **replaces** it while it is stopped, as a
restarted incarnation would: this process opens shard-0000, claims the next epoch and recovers
it (the batch's vote stays prepared, in doubt). Once woken, the old worker gets the
coordinator's commit and is fenced: three seconds later the batch is still prepared on
shard-0000 and the epoch is the replacement's (nothing the woken worker wrote landed). The old
incarnation is then SIGKILLed, as a supervisor ends a process it has replaced; Ray restarts the
worker, and the decision is delivered to it.

Every trial then checks, once the batches are over and recovery ran (``Rig.settle``):

* no batch hung: the paused batch and both others ended (completed or rolled back) within
  ``PAUSE + 90`` seconds of the pause (their timeout is the default 5 minutes);
* each is all-or-nothing (its data context holds all its items or none), what its driver was
  told agrees with the store, and every earlier trial's data is as it left it; a batch paused
  after its decision was logged completes;
* nothing is left: no batch running, no decision unfinished, no 2PC row or lock in any
  participant, every SQLite file passes ``PRAGMA integrity_check``.

``test_pause_worker_replaced_after_its_vote`` (the default suite) is the one representative
trial; ``test_pause_at_every_protocol_point`` (soak: ``pytest -m soak``) sweeps both processes
over the four points plus the two replacements (10 trials) and prints the table recorded in
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

from fault_rig import FINAL, POINTS, SEED, Rig, kill

pytestmark = [pytest.mark.faults, pytest.mark.timeout(1200)]

PAUSE = 12.0  # seconds stopped: past the 10 s lock timeout and the drivers' 10 s waits
ITEMS = 12  # the paused batch and the agent's other batch: 3-item chunks over both shards
OTHER = 4_000  # the other driver's streamed load
NO_HANG = PAUSE + 90.0  # every batch ends within this many seconds of the pause
AFTER_DECISION = ("after the decision is logged", "during commit")
SWEEP = [(point, victim, False) for point in POINTS for victim in ("worker", "coordinator")] + [
    ("after the votes", "worker", True), ("after the decision is logged", "worker", True)]




@pytest.fixture
def rig(cluster, tmp_path):
    rig = Rig(cluster, tmp_path)
    try:
        rig.connect()
        yield rig
    finally:
        rig.close()
    rig.check_files("after the actors stopped")


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
    from batchray.core.storage.backends import open_backend

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


def pause_trial(rig: Rig, trial: str, point: str, victim: str, replace: bool) -> dict[str, Any]:
    """One trial (see the module docstring); returns its row of the table."""
    label, at = POINTS[point]
    context, other, agent_other = (rig.new_context(f"{trial}{suffix}") for suffix in ("", "-d", "-a"))
    info = rig.pids()  # before anything is stopped: the coordinator answers this
    t0 = time.time()
    rig.arm(trial, label, at)
    rig.call("start_batch", tag=trial, kind="create", context=context, n=ITEMS, batch_size=3)
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
        driver = rig.start_driver(other, n=OTHER)  # other drivers' batches, meanwhile
        rig.call("start_batch", tag=f"{trial}-a", kind="create", context=agent_other, n=ITEMS, batch_size=3)
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
    reported = rig.join(trial)
    reported_agent = rig.join(f"{trial}-a")
    driver.proc.wait(timeout=NO_HANG)
    reported_driver = rig.driver_report(driver)
    driver.close()
    ended = time.monotonic()
    assert ended - woke <= NO_HANG, f"{trial}: the batches took {ended - woke:.0f} s after the pause"
    states = check_trial(rig, trial, t0, {context: (ITEMS, reported), agent_other: (ITEMS, reported_agent),
                                          other: (OTHER, reported_driver)})
    if point in AFTER_DECISION or replace:
        assert states[context] == "completed", f"{trial}: decided to commit, yet {states[context]}"
    row = {"point": point, "paused": victim, "held at": hit["label"], "replaced": replace,
           "paused batch": states[context], "other driver": states[other], "agent batch": states[agent_other],
           "fenced": fenced, "seconds": round(time.time() - t0, 1)}
    print(f"  {trial}: {json.dumps(row)}")
    return row


def check_trial(rig: Rig, trial: str, since: float, batches: dict[str, tuple[int, dict]]) -> dict[str, str]:
    """Recover; every batch since ``since`` ended, all-or-nothing, as its driver was told;
    earlier trials unchanged; nothing left behind. The state of each context's batch."""
    s = rig.call("settle", since=since, contexts=sorted(set(rig.expected) | set(batches)))
    where = f"trial {trial} (seed {SEED}): {json.dumps(s['batches'])}"
    assert all(b["state"] in FINAL for b in s["batches"]), f"a batch did not finish: {where}"
    assert s["undecided"] == [] and s["decided_not_done"] == [], where
    for participant, left in s["leftovers"].items():
        assert not any(left.values()), f"{participant} kept 2PC state or locks: {left}; {where}"
    rig.check_files(where)
    states: dict[str, str] = {}
    for context, (n, reported) in batches.items():
        count = s["counts"][context]
        assert count in (0, n), f"{context}: {count} of {n} items, a partial batch; {where}"
        states[context] = "completed" if count == n else "rolled_back"
        result = (reported or {}).get("result")
        assert result is not None, f"{context}: no result reported ({reported}); {where}"
        assert result["success"] == (count == n), f"{context}: told {result}, the store holds {count}; {where}"
        rig.expected[context] = count
    assert s["counts"] == rig.expected, f"earlier batches changed: {s['counts']} != {rig.expected}; {where}"
    return states


def test_pause_worker_replaced_after_its_vote(rig: Rig) -> None:
    """The representative trial: the worker of shard-0000 stopped after its vote, replaced,
    woken (fenced), the batch completed, the other batches ended, nothing left."""
    row = pause_trial(rig, "rep", "after the votes", "worker", replace=True)
    assert row["fenced"] and row["paused batch"] == "completed"


@pytest.mark.soak
def test_pause_at_every_protocol_point(rig: Rig) -> None:
    started = time.time()
    rows = [pause_trial(rig, f"p{index}", point, victim, replace)
            for index, (point, victim, replace) in enumerate(SWEEP)]
    print(f"\nswept {len(rows)} pauses in {time.time() - started:.0f} s (seed {SEED}); anomalies: 0")
    print("| point | paused | held at | replaced | paused batch | other driver | agent's other batch | s |")
    for r in rows:
        print(f"| {r['point']} | {r['paused']} | {r['held at']} | {'yes, fenced' if r['replaced'] else 'no'} | "
              f"{r['paused batch']} | {r['other driver']} | {r['agent batch']} | {r['seconds']} |")
    assert len(rows) == len(SWEEP)
