"""A seeded simulator: many transfer transactions over real SQLite shards, under faults.

One *seed* builds a fresh store in a temporary directory (on ``/dev/shm`` when there is one:
``synchronous=FULL`` stays on, but an fsync there costs microseconds): 3 or 4
:class:`~batchray.core.storage.sqlite.shard.SqliteShard` files and a :class:`~batchray.core.storage.decision_log.DecisionLog`.
Accounts, items with a numeric ``balance``, a touch counter ``n`` and the id of the last
transaction that touched them ``last``, are spread over the shards. Then ``txns`` transactions
run one after the other through :class:`~batchray.core.txn.twophase.TwoPhaseCommit`. Most move money
between 2 to 4 accounts on different shards (``UpdateItems``); some open an account on one
shard funded from another (``CreateItems``), some close one (``DeleteItems``) into an account on
another shard: **every transaction conserves the sum of the balances**. Half of them write
explicit values computed from values read just before (``{"balance": 995, ...}``), half
write expressions (``{"balance": "=balance - 5"}``); some name a missing item and must roll back.

The coordinator reaches the shards through :class:`SimTransport`, which decides, with the
seed's own random generator, what happens to each message:

* ``drop_request``: lost before delivery (the coordinator sees ``ParticipantUnavailable``);
* ``drop_reply``: delivered, but the reply is lost;
* ``duplicate``: delivered twice (both replies must agree);
* ``delay``: held back and delivered later, at a random point, possibly long after the
  transaction finished and after the shard was restarted with a newer epoch;
* ``crash_before`` / ``crash_during`` / ``crash_after``: the shard process dies before the step,
  at the step's durable write (a :class:`~batchray.core.txn.crashpoints.SimulatedCrash` from the crash
  points, so the write does not happen), or after it; the shard stays down for a few messages
  and is then restarted: the file is reopened, which runs its recovery, and a newer epoch is
  claimed; ``bystander_crash`` does the same to another shard, idle at that moment (between
  its apply and its vote, say);
* a **coordinator crash** at a random durable write of the decision log (crash points
  labelled ``log:``) or at a random message (before or after it is delivered); the log is then
  reopened and :func:`~batchray.core.txn.twophase.recover` finishes what was left, and may itself crash;
* a **restart of everything** between transactions.

Phase 2 gives up after a few rounds (``phase2_attempts``), leaving transactions in doubt; the
simulator runs recovery between transactions until they are finished, as a coordinator's
background task would.

Invariants, checked between transactions and at the end (after every held message has been
delivered and everything has restarted and recovered with faults off):

* the committed view of every account equals the model: its initial values plus the effects of
  the transactions the decision log says committed and whose commit has reached that shard
  (a shard's own record of the outcome); so the sum of balances is conserved at quiescence,
  and uncommitted writes (in-place updates, created and deleted items) are never visible;
* strict two-phase locking holds across restarts: every item an unfinished transaction wrote
  is locked by it;
* a transaction the coordinator acknowledged as committed is committed in the log and its
  effect is present (after a full restart: durable); one acknowledged as rolled back has no
  effect; one whose outcome the client never learnt (a coordinator crash) is all-or-nothing:
  the log holds one outcome for it, and every shard's own record of it agrees;
* a transaction naming a missing item never commits;
* at quiescence no shard holds 2PC state (``leftovers()`` all zero) or a lock, and every
  shard passes SQLite's integrity check;
* no participant ever raises :class:`~batchray.errors.InternalError` (a broken invariant).

A run is deterministic for its seed: the trace of events (messages, faults, results) has the
same hash on every run, so a failing seed printed by the CLI or a test replays identically::

    python -m batchray.testing.simulator --seeds 10000 --txns 50
    python -m batchray.testing.simulator --seed 1234 --txns 50 --trace
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
import traceback
from collections import Counter, deque
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Optional

import orjson

from batchray.core.txn import crashpoints
from batchray.core.txn.chunks import ITEM_BITS, CreateItems, DeleteItems, TxnRef, UpdateItems
from batchray.core.txn.crashpoints import SimulatedCrash
from batchray.core.storage.decision_log import DecisionLog
from batchray.errors import BatchrayError, InternalError, ParticipantUnavailable
from batchray.core.txn.memory import MemoryBudget
from batchray.core.txn.chunks import PlannedChunk
from batchray.core.storage.sqlite.shard import SqliteShard
from batchray.core.txn.twophase import TwoPhaseCommit, recover

CONTEXT_ID = 1
BASE_ID = CONTEXT_ID << ITEM_BITS
MISSING_ID = BASE_ID + (1 << 30)  # never created: a transaction naming it must roll back

MESSAGE_FAULTS = ("drop_request", "drop_reply", "duplicate", "delay", "crash_before", "crash_during", "crash_after")


@dataclass(frozen=True)
class Faults:
    """Fault probabilities: per message, per transaction or per recovery, as named."""

    drop_request: float = 0.03  # per message
    drop_reply: float = 0.03  # per message
    duplicate: float = 0.03  # per message
    delay: float = 0.04  # per message
    participant_crash: float = 0.025  # per message; before, during or after the step
    bystander_crash: float = 0.01  # per message: another shard dies meanwhile (it was idle)
    deliver_late: float = 0.15  # per message and per backoff: deliver one held message first
    max_held: int = 6  # held messages beyond this are lost for good
    downtime: int = 3  # a crashed shard misses up to this many messages before it restarts
    fence_on_restart: bool = True  # a restarted shard claims a newer epoch
    coordinator_crash: float = 0.06  # per transaction
    recovery_crash: float = 0.2  # per recovery run
    restart_all: float = 0.01  # per transaction, between transactions
    resolve: float = 0.25  # per transaction: the background recovery runs (else in-doubt ones wait)
    bad_txn: float = 0.05  # per transaction: names a missing item, must roll back

    @classmethod
    def none(cls) -> "Faults":
        zero = {f.name: 0 for f in fields(cls)}
        return cls(**{**zero, "fence_on_restart": False, "resolve": 1.0})


@dataclass(frozen=True)
class SimConfig:
    txns: int = 50
    shards: tuple[int, int] = (3, 4)  # inclusive range, drawn per seed
    accounts_per_shard: int = 2  # few accounts: transactions often meet one in doubt
    initial_balance: int = 1000
    max_retries: int = 3  # phase-1 retries of a chunk
    phase2_attempts: int = 2  # phase-2 rounds before a transaction is left in doubt
    faults: Faults = field(default_factory=Faults)


@dataclass
class SimResult:
    seed: int
    config: SimConfig
    shards: int = 0
    txns: int = 0
    committed: int = 0
    aborted: int = 0
    unknown: int = 0  # the client never learnt the outcome (coordinator crash)
    in_doubt: int = 0  # left in doubt by phase 2 at least once
    faults: Counter = field(default_factory=Counter)
    observed: Counter = field(default_factory=Counter)  # how the shards took late messages
    kinds: Counter = field(default_factory=Counter)  # transactions by kind and outcome
    violations: list[str] = field(default_factory=list)
    trace_hash: str = ""
    state_hash: str = ""
    events: int = 0
    trace: list[tuple] = field(default_factory=list)  # the whole trace with keep_trace, else the tail
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations

    def replay_command(self) -> str:
        extra = " --no-faults" if self.config.faults == Faults.none() else ""
        return f"python -m batchray.testing.simulator --seed {self.seed} --txns {self.config.txns}{extra} --trace"

    def summary(self) -> str:
        head = (
            f"seed {self.seed}: {self.txns} txns on {self.shards} shards, {self.committed} committed, "
            f"{self.aborted} rolled back, {self.unknown} unknown to the client, {self.in_doubt} left in doubt; "
            f"trace {self.trace_hash[:16]}"
        )
        if self.ok:
            return head
        lines = [head, f"{len(self.violations)} violation(s):"] + [f"  - {v}" for v in self.violations[:20]]
        lines.append(f"replay: {self.replay_command()}")
        return "\n".join(lines)


class _Handle:
    """A finished step: its value, or the error the coordinator will see."""

    __slots__ = ("ok", "value")

    def __init__(self, ok: bool, value: Any) -> None:
        self.ok = ok
        self.value = value


@dataclass
class _Txn:
    index: int
    txn: str
    ts: int
    legs: list[tuple[str, int, int]]  # updates: (shard, item id, delta)
    bad: bool
    creates: list[tuple[str, int, int]] = field(default_factory=list)  # (shard, new id, balance)
    deletes: list[tuple[str, int, int]] = field(default_factory=list)  # (shard, id, balance read)
    acked: Optional[bool] = None  # what the client was told: committed, rolled back, or nothing
    checked: bool = False  # its logged outcome was checked against what the client was told
    folded_shards: set[str] = field(default_factory=set)  # shards whose commit is in the model
    folded: bool = False  # settled: nothing more will change


@dataclass
class _Account:
    balance: int
    n: int = 0
    last: int = -1  # index of the last committed transaction that touched it


def _told(acked: Optional[bool]) -> str:
    return {True: "committed", False: "rolled back", None: "unknown"}[acked]


def _shards_of(record: _Txn) -> set[str]:
    return {name for name, _, _ in record.legs + record.creates + record.deletes}


def _raise_crash(label: str, n: int) -> None:
    raise SimulatedCrash(f"simulated crash at {label}")


def fast_tmp_dir() -> str:
    """Where seeds keep their files: $BATCHRAY_SIM_TMPDIR, else /dev/shm, else the temp dir."""
    env = os.environ.get("BATCHRAY_SIM_TMPDIR")
    if env:
        return env
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return tempfile.gettempdir()


class SimTransport:
    """A deterministic, faulty :class:`~batchray.core.txn.twophase.Transport` over the simulation's shards.

    Every step runs at once (handles are ready when submitted); faults are drawn from the
    simulation's fault generator, so the same seed makes the same faults at the same messages.
    """

    def __init__(self, sim: "Simulation") -> None:
        self.sim = sim
        self.enabled = True
        # whether the coordinator may send a participant's last chunk as ``apply+prepare`` (apply
        # and vote in one durable write); drawn per transaction, so both paths are exercised
        self.merges_prepare = False

    def submit(self, participant: str, step: str, ref: TxnRef, chunk: Any = None) -> _Handle:
        sim = self.sim
        sim.messages += 1
        when = sim.coordinator_crash_at_message()
        if when == "before":
            sim.event("coordinator-crash", "before-message", participant, step, ref.txn)
            raise SimulatedCrash("coordinator crash before sending a message")
        if not self.enabled:
            return self._plain(participant, step, ref, chunk)
        f = sim.faults
        rng = sim.fault_rng
        if sim.held and rng.random() < f.deliver_late:
            sim.deliver_held(rng.randrange(len(sim.held)))
        if rng.random() < f.bystander_crash:
            other = rng.choice([n for n in sim.names if n != participant])
            if sim.shards[other] is not None:
                sim.count("bystander_crash")
                sim.crash_shard(other, downtime=0)  # back by its next message
        if sim.shards[participant] is None:
            if sim.down[participant] > 0:
                sim.down[participant] -= 1
                sim.event("msg", participant, step, ref.txn, "down")
                return self._unavailable(participant, "is down")
            sim.restart_shard(participant)
        if when == "after":
            handle = self._plain(participant, step, ref, chunk)
            sim.event("coordinator-crash", "after-message", participant, step, ref.txn)
            raise SimulatedCrash("coordinator crash after sending a message")
        fault = self._draw(rng, f)
        if fault is None:
            return self._plain(participant, step, ref, chunk)
        if fault == "drop_request":
            sim.count(fault)
            sim.event("msg", participant, step, ref.txn, fault)
            return self._unavailable(participant, "did not get the request")
        if fault == "delay":
            sim.count(fault)
            sim.event("msg", participant, step, ref.txn, fault)
            sim.hold(participant, step, ref, chunk)
            return self._unavailable(participant, "did not answer in time")
        if fault == "crash_before":
            sim.count(fault)
            sim.event("msg", participant, step, ref.txn, fault)
            sim.crash_shard(participant)
            return self._unavailable(participant, "crashed")
        if fault == "crash_during":
            with sim.participant_crash_armed(participant):
                try:
                    handle = sim.deliver(participant, step, ref, chunk)
                except SimulatedCrash:
                    sim.count(fault)
                    sim.event("msg", participant, step, ref.txn, fault)
                    sim.crash_shard(participant)
                    return self._unavailable(participant, "crashed")
            sim.event("msg", participant, step, ref.txn, "no-write", _brief(handle))
            return handle
        handle = sim.deliver(participant, step, ref, chunk)
        sim.count(fault)
        sim.event("msg", participant, step, ref.txn, fault, _brief(handle))
        if fault == "crash_after":
            sim.crash_shard(participant)
            return self._unavailable(participant, "crashed")
        if fault == "drop_reply":
            return self._unavailable(participant, "reply lost")
        # duplicate: deliver again; a repeated step must answer as the first did
        again = sim.deliver(participant, step, ref, chunk)
        sim.event("dup", participant, step, ref.txn, _brief(again))
        if handle.ok and again.ok and _answer(step, handle.value) != _answer(step, again.value):
            sim.violation(
                f"{ref.txn}: a repeated {step} on {participant} answered {_answer(step, again.value)!r}, "
                f"the first {_answer(step, handle.value)!r}"
            )
        return handle

    def _plain(self, participant: str, step: str, ref: TxnRef, chunk: Any) -> _Handle:
        if self.sim.shards[participant] is None:
            self.sim.restart_shard(participant)
        handle = self.sim.deliver(participant, step, ref, chunk)
        self.sim.event("msg", participant, step, ref.txn, _brief(handle))
        return handle

    @staticmethod
    def _draw(rng: random.Random, f: Faults) -> Optional[str]:
        r = rng.random()
        for kind, p in (
            ("drop_request", f.drop_request),
            ("drop_reply", f.drop_reply),
            ("duplicate", f.duplicate),
            ("delay", f.delay),
        ):
            if r < p:
                return kind
            r -= p
        if r < f.participant_crash:
            return rng.choice(("crash_before", "crash_during", "crash_after"))
        return None

    @staticmethod
    def _unavailable(participant: str, why: str) -> _Handle:
        return _Handle(False, ParticipantUnavailable(f"participant {participant} {why}", participant=participant))

    def wait(self, handles: list[Any], timeout: Optional[float] = None) -> tuple[list[Any], list[Any]]:
        return list(handles), []

    def result(self, handle: _Handle) -> Any:
        if handle.ok:
            return handle.value
        raise handle.value


def _brief(handle: _Handle) -> str:
    if not handle.ok:
        return type(handle.value).__name__
    value = handle.value
    if value is None:
        return "ok"
    if isinstance(value, bool):
        return str(value)
    vote = getattr(value, "vote", None)
    return f"images:{getattr(value, 'affected', '?')}/{len(getattr(value, 'errors', ()))}" + (
        "" if vote is None else f"/vote={vote}")


def _answer(step: str, value: Any) -> Any:
    if step.startswith("apply"):
        return (value.affected, sorted(value.items), len(value.errors), getattr(value, "vote", None))
    return value


class Simulation:
    """One seed's run; see the module docstring. ``Simulation(seed).run()`` -> :class:`SimResult`."""

    def __init__(
        self,
        seed: int,
        config: Optional[SimConfig] = None,
        *,
        root: Optional[str | os.PathLike] = None,
        keep_trace: bool = False,
        keep_files: bool = False,
    ) -> None:
        self.seed = seed
        self.config = config or SimConfig()
        self.faults = self.config.faults
        self.work_rng = random.Random(f"batchray-sim:{seed}:work")
        self.fault_rng = random.Random(f"batchray-sim:{seed}:faults")
        self.backoff_rng = random.Random(f"batchray-sim:{seed}:backoff")
        self.root_parent = root
        self.keep_files = keep_files
        self.result = SimResult(seed, self.config)
        self._hash = hashlib.blake2b(digest_size=16)
        self._trace: Any = [] if keep_trace else deque(maxlen=60)
        self.messages = 0
        self.held: list[tuple[str, str, TxnRef, Any]] = []
        self.txns: list[_Txn] = []
        self._msg_crash: Optional[tuple[int, str]] = None  # (message number, before/after)
        self._log_crash: Optional[int] = None  # n-th log write from now

    # -- trace --------------------------------------------------------------------------------
    def event(self, *parts: Any) -> None:
        """One trace entry; the trace hash covers every entry (the kept trace may be the tail)."""
        self._hash.update(repr(parts).encode())
        self._hash.update(b"\n")
        self.result.events += 1
        self._trace.append(parts)

    def count(self, kind: str) -> None:
        self.result.faults[kind] += 1

    def violation(self, text: str) -> None:
        self.event("VIOLATION", text)
        if text not in self.result.violations:
            self.result.violations.append(text)

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> SimResult:
        started = time.perf_counter()
        parent = self.root_parent or fast_tmp_dir()
        self.root = Path(tempfile.mkdtemp(prefix=f"batchray-sim-{self.seed}-", dir=parent))
        self.shards: dict[str, Optional[SqliteShard]] = {}
        self.log: Optional[DecisionLog] = None
        try:
            self._open()
            self._setup()
            for index in range(self.config.txns):
                self._transaction(index)
                self._between()
            self._finale()
        except (Exception, SimulatedCrash) as exc:  # noqa: BLE001 - any escape is a finding, with its seed
            self.violation(f"simulator stopped by {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        finally:
            crashpoints.arm(None)
            for shard in self.shards.values():
                if shard is not None:
                    shard.close()
            if self.log is not None:
                self.log.close()
            if not self.keep_files:
                shutil.rmtree(self.root, ignore_errors=True)
        self.result.trace_hash = self._hash.hexdigest()
        self.result.trace = list(self._trace)
        self.result.seconds = time.perf_counter() - started
        return self.result

    def _open(self) -> None:
        low, high = self.config.shards
        count = self.work_rng.randint(low, high)
        self.result.shards = count
        self.names = [f"shard-{i}" for i in range(count)]
        self.down = {name: 0 for name in self.names}
        self.epochs = {name: 0 for name in self.names}
        for name in self.names:
            self.shards[name] = self._open_shard(name)
        self.transport = SimTransport(self)
        self._open_coordinator()
        self.accounts: dict[int, str] = {}  # item id -> shard
        self.by_shard: dict[str, list[int]] = {name: [] for name in self.names}
        self.closing: set[int] = set()  # accounts a pending transaction deletes
        self.model: dict[int, _Account] = {}

    def _open_shard(self, name: str) -> SqliteShard:
        # no lock waits: everything runs in one thread, a wait could only time out
        return SqliteShard(self.root / f"{name}.sqlite", name=name, lock_timeout=0.0)

    def _open_coordinator(self) -> None:
        self.log = DecisionLog(self.root / "coordinator.sqlite")
        self.driver = TwoPhaseCommit(
            self.log,
            self.transport,
            epoch_of=lambda name: self.epochs[name],
            budget=MemoryBudget(pressure=lambda: False),
            phase2_attempts=self.config.phase2_attempts,
            rng=self.backoff_rng,
            sleep=self._sleep,
        )

    def _sleep(self, seconds: float) -> None:
        """Backoff costs no time; a held message may arrive meanwhile."""
        if self.transport.enabled and self.held and self.fault_rng.random() < self.faults.deliver_late:
            self.deliver_held(self.fault_rng.randrange(len(self.held)))

    def _setup(self) -> None:
        """Create the accounts in one fault-free transaction."""
        self.transport.enabled = False
        rows: dict[str, tuple[list[int], list[str]]] = {name: ([], []) for name in self.names}
        for k in range(self.config.accounts_per_shard * len(self.names)):
            item_id = BASE_ID + k
            name = self.names[k % len(self.names)]
            self.accounts[item_id] = name
            self.by_shard[name].append(item_id)
            self.model[item_id] = _Account(self.config.initial_balance)
            rows[name][0].append(item_id)
            rows[name][1].append(orjson.dumps({"balance": self.config.initial_balance, "n": 0, "last": ""}).decode())
        planned = [
            PlannedChunk(name, CreateItems(i + 1, ids, texts), 64 * len(ids), len(ids))
            for i, (name, (ids, texts)) in enumerate(sorted(rows.items()))
        ]
        self.log.add_batch("setup", kind="create_items", ts=1, state="running")
        outcome = self.driver.run("setup", 1, planned)
        if not outcome.committed or outcome.in_doubt:
            raise InternalError(f"fault-free setup did not commit: {outcome.cause}")
        self.log.set_state("setup", "completed", result={"committed": True})
        self.total = self.config.initial_balance * len(self.accounts)
        self.transport.enabled = True
        self._check_view()

    # -- one transaction ------------------------------------------------------------------------
    def _can_read(self, name: str, item_id: int) -> bool:
        """Whether the client may compute an explicit new value from a read of this account.

        Explicit values are computed from values read before the transaction, so they are only
        right if nobody can change those values first: the client reads an account only while
        no transaction holds it (one in doubt might commit while this one retries, and the write
        would then overwrite that commit: a lost update of the client's own making)."""
        shard = self.shards[name]
        return shard is not None and not shard.locks.holders(item_id)

    def _read(self, name: str, item_id: int) -> Optional[dict[str, Any]]:
        rows = list(self.shards[name].read_items(CONTEXT_ID, ids=[item_id]))
        return orjson.loads(rows[0][1]) if rows else None

    def _patch(self, txn: str, name: str, item_id: int, delta: int, explicit: bool) -> dict[str, Any]:
        if explicit:
            values = self._read(name, item_id)
            if values is not None:
                return {"balance": values["balance"] + delta, "n": values["n"] + 1, "last": txn}
        return {"balance": f"=balance {'-' if delta < 0 else '+'} {abs(delta)}", "n": "=n + 1", "last": txn}

    def _plan(self, record: _Txn) -> tuple[list[PlannedChunk], str]:
        """The chunks of one transaction: a transfer (most), an account opened with money from
        another, or an account closed into another. Each conserves the sum of balances."""
        rng = self.work_rng
        chunk_ids = iter(range(1, 100))
        planned: list[PlannedChunk] = []
        roll = rng.random()
        explicit = rng.random() < 0.5
        closable = [
            (name, item_id) for name in self.names for item_id in self.by_shard[name]
            if item_id not in self.closing and len([i for i in self.by_shard[name] if i not in self.closing]) > 1
        ]
        if roll < 0.08:
            # open an account on one shard, funded from an account on another
            source, target = rng.sample(self.names, 2)
            item_id = rng.choice(self.by_shard[source])
            amount = rng.randint(1, 50)
            new_id = BASE_ID + 10_000 + record.index
            explicit = explicit and self._can_read(source, item_id)
            record.legs.append((source, item_id, -amount))
            record.creates.append((target, new_id, amount))
            planned.append(PlannedChunk(source, UpdateItems(next(chunk_ids), CONTEXT_ID, ids=[item_id],
                                        patches=[self._patch(record.txn, source, item_id, -amount, explicit)]), 64, 1))
            row = orjson.dumps({"balance": amount, "n": 1, "last": record.txn}).decode()
            planned.append(PlannedChunk(target, CreateItems(next(chunk_ids), [new_id], [row]), 64, 1))
            kind = "open"
        elif roll < 0.16 and closable:
            # close an account: read its balance, delete it, and move the balance to another
            source, item_id = rng.choice(closable)
            target = rng.choice([n for n in self.names if n != source])
            other = rng.choice(self.by_shard[target])
            values = self._read(source, item_id) if self._can_read(source, item_id) else None
            if values is None:
                return self._plan_transfer(record, explicit, chunk_ids)
            balance = values["balance"]
            explicit = explicit and self._can_read(target, other)
            self.closing.add(item_id)
            record.deletes.append((source, item_id, balance))
            record.legs.append((target, other, balance))
            planned.append(PlannedChunk(source, DeleteItems(next(chunk_ids), CONTEXT_ID, ids=[item_id]), 64, 1))
            planned.append(PlannedChunk(target, UpdateItems(next(chunk_ids), CONTEXT_ID, ids=[other],
                                        patches=[self._patch(record.txn, target, other, balance, explicit)]), 64, 1))
            kind = "close"
        else:
            return self._plan_transfer(record, explicit, chunk_ids)
        return planned, kind + ("-explicit" if explicit else "-expr")

    def _plan_transfer(self, record: _Txn, explicit: bool, chunk_ids: Iterator[int]) -> tuple[list[PlannedChunk], str]:
        rng = self.work_rng
        k = rng.randint(2, min(4, len(self.names)))
        names = sorted(rng.sample(self.names, k))
        accounts = [rng.choice(self.by_shard[name]) for name in names]
        if rng.random() < 0.25:
            # a second account on one of the shards, in a chunk of its own: several chunks for
            # one participant (the last one may carry the vote)
            name = rng.choice(names)
            others = [i for i in self.by_shard[name] if i not in accounts]
            if others:
                position = rng.randrange(len(names) + 1)
                names.insert(position, name)
                accounts.insert(position, rng.choice(others))
        deltas = [rng.randint(-50, 50) for _ in range(len(names) - 1)]
        deltas.append(-sum(deltas))
        explicit = explicit and all(self._can_read(n, i) for n, i in zip(names, accounts))
        record.legs.extend(zip(names, accounts, deltas))
        planned = [
            PlannedChunk(name, UpdateItems(next(chunk_ids), CONTEXT_ID, ids=[item_id],
                                           patches=[self._patch(record.txn, name, item_id, delta, explicit)]), 64, 1)
            for name, item_id, delta in record.legs
        ]
        return planned, "transfer-" + ("explicit" if explicit else "expr")

    def _transaction(self, index: int) -> None:
        rng = self.work_rng
        txn = f"t{index:05d}"
        ts = index + 2
        record = _Txn(index, txn, ts, [], rng.random() < self.faults.bad_txn)
        self.txns.append(record)
        planned, kind = self._plan(record)
        self.transport.merges_prepare = rng.random() < 0.5
        if record.bad:
            self.count("bad_txn")
            name = rng.choice(self.names)
            chunk = UpdateItems(len(planned) + 1, CONTEXT_ID, ids=[MISSING_ID], patches=[{"balance": "=balance + 1"}])
            planned.insert(rng.randrange(len(planned) + 1), PlannedChunk(name, chunk, 64, 1))
        self.event(
            "txn", txn, kind, record.bad, self.transport.merges_prepare,
            [(n, i - BASE_ID, d) for n, i, d in record.legs],
            [(n, i - BASE_ID, d) for n, i, d in record.creates],
            [(n, i - BASE_ID, d) for n, i, d in record.deletes],
        )
        self._plan_coordinator_crash()
        try:
            self.log.add_batch(txn, kind="transfer", ts=ts, state="running")
            outcome = self.driver.run(txn, ts, planned, max_retries=self.config.max_retries)
            record.acked = outcome.committed
            if outcome.in_doubt:
                self.result.in_doubt += 1
            self.event("outcome", txn, outcome.committed, outcome.in_doubt, type(outcome.cause).__name__)
            self.log.set_state(txn, "completed" if outcome.committed else "rolled_back",
                               result={"committed": outcome.committed, "inDoubt": outcome.in_doubt})
        except SimulatedCrash as exc:
            self.count("coordinator_crash")
            self.event("crash", txn, str(exc))
            self._disarm_coordinator_crash()
            self._restart_coordinator()
        else:
            self._disarm_coordinator_crash()
        self.result.kinds[f"{kind.split('-')[0]} {_told(record.acked)}"] += 1
        if record.acked is True:
            self.result.committed += 1
        elif record.acked is False:
            self.result.aborted += 1
        else:
            self.result.unknown += 1

    def _between(self) -> None:
        if self.fault_rng.random() < self.faults.restart_all:
            self.count("restart_all")
            self.event("restart-all")
            self._restart_everything(faulty=True)
        for name in self.names:
            if self.shards[name] is None:
                self.restart_shard(name)
        self._check_locks()
        _, decided = self.log.unfinished()
        if decided and self.fault_rng.random() < self.faults.resolve:
            self._recover(faulty=True)
        self._check_view()

    # -- coordinator crashes --------------------------------------------------------------------
    def _plan_coordinator_crash(self, chance: Optional[float] = None) -> None:
        rng = self.fault_rng
        if rng.random() >= (self.faults.coordinator_crash if chance is None else chance):
            return
        if rng.random() < 0.5:
            self._log_crash = rng.randint(1, 4)
            crashpoints.arm(self._log_crash, action=_raise_crash, label_prefix="log:")
            self.event("plan-crash", "log-write", self._log_crash)
        else:
            self._msg_crash = (self.messages + rng.randint(1, 12), rng.choice(("before", "after")))
            self.event("plan-crash", "message", self._msg_crash[0] - self.messages, self._msg_crash[1])

    def _disarm_coordinator_crash(self) -> None:
        self._msg_crash = None
        if self._log_crash is not None:
            self._log_crash = None
            crashpoints.arm(None)

    def coordinator_crash_at_message(self) -> Optional[str]:
        if self._msg_crash is not None and self._msg_crash[0] == self.messages:
            when = self._msg_crash[1]
            self._msg_crash = None
            return when
        return None

    @contextlib.contextmanager
    def participant_crash_armed(self, name: str) -> Iterator[None]:
        """Crash ``name`` at its next durable write, keeping a planned log-write crash armed."""
        remaining = None
        if self._log_crash is not None:
            remaining = self._log_crash - crashpoints.writes_seen()
        crashpoints.arm(1, action=_raise_crash, label_prefix=f"{name}:")
        try:
            yield
        finally:
            if remaining is not None and remaining > 0:
                self._log_crash = remaining
                crashpoints.arm(remaining, action=_raise_crash, label_prefix="log:")
            else:
                self._log_crash = None
                crashpoints.arm(None)

    def _restart_coordinator(self) -> None:
        self.log.close()
        self.log = None
        self._open_coordinator()
        self._recover(faulty=True)

    def _recover(self, *, faulty: bool) -> None:
        """Run :func:`recover` until it finishes; while ``faulty`` it may crash, and start over."""
        for attempt in range(4):
            if faulty and attempt < 3:
                self._plan_coordinator_crash(self.faults.recovery_crash)
            try:
                report = recover(self.log, self.driver, self.names)
                self.event("recovered", report["finished"], report["aborted"])
                return
            except SimulatedCrash as exc:
                self.count("recovery_crash")
                self.event("crash", "recovery", str(exc))
                self.log.close()
                self.log = None
                self._open_coordinator()
            finally:
                self._disarm_coordinator_crash()
        report = recover(self.log, self.driver, self.names)
        self.event("recovered", report["finished"], report["aborted"])

    # -- shards -------------------------------------------------------------------------------
    def deliver(self, name: str, step: str, ref: TxnRef, chunk: Any) -> _Handle:
        shard = self.shards[name]
        try:
            if step == "apply":
                value = shard.apply(ref, chunk)
            elif step == "apply+prepare":
                value = shard.apply(ref, chunk, prepare=True)
            else:
                value = getattr(shard, step)(ref)
            return _Handle(True, value)
        except InternalError as exc:
            self.violation(f"{ref.txn}: {name}.{step} raised InternalError: {exc.message}")
            return _Handle(False, exc)
        except BatchrayError as exc:
            return _Handle(False, exc)
        except Exception as exc:  # noqa: BLE001 - a participant bug is a finding
            self.violation(f"{ref.txn}: {name}.{step} raised {type(exc).__name__}: {exc}")
            return _Handle(False, InternalError(f"{name}.{step} raised {type(exc).__name__}: {exc}"))

    def hold(self, name: str, step: str, ref: TxnRef, chunk: Any) -> None:
        self.held.append((name, step, ref, chunk))
        if len(self.held) > self.faults.max_held:
            lost = self.held.pop(0)
            self.event("held-lost", lost[0], lost[1], lost[2].txn)

    def deliver_held(self, position: int) -> None:
        """Deliver a message that was held back, long after its sender gave up on it."""
        name, step, ref, chunk = self.held[position]
        if self.shards[name] is None:
            return  # still down: it stays held
        del self.held[position]
        self.count("late_delivery")
        handle = self.deliver(name, step, ref, chunk)
        self.result.observed[f"late {step}: {_brief(handle) if not handle.ok else 'accepted'}"] += 1
        self.event("late", name, step, ref.txn, ref.epoch, _brief(handle))

    def crash_shard(self, name: str, downtime: Optional[int] = None) -> None:
        shard = self.shards[name]
        if shard is not None:
            shard.close()
        self.shards[name] = None
        self.down[name] = self.fault_rng.randint(0, self.faults.downtime) if downtime is None else downtime
        self.event("shard-crash", name, self.down[name])

    def restart_shard(self, name: str) -> None:
        shard = self._open_shard(name)  # recovery: unvoted transactions are rolled back
        if self.faults.fence_on_restart:
            self.epochs[name] = shard.claim(shard.epoch + 1)
        self.shards[name] = shard
        self.down[name] = 0
        self.event("shard-restart", name, self.epochs[name], sorted(d["txn"] for d in shard.in_doubt))

    def _restart_everything(self, *, faulty: bool) -> None:
        for name in self.names:
            self.crash_shard(name)
        for name in self.names:
            self.restart_shard(name)
        self.log.close()
        self.log = None
        self._open_coordinator()
        self._recover(faulty=faulty)

    # -- checks -------------------------------------------------------------------------------
    def _committed_view(self) -> dict[int, dict[str, Any]]:
        view: dict[int, dict[str, Any]] = {}
        for name in self.names:
            for item_id, text in self.shards[name].read_items(CONTEXT_ID):
                if item_id in view:
                    self.violation(f"item {item_id - BASE_ID} read twice")
                view[item_id] = orjson.loads(text)
        return view

    def _fold(self, final: bool = False) -> list[_Txn]:
        """Fold what transactions committed into the model, shard by shard as their commits
        arrive (a shard's commit is final, and on any one item commits come in transaction
        order: strict two-phase locking); return the transactions not settled yet."""
        _, decided = self.log.unfinished()
        unfinished = {txn for txn, _ in decided}
        pending: list[_Txn] = []
        for record in self.txns:
            if record.folded:
                continue
            outcomes = self.log.decision(record.txn)
            if outcomes is None:
                batch = self.log.batch(record.txn)
                if batch is not None and batch["state"] == "running":
                    self.violation(f"{record.txn}: registered, but no decision after recovery")
                if record.acked is not None:
                    self.violation(f"{record.txn}: the client was told {record.acked}, but no decision is logged")
                outcomes = {}
            values = set(outcomes.values())
            if len(values) > 1:
                self.violation(f"{record.txn}: an atomic transaction has mixed outcomes {outcomes}")
            committed = values == {"commit"}
            if not record.checked:
                record.checked = True
                if record.acked is not None and record.acked != committed:
                    self.violation(f"{record.txn}: the client was told committed={record.acked}, the log says {outcomes}")
                if committed and record.bad:
                    self.violation(f"{record.txn}: names a missing item, yet committed")
                if committed and _shards_of(record) - set(outcomes):
                    self.violation(f"{record.txn}: committed without every shard it writes: {outcomes}")
            done = record.txn not in unfinished
            for name in sorted(_shards_of(record) | set(outcomes)):
                if name in record.folded_shards:
                    continue
                got = self.shards[name].outcome(record.txn)
                if got == "committed" and not committed:
                    self.violation(f"{record.txn}: {name} committed it, the log says {outcomes}")
                elif got == "aborted" and committed:
                    self.violation(f"{record.txn}: {name} rolled it back, the log says {outcomes}")
                elif got == "committed":
                    record.folded_shards.add(name)
                    self._apply_to_model(self.model, record, {name})
                    self._update_pool(record, name)
                elif committed and done:
                    self.violation(f"{record.txn}: finished in the log, but {name} has not committed it ({got})")
            if (done or final) and (not committed or record.folded_shards >= _shards_of(record)):
                record.folded = True
                for _, item_id, _ in record.deletes:
                    self.closing.discard(item_id)
            else:
                pending.append(record)
        return pending

    def _update_pool(self, record: _Txn, name: str) -> None:
        """The accounts the workload picks from: with the ones ``record`` opened or closed on ``name``."""
        for shard, item_id, _ in record.creates:
            if shard == name:
                self.accounts[item_id] = name
                self.by_shard[name].append(item_id)
        for shard, item_id, _ in record.deletes:
            if shard == name and item_id in self.by_shard[name]:
                self.by_shard[name].remove(item_id)

    def _apply_to_model(self, model: dict[int, _Account], record: _Txn, shards: set[str]) -> None:
        """Apply the effects ``record`` has on ``shards`` to ``model``."""
        for name, item_id, balance in record.deletes:
            if name not in shards:
                continue
            account = model.pop(item_id, None)
            if account is None:
                self.violation(f"{record.txn} deleted account {item_id - BASE_ID}, which does not exist")
            elif account.balance != balance:
                self.violation(f"{record.txn} closed account {item_id - BASE_ID} holding {account.balance}, "
                               f"having read {balance}")
        for name, item_id, delta in record.legs:
            if name not in shards:
                continue
            account = model.get(item_id)
            if account is None:
                self.violation(f"{record.txn} committed a change to account {item_id - BASE_ID}, which does not exist")
                continue
            account.balance += delta
            account.n += 1
            account.last = max(account.last, record.index)
        for name, item_id, balance in record.creates:
            if name in shards:
                model[item_id] = _Account(balance, 1, record.index)

    def _check_view(self, final: bool = False) -> None:
        """The committed view of every shard equals the model (which holds what each shard has
        committed so far); at quiescence the sum of balances is the initial one."""
        if any(self.shards[n] is None for n in self.names):
            return
        pending = self._fold(final)
        expected = self.model
        view = self._committed_view()
        total = 0
        for item_id, account in expected.items():
            values = view.get(item_id)
            if values is None:
                self.violation(f"account {item_id - BASE_ID} is missing")
                continue
            total += values["balance"]
            want_last = self.txns[account.last].txn if account.last >= 0 else ""
            got = (values["balance"], values["n"], values["last"])
            want = (account.balance, account.n, want_last)
            if got != want:
                self.violation(
                    f"account {item_id - BASE_ID} on {self.accounts.get(item_id)} is (balance, n, last)={got}, "
                    f"expected {want}"
                )
        if set(view) - set(expected):
            self.violation(f"unexpected items {sorted(i - BASE_ID for i in set(view) - set(expected))}")
        if not pending and total != self.total:
            self.violation(f"sum of balances is {total}, expected {self.total}")
        if not pending:
            self._check_quiet()

    def _check_locks(self) -> None:
        """Strict two-phase locking: every item an unfinished transaction wrote stays locked by it
        (across restarts too) until its outcome is recorded."""
        for name in self.names:
            shard = self.shards[name]
            if shard is None:
                continue
            for pending in shard.pending():
                for images in shard.before_images(pending["txn"]):
                    for item_id, _ in images.items:
                        if pending["txn"] not in shard.locks.holders(item_id):
                            self.violation(
                                f"{pending['txn']} is {pending['state']} on {name}, but item "
                                f"{item_id - BASE_ID} is not locked by it: {shard.locks.holders(item_id)}"
                            )

    def _check_quiet(self) -> None:
        """No 2PC state and no lock anywhere."""
        for name in self.names:
            shard = self.shards[name]
            left = shard.leftovers()
            if any(left.values()):
                self.violation(f"{name} has 2PC state left at quiescence: {left} {shard.pending()}")
            if shard.locks.lock_count():
                self.violation(f"{name} holds {shard.locks.lock_count()} lock(s) at quiescence")

    def _finale(self) -> None:
        """Stop the faults, restart everything, recover, deliver what was held, then check."""
        self._disarm_coordinator_crash()
        self.transport.enabled = False
        self.event("finale")
        self._restart_everything(faulty=False)
        undecided, decided = self.log.unfinished()
        if undecided or decided:
            self.violation(f"fault-free recovery left {len(undecided)} undecided and {len(decided)} unfinished batches")
        while self.held:
            self.deliver_held(0)
        self._check_view(final=True)
        for name in self.names:
            check = self.shards[name].integrity_check()
            if check != "ok":
                self.violation(f"{name} failed the integrity check: {check}")
        with contextlib.closing(sqlite3.connect(self.log.path)) as conn:
            check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            self.violation(f"the decision log failed the integrity check: {check}")
        # every shard's own record of every transaction agrees with the log
        for record in self.txns:
            outcomes = self.log.decision(record.txn) or {}
            for name in self.names:
                got = self.shards[name].outcome(record.txn)
                want = {"commit": "committed", "abort": "aborted"}.get(outcomes.get(name, ""))
                if got != want and not (want is None and got in (None, "aborted")):
                    self.violation(f"{record.txn}: {name} records {got}, the log says {outcomes.get(name)}")
        running = [b["txn"] for b in self.log.batches_in("running")]
        if running:
            self.event("still-running", running)
        self.result.txns = len(self.txns)
        state = sorted((i - BASE_ID, v["balance"], v["n"], v["last"]) for i, v in self._committed_view().items())
        self.result.state_hash = hashlib.blake2b(repr(state).encode(), digest_size=16).hexdigest()
        self.event("state", self.result.state_hash)


def simulate(seed: int, config: Optional[SimConfig] = None, **kwargs: Any) -> SimResult:
    """Run one seed; see :class:`Simulation`."""
    return Simulation(seed, config, **kwargs).run()


@dataclass
class Totals:
    seeds: int = 0
    txns: int = 0
    committed: int = 0
    aborted: int = 0
    unknown: int = 0
    in_doubt: int = 0
    faults: Counter = field(default_factory=Counter)
    observed: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    failures: list[SimResult] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, result: SimResult) -> None:
        self.seeds += 1
        self.txns += result.txns
        self.committed += result.committed
        self.aborted += result.aborted
        self.unknown += result.unknown
        self.in_doubt += result.in_doubt
        self.faults.update(result.faults)
        self.observed.update(result.observed)
        self.kinds.update(result.kinds)
        if not result.ok:
            self.failures.append(result)

    @property
    def violations(self) -> int:
        return sum(len(r.violations) for r in self.failures)

    def report(self) -> str:
        rate = self.seeds / self.seconds if self.seconds else 0.0
        lines = [
            f"{self.seeds} seeds x {self.txns // max(self.seeds, 1)} txns = {self.txns} transactions in "
            f"{self.seconds:.1f}s ({rate:.1f} seeds/s, {1000 * self.seconds / max(self.txns, 1):.2f} ms/txn)",
            f"outcomes: {self.committed} committed, {self.aborted} rolled back, {self.unknown} unknown to the client, "
            f"{self.in_doubt} left in doubt by phase 2",
            "transactions: " + ", ".join(f"{k} {v}" for k, v in sorted(self.kinds.items())),
            "faults: " + ", ".join(f"{k}={v}" for k, v in sorted(self.faults.items())),
            "late messages: " + ", ".join(f"{k} {v}" for k, v in sorted(self.observed.items())),
            f"violations: {self.violations} in {len(self.failures)} seed(s)",
        ]
        for result in self.failures[:5]:
            lines.append(result.summary())
        return "\n".join(lines)


def run_seeds(seeds: range | list[int], config: Optional[SimConfig] = None, *, jobs: int = 1,
              progress: Optional[Any] = None, stop_on_failure: bool = False) -> Totals:
    """Run many seeds (in ``jobs`` processes when more than one) and total them."""
    totals = Totals()
    started = time.perf_counter()
    if jobs <= 1:
        results: Iterator[SimResult] = (simulate(s, config) for s in seeds)
        pool = None
    else:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(jobs)
        results = pool.imap(_simulate_quiet, [(s, config) for s in seeds], chunksize=8)
    try:
        for result in results:
            totals.add(result)
            if progress is not None:
                progress(totals, result)
            if stop_on_failure and not result.ok:
                break
    finally:
        if pool is not None:
            pool.terminate()
    totals.seconds = time.perf_counter() - started
    return totals


def _simulate_quiet(args: tuple[int, Optional[SimConfig]]) -> SimResult:
    seed, config = args
    result = simulate(seed, config)
    result.trace = result.trace if not result.ok else []
    return result


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m batchray.testing.simulator",
        description="Seeded simulation of two-phase commit over SQLite shards with crashes, restarts, "
        "lost, delayed and duplicated messages; checks the invariants for every seed.",
    )
    parser.add_argument("--seeds", type=int, default=300, help="how many seeds to run (default 300)")
    parser.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--seed", type=int, help="run this one seed only (a replay)")
    parser.add_argument("--txns", type=int, default=50, help="transactions per seed (default 50)")
    parser.add_argument("--jobs", type=int, default=1, help="processes to run seeds in (default 1)")
    parser.add_argument("--trace", action="store_true", help="with --seed: print the whole trace")
    parser.add_argument("--keep", action="store_true", help="with --seed: keep the store files and print where")
    parser.add_argument("--no-faults", action="store_true", help="run without any fault")
    parser.add_argument("--stop", action="store_true", help="stop at the first failing seed")
    args = parser.parse_args(argv)
    config = SimConfig(txns=args.txns, faults=Faults.none() if args.no_faults else Faults())

    if args.seed is not None:
        sim = Simulation(args.seed, config, keep_trace=args.trace, keep_files=args.keep)
        result = sim.run()
        if args.trace:
            for number, fields in enumerate(result.trace):
                print(f"{number:6d} " + " ".join(str(f) for f in fields))
        print(result.summary())
        print(f"{result.seconds:.2f}s, faults: " + ", ".join(f"{k}={v}" for k, v in sorted(result.faults.items())))
        print(f"state {result.state_hash}")
        if args.keep:
            print(f"files kept in {sim.root}")
        return 0 if result.ok else 1

    seeds = range(args.start, args.start + args.seeds)
    last = [time.perf_counter()]

    def progress(totals: Totals, result: SimResult) -> None:
        if not result.ok:
            print(f"FAILED {result.summary()}", flush=True)
        now = time.perf_counter()
        if now - last[0] > 10:
            last[0] = now
            print(f"... {totals.seeds} seeds, {len(totals.failures)} failing", flush=True)

    totals = run_seeds(seeds, config, jobs=args.jobs, progress=progress, stop_on_failure=args.stop)
    print(totals.report())
    if totals.failures:
        first = totals.failures[0]
        print(f"first failing seed: {first.seed}; replay it with:\n  {first.replay_command()}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
