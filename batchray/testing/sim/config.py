"""What one simulated run is made of: the item ids it uses, the fault probabilities
(:class:`Faults`) and the run's size (:class:`SimConfig`).

Contract: both are frozen dataclasses, so a configuration is a value that travels to worker
processes and compares by content; :meth:`Faults.none` is the fault-free configuration.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from batchray.core.txn.chunks import ITEM_BITS

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
