"""Test helpers for batchray and for users testing their own pipelines.

* :class:`FaultyParticipant` wraps any participant and fails or crashes at a named step;
* :mod:`batchray.core.txn.crashpoints` (re-exported here as ``crash_at_write``) crashes at the n-th
  durable write;
* :mod:`batchray.testing.sim` runs many seeded transactions over several shards with
  crashes, restarts, lost and duplicated messages, and checks the invariants;
* :mod:`batchray.testing.slow_sync` makes the durable commits of a SQLite connection, or of
  every connection of a PostgreSQL store, slow (a disk whose fsync takes seconds);
* :mod:`batchray.testing.conformance` checks any participant (a store's, or your own) against
  the contracts of the participant protocol.

It may import the core and :mod:`batchray.io`, never the Ray runtime (``actors``) or
:mod:`batchray.api` (``tests/test_layers.py``).
"""
from batchray.core.txn.crashpoints import SimulatedCrash, arm as crash_at_write, writes_seen
from batchray.testing.faults import FaultyParticipant, InjectedFault

__all__ = ["FaultyParticipant", "InjectedFault", "SimulatedCrash", "crash_at_write", "writes_seen"]
