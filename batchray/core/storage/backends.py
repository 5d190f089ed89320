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
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, TypeVar

from batchray.errors import BatchrayError
from batchray.core.storage.store import (CATALOG, Catalog, CommitGate, ItemReader, StoreLayout, parse_store_url,
                                         require_store)
from batchray.core.txn.participant import ItemSource, Participant


class Backend(Protocol):
    """What every runtime needs of a store's backend (see the module docstring)."""

    kind: str
    layout: Any
    url: str

    def open_participant(self, name: str, *, recover: bool = True, lock_timeout: float = 10.0,
                         apply_delay: float = 0.0) -> Any: ...

    def open_log(self) -> Any: ...

    def gate(self) -> Any: ...

    def item_sources(self, participants: dict[str, Any]) -> list[Any]: ...

    def close(self) -> None: ...


class SqliteBackend:
    """A directory of SQLite files (see :mod:`batchray.core.storage.store`)."""

    kind = "sqlite"

    def __init__(self, location: str | os.PathLike, shards: Optional[int] = None, create: bool = True) -> None:
        if not create:
            require_store(location)
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

    def __init__(self, url: str, shards: Optional[int] = None, create: bool = True) -> None:
        from batchray.core.storage.postgres.store import PgLayout, PgStore

        self.store = PgStore(url, shards, create=create)
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


def open_backend(store: str | os.PathLike, shards: Optional[int] = None, *,
                 wait: float = 0.0, create: bool = True) -> SqliteBackend | PgBackend:
    """The backend of a store directory or URL (created on first use). ``wait``: seconds to keep
    trying while the store does not answer (see :func:`until_store_answers`). ``create=False``
    (a reader's): a store that does not exist is a :class:`~batchray.errors.NotFoundError`
    naming it, and nothing is created."""
    kind, location = parse_store_url(store)
    if kind == "postgresql":
        return until_store_answers(lambda: PgBackend(location, shards, create=create), wait)
    return until_store_answers(lambda: SqliteBackend(location, shards, create=create), wait)


T = TypeVar("T")


def until_store_answers(attempt: Callable[[], T], wait: float, cleanup: Callable[[], None] = lambda: None) -> T:
    """``attempt()``, tried again with backoff while it raises a retryable error (a PostgreSQL
    server down, starting up, or refusing connections: :class:`ParticipantUnavailable`) until
    ``wait`` seconds have passed; then that error. ``cleanup()`` runs after each failed try. For
    a restarted actor, whose constructor must not fail on a passing outage: Ray never restarts
    an actor whose creation task raised."""
    deadline = time.monotonic() + wait
    pause = 0.1
    while True:
        try:
            return attempt()
        except BatchrayError as exc:
            if not exc.retryable or time.monotonic() + pause > deadline:
                raise
            cleanup()
            time.sleep(pause)
            pause = min(2 * pause, 2.0)


@dataclass
class StoreView:
    """A store opened in one process: its decision log, its participants, and the catalog and
    item reader over them. The one wiring of a store's readers, shared by the in-process
    runtime (read-write participants, recovered) and the Ray driver (read-only views)."""

    log: Any
    participants: dict[str, Any]
    catalog: Catalog
    reader: ItemReader

    def close(self) -> None:
        for participant in self.participants.values():
            participant.close()
        self.log.close()


def open_view(backend: Backend, *, recover: bool, lock_timeout: float = 10.0,
              participants: Optional[dict[str, Any]] = None) -> StoreView:
    """Open ``backend``'s log and participants (``recover``: abort what a crash left unvoted;
    only the store's owner does) and the readers over them. ``participants`` given are used as
    they are (a test's wrapped ones). On failure nothing stays open."""
    opened: list[Any] = []
    try:
        log = backend.open_log()
        opened.append(log)
        if not participants:
            participants = {}
            for name in backend.layout.participant_names:
                participants[name] = backend.open_participant(name, recover=recover, lock_timeout=lock_timeout)
                opened.append(participants[name])
        gate = backend.gate()
        catalog = Catalog(participants[CATALOG], gate)
        reader = ItemReader(backend.item_sources(participants), gate, log)
        return StoreView(log, participants, catalog, reader)
    except BaseException:
        # SQLite would hand a read-only descriptor still open to the next open of the same file
        for item in reversed(opened):
            try:
                item.close()
            except Exception:  # noqa: BLE001 - closing what a failed open left
                pass
        raise
