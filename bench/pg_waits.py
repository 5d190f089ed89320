"""What PostgreSQL's backends wait for during a load, sampled from ``pg_stat_activity``.

    with PgWaits(dsn) as waits:   # a sample every 3 ms, from a connection of its own
        ...                       # the load
    waits.print()

Each sample notes every other client backend that is not idle: its state, wait event (none:
running, or ready to run) and the start of its statement. :meth:`PgWaits.print` shows, for
the two halves of the load, the share of the samples of the busiest ``COPY`` backends (the
shards') by state, wait event and statement. ``python -m bench.pg_create --waits`` prints it
for batchray's batch; ``docs/performance.md`` (round 7) reads it.
"""
from __future__ import annotations

import collections
from typing import Any

from .common import Sampler

QUERY = ("SELECT pid, state, coalesce(wait_event_type || ' ' || wait_event, 'running'), left(query, 12) "
         "FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() "
         "AND state <> 'idle'")


class PgWaits(Sampler):
    """Samples while entered; see the module docstring."""

    def __init__(self, dsn: str, interval: float = 0.003) -> None:
        super().__init__(interval)
        self.dsn = dsn
        self.samples: list[tuple[float, int, str, str, str]] = []  # (at, pid, state, wait, statement)
        self._conn: Any = None

    def begin(self) -> None:
        import psycopg

        self._conn = psycopg.connect(self.dsn, autocommit=True)

    def sample(self, at: float) -> None:
        self.samples.extend((at, *row) for row in self._conn.execute(QUERY).fetchall())

    def end(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def shares(self, backends: int = 2) -> list[tuple[str, int, list[tuple[float, tuple[str, str, str]]]]]:
        """For each half of the sampled time: its name, its number of samples of the
        ``backends`` pids seen most often in a ``COPY``, and each (state, wait, statement)
        with its share of them, most frequent first."""
        copying = collections.Counter(pid for _, pid, _, _, statement in self.samples if statement.startswith("COPY"))
        pids = {pid for pid, _ in copying.most_common(backends)}
        out = []
        half = self.seconds / 2
        for name, lo, hi in (("first half", 0.0, half), ("second half", half, self.seconds + 1)):
            counts = collections.Counter((state, wait, statement) for at, pid, state, wait, statement in self.samples
                                         if pid in pids and lo <= at < hi)
            total = sum(counts.values())
            out.append((name, total, [(n / total, key) for key, n in counts.most_common()] if total else []))
        return out

    def print(self, top: int = 10) -> None:
        print("what the shards' backends were doing (share of pg_stat_activity samples):")
        for name, total, rows in self.shares():
            print(f"  {name} ({total} samples)")
            for share, (state, wait, statement) in rows[:top]:
                print(f"    {share:6.1%}  {state:20s} {wait:22s} {statement}")
