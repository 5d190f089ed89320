"""The run loop of the seeded simulator: one seed's store, transactions, faults and recovery.

One *seed* builds a fresh store in a temporary directory (on ``/dev/shm`` when there is one:
``synchronous=FULL`` stays on, but an fsync there costs microseconds): 3 or 4
:class:`~batchray.core.storage.sqlite.shard.SqliteShard` files and a
:class:`~batchray.core.storage.decision_log.DecisionLog`. Accounts, items with a numeric
``balance``, a touch counter ``n`` and the id of the last transaction that touched them
``last``, are spread over the shards. Then ``txns`` transactions (planned by
:mod:`~batchray.testing.sim.workload`) run one after the other through
:class:`~batchray.core.txn.twophase.TwoPhaseCommit`, the coordinator reaching the shards
through :class:`~batchray.testing.sim.network.SimTransport`. Besides the message faults, the
run crashes the coordinator at a random durable write of the decision log (crash points
labelled ``log:``) or at a random message, then reopens the log and lets
:func:`~batchray.core.txn.twophase.recover` finish what was left (it may crash too), and
restarts everything between transactions now and then. Phase 2 gives up after a few rounds
(``phase2_attempts``), leaving transactions in doubt; recovery runs between transactions
until they are finished, as a coordinator's background task would.

Contract: :meth:`Simulation.run` never raises (an escaping exception is a violation) and is
deterministic for its seed: the trace of events has the same hash on every run.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import tempfile
import time
import traceback
from collections import deque
from pathlib import Path
from typing import Any, Iterator, Optional

import orjson

from batchray.core.storage.decision_log import DecisionLog
from batchray.core.storage.sqlite.shard import SqliteShard
from batchray.core.txn import crashpoints
from batchray.core.txn.chunks import CreateItems, PlannedChunk, TxnRef, UpdateItems
from batchray.core.txn.crashpoints import SimulatedCrash
from batchray.core.txn.memory import MemoryBudget
from batchray.core.txn.twophase import TwoPhaseCommit, recover
from batchray.errors import BatchrayError, InternalError
from batchray.testing.sim.config import BASE_ID, CONTEXT_ID, MISSING_ID, SimConfig
from batchray.testing.sim.invariants import Invariants
from batchray.testing.sim.network import Handle, SimTransport, brief
from batchray.testing.sim.results import SimResult
from batchray.testing.sim.workload import Account, TxnRecord, Workload, told


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
        self.txns: list[TxnRecord] = []
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
        self.workload = Workload(self)
        self.checks = Invariants(self)
        self._open_coordinator()
        self.accounts: dict[int, str] = {}  # item id -> shard
        self.by_shard: dict[str, list[int]] = {name: [] for name in self.names}
        self.closing: set[int] = set()  # accounts a pending transaction deletes
        self.model: dict[int, Account] = {}

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
            self.model[item_id] = Account(self.config.initial_balance)
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
        self.checks.check_view()

    def _transaction(self, index: int) -> None:
        rng = self.work_rng
        txn = f"t{index:05d}"
        ts = index + 2
        record = TxnRecord(index, txn, ts, [], rng.random() < self.faults.bad_txn)
        self.txns.append(record)
        planned, kind = self.workload.plan(record)
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
        self.result.kinds[f"{kind.split('-')[0]} {told(record.acked)}"] += 1
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
        self.checks.check_locks()
        _, decided = self.log.unfinished()
        if decided and self.fault_rng.random() < self.faults.resolve:
            self._recover(faulty=True)
        self.checks.check_view()

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
    def deliver(self, name: str, step: str, ref: TxnRef, chunk: Any) -> Handle:
        shard = self.shards[name]
        try:
            if step == "apply":
                value = shard.apply(ref, chunk)
            elif step == "apply+prepare":
                value = shard.apply(ref, chunk, prepare=True)
            else:
                value = getattr(shard, step)(ref)
            return Handle(True, value)
        except InternalError as exc:
            self.violation(f"{ref.txn}: {name}.{step} raised InternalError: {exc.message}")
            return Handle(False, exc)
        except BatchrayError as exc:
            return Handle(False, exc)
        except Exception as exc:  # noqa: BLE001 - a participant bug is a finding
            self.violation(f"{ref.txn}: {name}.{step} raised {type(exc).__name__}: {exc}")
            return Handle(False, InternalError(f"{name}.{step} raised {type(exc).__name__}: {exc}"))

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
        self.result.observed[f"late {step}: {brief(handle) if not handle.ok else 'accepted'}"] += 1
        self.event("late", name, step, ref.txn, ref.epoch, brief(handle))

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

    # -- the end ------------------------------------------------------------------------------
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
        self.checks.check_final()
        running = [b["txn"] for b in self.log.batches_in("running")]
        if running:
            self.event("still-running", running)
        self.result.txns = len(self.txns)
        state = sorted((i - BASE_ID, v["balance"], v["n"], v["last"]) for i, v in self.checks.committed_view().items())
        self.result.state_hash = hashlib.blake2b(repr(state).encode(), digest_size=16).hexdigest()
        self.event("state", self.result.state_hash)


def simulate(seed: int, config: Optional[SimConfig] = None, **kwargs: Any) -> SimResult:
    """Run one seed; see :class:`Simulation`."""
    return Simulation(seed, config, **kwargs).run()
