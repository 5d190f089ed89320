"""Who owns a store: one live owner at a time, with a liveness proof that a crash releases.

The owner of a store is the process that serves it (on Ray, the store's coordinator actor).
It holds the store's **owner lock** for as long as it lives and writes an **owner record**
(a JSON object: ``address`` — the Ray cluster's GCS address —, ``coordinator`` and
``namespace`` — the coordinator actor's name and Ray namespace —, ``host``, ``pid`` and
``startedAt``) that tells every other driver how to join it.

* SQLite directory: the lock is ``fcntl.flock(LOCK_EX)`` on ``owner.lock`` in the store
  directory, held on a descriptor the owner keeps open; the record is ``owner.json`` beside it
  (replaced atomically). The operating system releases the lock when the owner's process ends,
  however it ends (a SIGKILL included). It needs a local file system (flock is per machine).
* PostgreSQL schema: the lock is the session-level advisory lock
  ``pg_try_advisory_lock(key, 1)`` (``key`` derived from the schema) held on a dedicated
  connection; the record is the ``owner`` row of the schema's ``store_meta``. The server
  releases the lock when the session ends: at once when the owner's process dies, within about
  25 s (the connection's TCP keepalives) when its machine is lost.

Contract:

* :func:`claim` takes the lock, writes the record and returns the :class:`Ownership` to keep
  (its :meth:`Ownership.release` lets go). When another process holds the lock it raises
  :class:`batchray.errors.StoreInUse` naming that owner, and changes nothing.
* :func:`live_owner` returns the record of the store's live owner, or ``None`` when no process
  holds the lock (a record left by a dead owner is not an owner). It only probes: it never
  takes the store, and a claim racing with a probe waits for it (``claim(wait=...)``).
* Liveness is the lock alone; the record only says how to reach the owner.
* Within one process the lock is shared: a second claim of a store this process owns succeeds
  (the in-process runtime reopened over a store, as after a simulated crash) and the lock is
  let go at the last :meth:`Ownership.release`. Ownership is between processes.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Optional

from batchray.errors import StoreError, StoreInUse

LOCK_FILE = "owner.lock"
RECORD_FILE = "owner.json"
PG_LOCK_CLASS = 1
"""The second key of the PostgreSQL owner lock (the schema's DDL lock uses 0)."""


def owner_record(address: Optional[str], coordinator: Optional[str], namespace: Optional[str]) -> dict[str, Any]:
    """The record of an owner in this process: how to join it and where it runs."""
    return {"address": address, "coordinator": coordinator, "namespace": namespace,
            "host": socket.gethostname(), "pid": os.getpid(), "startedAt": time.time()}


def store_in_use(store: str, owner: Optional[dict[str, Any]], why: str = "") -> StoreInUse:
    """The structured refusal for a store whose live ``owner`` this driver does not join."""
    owner = owner or {}
    address = owner.get("address")
    where = f"the Ray cluster at {address}" if address else "a process"
    join = f"address={address!r}" if address else None
    how = f"; join it with connect(store, {join}) (CLI: --address {address})" if join else ""
    return StoreInUse(f"store {store} is served by {where} (host {owner.get('host')}, pid {owner.get('pid')})"
                      f"{': ' + why if why else ''}{how}; it is not taken over while that owner lives",
                      store=store, owner=owner, join=join)


class Ownership:
    """A held owner lock; :meth:`release` lets it go (so does the end of the process)."""

    def __init__(self, record: dict[str, Any], release: Any) -> None:
        self.record = record
        self._release = release

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


_held: dict[str, list[Any]] = {}
"""The stores this process owns: key -> [record, claims, release of the lock]."""
_held_guard = threading.Lock()


def _shared(key: str, take: Any) -> Ownership:
    """This process's ownership of the store ``key``, taken by ``take()`` (returning the record
    and the lock's release) on the first claim and shared by the later ones."""
    with _held_guard:
        if key not in _held:
            record, release_lock = take()
            _held[key] = [record, 0, release_lock]
        entry = _held[key]
        entry[1] += 1

    def release() -> None:
        with _held_guard:
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                entry[2]()

    return Ownership(entry[0], release)


class _FileOwner:
    """The owner lock and record of a SQLite store directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock_path = root / LOCK_FILE
        self.record_path = root / RECORD_FILE

    def claim(self, record: dict[str, Any], wait: float) -> Ownership:
        return _shared(f"file:{self.lock_path}", lambda: self._take(record, wait))

    def _take(self, record: dict[str, Any], wait: float) -> tuple[dict[str, Any], Any]:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise store_in_use(str(self.root), self._read()) from None
                time.sleep(0.05)
        def release() -> None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

        tmp = self.record_path.with_name(f".{RECORD_FILE}.{os.getpid()}")
        try:
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
                handle.write(json.dumps(record))  # private, as every file of the store
            os.replace(tmp, self.record_path)
        except OSError as exc:  # a full disk, a read-only directory: the store stays unclaimed
            release()
            tmp.unlink(missing_ok=True)
            raise StoreError(f"store {self.root}: cannot write its owner record: {exc}",
                             path=str(self.record_path)) from None
        return record, release

    def probe(self) -> Optional[dict[str, Any]]:
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None  # nobody holds it
        except BlockingIOError:
            pass
        finally:
            os.close(fd)
        for _ in range(20):  # the owner writes its record just after taking the lock
            record = self._read()
            if record is not None:
                return record
            time.sleep(0.05)
        return {}

    def _read(self) -> Optional[dict[str, Any]]:
        try:
            return json.loads(self.record_path.read_text())
        except (FileNotFoundError, ValueError):
            return None


class _PgOwner:
    """The owner lock and record of a PostgreSQL store (see the module docstring)."""

    def __init__(self, store: Any) -> None:
        from batchray.core.storage.postgres.url import advisory_key

        self.store = store
        self.key = advisory_key(f"{store.schema}:owner")

    def _try_lock(self, conn: Any) -> bool:
        return bool(conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (self.key, PG_LOCK_CLASS)).fetchone()[0])

    def claim(self, record: dict[str, Any], wait: float) -> Ownership:
        return _shared(f"pg:{self.store.identity}", lambda: self._take(record, wait))

    def _take(self, record: dict[str, Any], wait: float) -> tuple[dict[str, Any], Any]:
        conn = self.store.connect()
        deadline = time.monotonic() + wait
        try:
            while not self._try_lock(conn):
                if time.monotonic() >= deadline:
                    raise store_in_use(self.store.identity, self._read(conn))
                time.sleep(0.05)
            conn.execute(f"INSERT INTO {self.store.s}.store_meta VALUES('owner', %s) "
                         "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", (json.dumps(record),))
        except BaseException:
            conn.close()
            raise
        return record, conn.close  # the session's end releases the lock

    def probe(self) -> Optional[dict[str, Any]]:
        conn = self.store.connect()
        try:
            if self._try_lock(conn):
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", (self.key, PG_LOCK_CLASS))
                return None
            for _ in range(20):
                record = self._read(conn)
                if record is not None:
                    return record
                time.sleep(0.05)
            return {}
        finally:
            conn.close()

    def _read(self, conn: Any) -> Optional[dict[str, Any]]:
        row = conn.execute(f"SELECT value FROM {self.store.s}.store_meta WHERE key = 'owner'").fetchone()
        return json.loads(row[0]) if row else None


def _owner_of(backend: Any) -> _FileOwner | _PgOwner:
    if backend.kind == "postgresql":
        return _PgOwner(backend.store)
    return _FileOwner(Path(backend.layout.root))


def claim(backend: Any, record: dict[str, Any], *, wait: float = 1.0) -> Ownership:
    """Become the owner of ``backend``'s store (see the module docstring); ``wait``: how long
    to retry while the lock is held (a probe holds it for an instant) before refusing."""
    return _owner_of(backend).claim(record, wait)


def live_owner(backend: Any) -> Optional[dict[str, Any]]:
    """The record of the store's live owner (``{}`` if it has not written one yet), or None."""
    return _owner_of(backend).probe()
