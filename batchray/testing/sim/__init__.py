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

A run is deterministic for its seed: the trace of events (messages, faults, results) has the
same hash on every run, so a failing seed printed by the CLI or a test replays identically::

    python -m batchray.testing.sim --seeds 10000 --txns 50
    python -m batchray.testing.sim --seed 1234 --txns 50 --trace

Modules: :mod:`~batchray.testing.sim.config` (item ids, :class:`Faults`, :class:`SimConfig`),
:mod:`~batchray.testing.sim.network` (the faulty transport and its message faults),
:mod:`~batchray.testing.sim.workload` (the transactions), :mod:`~batchray.testing.sim.simulation`
(one seed's run loop: crashes, restarts, recovery), :mod:`~batchray.testing.sim.invariants`
(the checks), :mod:`~batchray.testing.sim.results` (:class:`SimResult`, :class:`Totals`) and
:mod:`~batchray.testing.sim.runner` (:func:`run_seeds`, the command line).
"""
from batchray.testing.sim.config import BASE_ID, CONTEXT_ID, MESSAGE_FAULTS, MISSING_ID, Faults, SimConfig
from batchray.testing.sim.network import SimTransport
from batchray.testing.sim.results import SimResult, Totals
from batchray.testing.sim.runner import main, run_seeds
from batchray.testing.sim.simulation import Simulation, fast_tmp_dir, simulate

__all__ = [
    "BASE_ID",
    "CONTEXT_ID",
    "MESSAGE_FAULTS",
    "MISSING_ID",
    "Faults",
    "SimConfig",
    "SimResult",
    "SimTransport",
    "Simulation",
    "Totals",
    "fast_tmp_dir",
    "main",
    "run_seeds",
    "simulate",
]
