"""Opening a store by its URL: participants, the decision log, the commit gate and the readers.

``open_backend(store)`` takes what :func:`batchray.core.storage.store.parse_store_url` takes (a directory,
``sqlite:///DIR`` or ``postgresql://...``) and returns an object with:

* ``kind`` (``"sqlite"`` or ``"postgresql"``) and ``layout`` (shard count, participant names,
  ``shard_of``; ``layout.root`` names the store in messages and actor names);
* ``url`` — what to hand to another process (an actor) so that it opens the same store;
* ``open_participant(name, recover=..., lock_timeout=..., apply_delay=...)``;
* ``open_log()`` — the coordinator's :class:`~batchray.core.storage.decision_log.DecisionLog` or
  :class:`~batchray.core.storage.postgres.decision_log.PgDecisionLog`;
* ``gate()`` — the commit gates (``shared(scope)`` for readers, ``exclusive(participants)`` for phase 2);
* ``item_sources(participants)`` — what :class:`~batchray.core.storage.store.ItemReader` reads: the item
  shards (SQLite), or one store-wide reader (PostgreSQL: one statement over every shard).
"""
from __future__ import annotations

import os
from typing import Any, Optional

from batchray.core.storage.store import CommitGate, StoreLayout, parse_store_url
from batchray.core.txn.participant import ItemSource, Participant


class SqliteBackend:
    """A directory of SQLite files (see :mod:`batchray.core.storage.store`)."""

    kind = "sqlite"

    def __init__(self, location: str | os.PathLike, shards: Optional[int] = None) -> None:
        self.layout = StoreLayout(location, shards)

    @property
    def url(self) -> str:
        return str(self.layout.root)

    def open_participant(self, name: str, *, recover: bool = True, lock_timeout: float = 10.0,
                         apply_delay: float = 0.0) -> Participant:
        from batchray.core.storage.sqlite.shard import SqliteShard

        return SqliteShard(self.layout.participant_path(name), name=name, recover=recover,
                           lock_timeout=lock_timeout, apply_delay=apply_delay)

    def open_log(self) -> Any:
        from batchray.core.storage.decision_log import DecisionLog

        return DecisionLog(self.layout.log_path)

    def gate(self) -> CommitGate:
        return CommitGate(self.layout.root)

    def item_sources(self, participants: dict[str, Participant]) -> list[ItemSource]:
        return [participants[name] for name in self.layout.shard_names]

    def close(self) -> None:
        pass


class PgBackend:
    """A schema of a PostgreSQL database (see :mod:`batchray.core.storage.postgres.store`)."""

    kind = "postgresql"

    def __init__(self, url: str, shards: Optional[int] = None) -> None:
        from batchray.core.storage.postgres.store import PgLayout, PgStore

        self.store = PgStore(url, shards)
        self.layout = PgLayout(self.store)
        self._gates: list[Any] = []

    @property
    def url(self) -> str:
        return self.store.url

    def open_participant(self, name: str, *, recover: bool = True, lock_timeout: float = 10.0,
                         apply_delay: float = 0.0) -> Participant:
        from batchray.core.storage.postgres.participant import PgParticipant

        return PgParticipant(self.store, name, recover=recover, lock_timeout=lock_timeout, apply_delay=apply_delay)

    def open_log(self) -> Any:
        from batchray.core.storage.postgres.decision_log import PgDecisionLog

        return PgDecisionLog(self.store)

    def gate(self) -> Any:
        from batchray.core.storage.postgres.gate import PgCommitGate

        gate = PgCommitGate(self.store)
        self._gates.append(gate)
        return gate

    def item_sources(self, participants: dict[str, Participant]) -> list[ItemSource]:
        from batchray.core.storage.postgres.reads import PgItemSource

        return [PgItemSource(self.store)]

    def close(self) -> None:
        for gate in self._gates:
            gate.close()
        self.store.close()


def open_backend(store: str | os.PathLike, shards: Optional[int] = None) -> SqliteBackend | PgBackend:
    """The backend of a store directory or URL (created on first use)."""
    kind, location = parse_store_url(store)
    if kind == "postgresql":
        return PgBackend(location, shards)
    return SqliteBackend(location, shards)
