"""Crash-point sweep on Ray: one batch, a real process exit at its n-th durable write, for every n,
in every process the batch writes from.

The store runs 3 worker actors over 2 shards, so each participant has a process of its own
(catalog, shard-0000, shard-0001) besides the coordinator. A process *role* is one of those
processes; each counts its own durable writes (:func:`batchray.core.txn.crashpoints.durable_write`:
decision-log writes in the coordinator, apply / prepare / commit / abort writes in a worker).
For each batch kind and each role that batch writes from, trial n arms the crash-point trigger
file with ``{"pid": <that process>, "writes": true, "at": n, "action": "exit"}``: the process
``os._exit(137)``s inside its n-th write of the batch (the write is not committed), Ray restarts
it, and the batch ends one way or the other. The role's sweep ends at the first n that the batch
survives (the process made fewer than n writes).

Batch kinds (each chunked so that a worker applies 2 chunks, then votes, then commits):

* ``create``: 12 new items over both shards, submitted whole;
* ``update``: ``n = n + 1000`` on 12 existing items (expression updates);
* ``context``: a new data context (the catalog participant's writes): one chunk at one
  participant, so it commits in one phase (``apply+commit``: no vote, no decision record);
* ``small``: 12 new items in one chunk, so on one shard: one-phase commit as well, sent by the
  driver's direct lane straight to the shard's worker (``batchray.core.run.direct``): an exit
  at its ``apply+commit`` loses the answer, the coordinator resolves the batch at the restarted
  shard (aborted there: nothing of it) and the driver runs it again through the coordinator,
  so it completes, registered once; an exit of the coordinator at the batch's record (written
  after the commit) leaves it completed and recorded once (Ray delivers the record again).

After every trial, once the driver reconnected and recovery ran:

* the batch is all-or-nothing (12 items or none; every ``n`` moved by 1000 or none; the
  context there whole or not at all) and every earlier trial's data is as it left it;
* an exit at a worker's vote, or at the decision write, rolls the batch back; an exit at a
  commit write, or at any write of the coordinator after the decision, completes it (an exit at
  a worker's first apply may do either: nothing of the batch is there yet, and the apply is
  retried on the restarted worker); a one-phase batch: an exit at the worker's ``apply+commit``
  write leaves nothing of it (or the batch completes when the coordinator sends it again to
  the restarted worker), and every exit of the coordinator after the write that marks the
  batch running (its last before the ``apply+commit`` goes out) completes it (recovery
  resolves it at the shard and finds it committed);
* the submission registered one batch (a submit Ray re-sent to the restarted coordinator finds
  it by the client's idempotency key instead of running the batch again);
* no batch is left running, no decision unfinished, no 2PC row or lock in any participant, and
  every SQLite file passes ``PRAGMA integrity_check`` (read from disk, read-only).

The number of crash points swept is printed (about 40 over every process, a soak run: ``pytest -m
soak tests/test_ray_crash_sweep.py``; about 20 in the suite's run, which sweeps each kind of
process once: the coordinator, each data shard, the catalog).
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from fault_rig import FINAL, Rig

pytestmark = [pytest.mark.faults, pytest.mark.timeout(1200)]

ITEMS = 12
CHUNK = 3  # 6 items per shard: 2 chunks each
MAX_WRITES = 40  # per process and batch; more means the sweep never ends
ONE_PHASE = ("context", "small")  # batches of one chunk at one participant


@pytest.fixture
def rig(cluster, tmp_path):
    rig = Rig(cluster, tmp_path)
    try:
        info = rig.connect(workers=3, shards=2)
        assert sorted(tuple(w["shards"]) for w in info["workers"]) == [
            ("catalog",), ("shard-0000",), ("shard-0001",)], info
        yield rig
    finally:
        rig.close()
    rig.check_files("after the actors stopped")


class Sweep:
    """The trials of one store and what each left."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.points: list[dict[str, Any]] = []
        self.trials = 0
        self.update_base = 0  # every n of the update context is base + its index
        self.contexts: set[str] = set()

    def role_pid(self, role: str) -> int:
        info = self.rig.pids()
        if role == "coordinator":
            return info["coordinator"]
        return next(w["pid"] for w in info["workers"] if role in w["shards"])

    def prepare(self, kind: str, trial: str) -> str:
        """The data context the trial's batch works on (before anything is armed)."""
        if kind in ("create", "small"):
            self.rig.new_context(trial)
            self.contexts.add(trial)
            return trial
        if kind == "update":
            if "upd" not in self.contexts:
                self.rig.new_context("upd")
                self.rig.call("start_load", tag="upd-seed", context="upd", n=ITEMS, batch_size=CHUNK)
                assert self.rig.join("upd-seed")["result"]["success"]
                self.contexts.add("upd")
                assert self.rig.call("quiesce")["quiet"]
            return "upd"
        return trial  # a context to be created by the batch itself

    def run(self, kind: str, role: str, n: int) -> bool:
        """Trial n of (kind, role): arm, run the batch, recover, check. True if the point was hit."""
        self.trials += 1
        trial = f"{kind[:3]}-{role[-4:]}-{n}"
        context = self.prepare(kind, trial)
        pid = self.role_pid(role)
        t0 = time.time()
        self.rig.arm(trial, "", n, action="exit", pid=pid, writes=True)
        if kind == "context":
            reported = {"result": self.rig.call("context", name=context)}
        else:
            batch = "create" if kind == "small" else kind
            sent = self.rig.call("lane")["sent"]
            self.rig.call("start_batch", tag=trial, kind=batch, context=context, n=ITEMS,
                          batch_size=ITEMS if kind == "small" else CHUNK)
            reported = self.rig.join(trial)
            if kind == "small":  # sent straight to its shard's worker by the driver's direct lane
                lane = self.rig.call("lane")
                assert lane["sent"] == sent + 1, f"{trial}: the small batch did not take the direct lane: {lane}"
        # the driver has its result at the commit point; phase 2 and the last writes of the
        # batch's record come after it, and are crash points of this trial too
        assert self.rig.call("quiesce")["quiet"]
        deadline = time.monotonic() + 1.0
        while self.rig.hit() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        hit = self.rig.hit()
        self.rig.disarm()
        outcome = self.check(kind, trial, context, t0, reported)
        if hit is None:
            assert outcome == "all", f"{trial}: no crash, yet the batch did not complete: {reported}"
            return False
        assert hit["pid"] == pid, hit
        label = hit["label"]
        where = f"{trial}: exit at {label} ({role}) -> {outcome}"
        if label.endswith((":prepare", "log:decide")):
            assert outcome == "none", where  # a vote lost / no decision durable: presumed abort
        if label.endswith((":committed", "log:done")):
            assert outcome == "all", where  # the decision is durable: recovery finishes it
        if kind in ONE_PHASE:
            assert not label.endswith((":prepare", "log:decide")), where  # no vote, no decision
        self.points.append({"kind": kind, "role": role, "n": n, "label": label, "outcome": outcome})
        print(f"  {kind:7s} {role:11s} write {n:2d}  {label:28s} {outcome}")
        return True

    def check(self, kind: str, trial: str, context: str, since: float, reported: dict[str, Any]) -> str:
        s = self.rig.call("settle", since=since, contexts=sorted(self.contexts))
        where = f"{trial}: {s['batches']}"
        assert all(b["state"] in FINAL for b in s["batches"]), f"a batch did not finish: {where}"
        assert s["undecided"] == [] and s["decided_not_done"] == [], where
        for participant, left in s["leftovers"].items():
            assert not any(left.values()), f"{participant} kept 2PC state or locks: {left}; {where}"
        self.rig.check_files(trial)
        # the store, and the earlier trials' data
        for name, count in s["counts"].items():
            if name == "upd":
                assert count == ITEMS, (name, count, where)
            elif name != context:
                assert count == self.rig.expected.get(name, 0), (name, count, where)
        if kind in ("create", "small"):
            count = s["counts"][context]
            assert count in (0, ITEMS), f"a partial batch: {count} of {ITEMS} items; {where}"
            outcome = "all" if count == ITEMS else "none"
            self.rig.expected[context] = count
        elif kind == "update":
            values = self.rig.call("values", context="upd")
            before = [self.update_base + i for i in range(ITEMS)]
            after = [v + 1000 for v in before]
            assert values in (before, after), f"a partial batch: {values}; {where}"
            outcome = "all" if values == after else "none"
            self.update_base += 1000 if outcome == "all" else 0
        else:
            outcome = "all" if context in s["contexts"] else "none"
            if outcome == "all":
                self.contexts.add(context)
                self.rig.expected[context] = 0
                assert s["counts"].get(context, 0) == 0 or context not in s["counts"]
        # one batch registered for the one submission: a submit that Ray sent again to the
        # restarted coordinator found the batch registered before (the client's key) instead
        # of running the batch twice
        kinds = {"create": "create_items", "small": "create_items", "update": "update_items",
                 "context": "create_data_context"}
        mine = [b for b in s["batches"] if b["kind"] == kinds[kind]]
        assert len(mine) == 1, f"{len(mine)} batches registered for one submission: {where}"
        assert (outcome == "all") == (mine[0]["state"] == "completed"), f"the store and the batch record disagree: {where}"
        result = reported.get("result")
        if result is not None:  # what the driver was told agrees with the store
            assert result["success"] == (outcome == "all"), (result, where)
        return outcome


EVERY_PROCESS = [("create", "coordinator"), ("create", "shard-0000"), ("create", "shard-0001"),
                 ("update", "coordinator"), ("update", "shard-0000"), ("update", "shard-0001"),
                 ("context", "coordinator"), ("context", "catalog"), ("small", "coordinator"),
                 ("small", "shard-0000")]
"""Every process each batch kind writes from (the soak run)."""
EACH_KIND_OF_PROCESS = [("create", "coordinator"), ("create", "shard-0000"), ("update", "shard-0001"),
                        ("context", "catalog"), ("small", "shard-0000")]
"""The suite's run: the coordinator, each data shard and the catalog once, over the three batch
kinds, and the direct lane's one write at a shard; the other roles repeat a kind of process
already swept (the two shards are alike, and the coordinator writes the same log whatever the
batch)."""


def test_crash_at_every_durable_write_of_each_kind_of_process(rig: Rig) -> None:
    _sweep_roles(rig, EACH_KIND_OF_PROCESS)


@pytest.mark.soak
def test_crash_at_every_durable_write_of_every_process(rig: Rig) -> None:
    _sweep_roles(rig, EVERY_PROCESS)


def _sweep_roles(rig: Rig, plan: list[tuple[str, str]]) -> None:
    sweep = Sweep(rig)
    per_role: Counter = Counter()
    started = time.time()
    for kind, role in plan:
        for n in range(1, MAX_WRITES + 1):
            if not sweep.run(kind, role, n):
                break
            per_role[(kind, role)] += 1
        else:
            pytest.fail(f"{kind}/{role}: still writing after {MAX_WRITES} writes")
        points = [p for p in sweep.points if (p["kind"], p["role"]) == (kind, role)]
        if role == "coordinator" and kind in ONE_PHASE:  # every exit once apply+commit may be out completes
            # a batch that starts at its submission is registered running (its one write before
            # the apply+commit is sent): every exit after that write completes it
            running = next(i for i, p in enumerate(points) if p["label"] == "log:add")
            assert all(p["outcome"] == "all" for p in points[running + 1:]), points
        elif role == "coordinator":  # every exit after the decision write completes the batch
            decide = next(i for i, p in enumerate(points) if p["label"] == "log:decide")
            assert all(p["outcome"] == "all" for p in points[decide + 1:]), points
    outcomes = Counter(p["outcome"] for p in sweep.points)
    print(f"\nswept {len(sweep.points)} crash points in {sweep.trials} trials, {time.time() - started:.0f} s: "
          + ", ".join(f"{k}/{r} {c}" for (k, r), c in per_role.items())
          + f"; outcomes: {outcomes['all']} completed, {outcomes['none']} rolled back; anomalies: 0")
    # every role of every batch was swept, and the protocol's points are among them
    # (a participant's one-phase batch is one write: its apply+commit)
    assert all(per_role[(k, r)] >= (1 if k in ONE_PHASE and r != "coordinator" else 2) for k, r in plan), per_role
    steps = {p["label"].split(":", 1)[1] for p in sweep.points}
    for step in ("apply", "prepare", "committed", "decide", "done", "apply+commit"):  # a vote may ride on an apply
        assert any(step in s for s in steps), (step, steps)
    assert outcomes["all"] and outcomes["none"]
