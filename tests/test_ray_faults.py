"""Kill tests on Ray: real SIGKILLs of a worker, of the coordinator and of the driver at each
point of two-phase commit, then restart, recovery and checks.

What every trial proves, after the kill, a reconnect, the batch reaching a final state and
``recover()``:

* the batch is all-or-nothing: its data context (one per trial) holds all N items if the batch
  completed and none if it was rolled back, and the outcome is the one the protocol point
  implies (see ``MATRIX``);
* every batch committed by an earlier trial is still all there, every rolled-back one still
  empty;
* nothing is left behind: no 2PC rows (``txns``, ``undo``, ``created``, ``applied``) and no lock
  in any participant (``coordinator.leftovers()``), no undecided or unfinished decision in the
  decision log, no batch left ``running`` or ``queued``; every SQLite file passes
  ``PRAGMA integrity_check`` (read straight from disk, read-only).

How a kill lands on a protocol point: the coordinator and workers run with
``BATCHRAY_CRASH_FILE`` (see :mod:`batchray.core.txn.crashpoints`). A trial writes that file to *hold*
the process that reaches a labelled point (``shard-0001:apply``, ``log:decide``,
``send:commit:shard-0000``, ``shard-0000:commit``) inside it; the test then SIGKILLs the
victim (the holder itself, or another process) and lets the holder go on. The points:

=============================  ==========================  ====================================
point                          held at                     state there
=============================  ==========================  ====================================
during apply                   2nd apply on shard-0001     chunks applied on both shards
after the votes                the decision log write      every participant prepared, no
                                                           decision
after the decision is logged   shard-0000's commit message decision durable, nobody told
during commit                  shard-0000's commit write   commit told, not yet durable there
=============================  ==========================  ====================================

Trials: 12 (every victim at every point), 10 at random times (4 coordinator, 3 worker, 3
driver), 4 crash exits (the coordinator after the commits but before the decision is marked
done, a worker while it votes, a worker in the catalog's commit of a schema batch, a worker in
the rollback of a rejected batch): 26 kill trials.

The Ray work runs in subprocesses (``tests/fault_driver.py``), driven through the rig of
``tests/fault_rig.py`` (which says why); this module never imports Ray, so it works whether it
runs alone or in the whole suite, in any order.
"""
from __future__ import annotations

import json
import random
import time

import pytest

from fault_rig import CHUNK, N, SEED, Rig
from fault_rig import kill as _kill

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]

# point -> (label prefix of the crash point, which matching point of the trial: 1st, 2nd)
POINTS = {
    "during apply": ("shard-0001:apply", 2),
    "after the votes": ("log:decide", 1),
    "after the decision is logged": ("send:commit:shard-0000", 1),
    "during commit": ("shard-0000:commit", 1),
}
MATRIX = {  # (point, victim) -> the outcome the protocol implies
    ("during apply", "worker"): "rolled_back",  # the restarted worker aborted its part
    ("during apply", "coordinator"): "rolled_back",  # undecided: presumed abort
    ("during apply", "driver"): "rolled_back",  # input stops: the stall timeout rolls back
    ("after the votes", "worker"): "completed",  # prepared survives; commit redelivered
    ("after the votes", "coordinator"): "rolled_back",  # no decision logged: presumed abort
    ("after the votes", "driver"): "completed",  # the input was complete
    ("after the decision is logged", "worker"): "completed",
    ("after the decision is logged", "coordinator"): "completed",  # recovery delivers it
    ("after the decision is logged", "driver"): "completed",
    ("during commit", "worker"): "completed",  # the lost commit is delivered again
    ("during commit", "coordinator"): "completed",
    ("during commit", "driver"): "completed",
}


# -- the tests --------------------------------------------------------------------------------

def test_sigkill_each_process_at_each_protocol_point(rig: Rig) -> None:
    """12 trials: a SIGKILL of a worker, of the coordinator, of the driver, at each of the four
    points, each landing exactly there (the process at the point is held until the kill)."""
    rig.new_context("warmup")
    t0 = time.time()
    rig.call("start_load", tag="warmup", context="warmup", n=N, batch_size=CHUNK)
    assert rig.join("warmup")["result"]["success"]
    assert rig.check("warmup", t0, "warmup", expect="completed") == "completed"

    for index, ((point, victim), expect) in enumerate(MATRIX.items()):
        trial = f"m{index}"
        label, at = POINTS[point]
        context = rig.new_context(trial)
        info = rig.pids()
        t0 = time.time()
        rig.arm(trial, label, at)
        driver = None
        if victim == "driver":
            # paced while applying, so the driver is surely still streaming when killed there
            driver = rig.start_driver(context, pace=0.1 if point == "during apply" else 0.0)
        else:
            rig.call("start_load", tag=trial, context=context, n=N, batch_size=CHUNK)
        hit = rig.wait_hit()
        assert hit["label"].startswith(label), hit
        if victim == "worker":
            holder_is_worker = any(w["pid"] == hit["pid"] for w in info["workers"])
            pid = hit["pid"] if holder_is_worker else rig.worker_of(info, "shard-0000")
        elif victim == "coordinator":
            pid = info["coordinator"]
        else:
            pid = driver.proc.pid
        _kill(pid)
        if pid != hit["pid"]:
            rig.release()
        if driver is not None:
            driver.proc.wait(timeout=60)
            reported = rig.driver_report(driver)
            driver.close()
        else:
            reported = rig.join(trial)
        rig.check(f"{trial} {victim} killed {point}", t0, context, expect=expect, reported=reported)
    assert len(rig.trials) == 1 + len(MATRIX)


def test_sigkill_at_random_times(rig: Rig) -> None:
    """7 trials: the coordinator, a worker or the driver SIGKILLed at a random moment of a
    streaming batch (seeded: BATCHRAY_FAULT_SEED); the coordinator's trials 0 and 4 are paced,
    trial 3 is not."""
    rng = random.Random(SEED)
    plan = ["coordinator", "worker", "driver", "coordinator", "coordinator", "worker", "driver"]
    for index, victim in enumerate(plan):
        trial = f"r{index}"
        context = rig.new_context(trial)
        info = rig.pids()
        t0 = time.time()
        if victim == "driver":
            # killed while streaming: after a random number of chunks, never at the end, and
            # past the first chunk's rows, which the client reads ahead before its batch exists
            driver = rig.start_driver(context, pace=0.05)
            threshold = rng.randrange(2, N // CHUNK - 2) * CHUNK
            while rig.driver_fed(driver) < threshold:
                pass
            _kill(driver.proc.pid)
            driver.proc.wait(timeout=60)
            driver.close()
            rig.check(f"{trial} driver killed after {threshold} items", t0, context, expect="rolled_back")
            continue
        # paced loads stream for about 1 s and the kill lands inside; every other coordinator
        # trial runs unpaced (about 0.5 s), so its kill may land in any phase, or after the end
        paced = victim == "worker" or index % 4 == 0
        n = N if paced else 3 * N
        rig.call("start_load", tag=trial, context=context, n=n, batch_size=CHUNK, pace=0.1 if paced else 0.0)
        delay = rng.uniform(0.1, 0.9) if paced else rng.uniform(0.05, 0.6)
        time.sleep(delay)
        pid = info["coordinator"] if victim == "coordinator" else rng.choice(info["workers"])["pid"]
        _kill(pid)
        reported = rig.join(trial)
        rig.check(f"{trial} {victim} killed after {delay:.2f} s", t0, context, n=n, reported=reported)
    assert len(rig.trials) == len(plan)


def test_a_worker_killed_in_a_non_atomic_load_leaves_counts_that_match_the_store(rig: Rig) -> None:
    """A non-atomic load whose shard-0001 worker is SIGKILLed midway: the restarted worker
    aborts that shard's part (presumed abort) and refuses its later chunks, the other shard
    commits. What the result counts as created is what the store holds, and every item is
    counted as created or failed (the shard's chunks applied before the kill were counted as
    created, though they were rolled back with it)."""
    context = rig.new_context("n0")
    t0 = time.time()
    info = rig.pids()
    rig.call("start_load", tag="n0", context=context, n=N, batch_size=CHUNK, pace=0.1, atomic=False)
    time.sleep(0.5)
    _kill(rig.worker_of(info, "shard-0001"))
    reported = rig.join("n0")
    result = reported.get("result")
    assert result is not None, reported
    s = rig.call("settle", since=t0, contexts=sorted(rig.expected))
    where = f"(seed {SEED}): {json.dumps(result)} {json.dumps(s['batches'])}"
    assert s["counts"][context] == result["created"], where
    assert result["created"] + result["failed"] == N, where
    assert result["success"] == (result["failed"] == 0), where
    assert s["undecided"] == [] and s["decided_not_done"] == [], where
    for participant, left in s["leftovers"].items():
        assert not any(left.values()), f"{participant} kept 2PC state or locks: {left}; {where}"
    rig.expected[context] = s["counts"][context]


def test_crash_exits_in_recovery_paths(rig: Rig) -> None:
    """4 trials where the process dies on its own at the point (``os._exit(137)``): the
    coordinator where only recovery can finish the batch, a worker while it votes, and workers
    in the commit and rollback steps of other kinds of batch (a schema change; a load rejected
    for a bad item)."""
    info = rig.pids()
    exits = [
        # the coordinator, once the commits are delivered, before the decision is marked done
        ("coordinator", "log:done", "completed"),
        # the worker of shard-0001 while it votes: its vote is lost
        ("worker", "shard-0001:prepare", "rolled_back"),
    ]
    for index, (who, label, expect) in enumerate(exits):
        trial = f"x{index}"
        context = rig.new_context(trial)
        t0 = time.time()
        rig.arm(trial, label, 1, action="exit")
        rig.call("start_load", tag=trial, context=context, n=N, batch_size=CHUNK)
        pid = info["coordinator"] if who == "coordinator" else rig.worker_of(info, "shard-0001")
        assert rig.wait_hit()["pid"] == pid
        reported = rig.join(trial)
        rig.check(f"{trial} {who} exits at {label}", t0, context, expect=expect, reported=reported)
        info = rig.pids()

    # the catalog's worker dies in the commit of a new data context: its one chunk at one
    # participant commits in one phase, so the commit is the apply+commit write; the write is
    # lost with the process, and the batch ends whole or not at all (rolled back when the
    # coordinator resolves it at the restarted worker first, completed when its apply+commit is
    # sent again first)
    t0 = time.time()
    rig.arm("x-catalog", "catalog:apply+commit", 1, action="exit")
    result = rig.call("context", name="x-schema")
    assert rig.wait_hit()["label"].startswith("catalog:apply+commit")
    rig.check("x-catalog worker exits committing a schema batch", t0, "x-schema", expect=None,
              reported={"result": result}, kind="create_data_context")

    # a shard's worker dies rolling back a load rejected for its last item
    context = rig.new_context("x-reject")
    t0 = time.time()
    rig.arm("x-reject", "shard-0000:abort", 1, action="exit")
    rig.call("start_load", tag="x-reject", context=context, n=N, batch_size=CHUNK, bad_at=N - 1)
    assert rig.wait_hit()["label"].startswith("shard-0000:abort")
    reported = rig.join("x-reject")
    rig.check("x-reject worker exits rolling back", t0, context, expect="rolled_back", reported=reported)
    assert len(rig.trials) == 4
