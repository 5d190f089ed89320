"""The PostgreSQL store: participants that prepare for real, the coordinator's log, the commit gate.

A store is one schema of one database (``postgresql://user@host/db?schema=NAME``; the
``schema`` parameter is batchray's and is taken off the URL before connecting, default
``batchray``). Its tables::

    items(id bigint PK, part int, vals text, ver bigint)   every item of every shard; ``part``
                                                           names the participant that owns it
    docs(part, key, doc)                                   catalog documents
    participants(name PK, num, epoch)                      each participant's number and epoch
    txns(part, txn, state, ts, epoch, backup, pid, ...)    transactions started and not finished
    finished(part, txn, outcome, at)                       outcomes (a decision never seen is kept)
    applied(part, txn, chunk, images)                      applied chunks of open transactions
    backups, backup_ranges                                 before-images kept after commit (undo)
    batches, decisions, sequences, log_backups             the coordinator's log
    store_meta                                             format and shard count

How :class:`PgParticipant` keeps the protocol of :mod:`batchray.core.txn.participant`:

* A transaction's work at one participant runs in **its own connection**, kept open across
  applies (each apply is one savepoint, so a failed chunk leaves the transaction as it was).
  The vote is ``PREPARE TRANSACTION 'batchray:<schema>:<participant>:<txn>'``; the decision is
  ``COMMIT PREPARED`` / ``ROLLBACK PREPARED`` from any connection. PostgreSQL keeps prepared
  transactions, their writes and their row locks across crashes of the participant and of the
  server; ``pg_prepared_xacts`` lists them for recovery.
* The outcome row ``finished(..., 'committed')`` is written inside the transaction before it is
  prepared, so the commit and its record are one atomic step: a repeated commit finds no global
  id and the outcome committed, and is done.
* Before its first write the transaction is registered in ``txns`` (autocommit, with the
  connection's backend pid), so that a participant restarted after a crash finds the
  transactions that never voted: their sessions are gone (PostgreSQL rolled them back) or are
  terminated, and they are recorded aborted (presumed abort); a late apply is then refused.
* Locks: items are locked with ``SELECT ... FOR UPDATE SKIP LOCKED``; data contexts and catalog
  documents with transaction-level advisory locks (item writers hold their context shared, a
  schema rewrite exclusive), all kept by a prepared transaction. On a conflict the holders are
  looked up in ``pg_locks`` (the transactions holding the context) and **wait-die** decides: a
  younger requester fails at once with :class:`~batchray.errors.LockConflict`, an older one
  waits, up to ``lock_timeout``, in a savepoint (a timeout or a deadlock reported by PostgreSQL
  is a LockConflict too, and leaves the transaction as it was).
* Epochs: every step holds the participant's *fence* (a session-level shared advisory lock)
  while it checks the epoch recorded in ``participants`` and acts; :meth:`PgParticipant.claim`
  takes the fence exclusive, so a step of an older owner either finished before the claim or
  sees the new epoch and raises :class:`~batchray.errors.StaleEpochError`. A stale step that
  holds the fence too long is ended by the claim (its session is terminated).
* Reads run in other sessions and so never see uncommitted (or prepared) writes (MVCC); a
  transaction's own reads go through its connection. Reads across participants hold
  :class:`PgCommitGate` shared, phase 2 holds it exclusive.

``max_prepared_transactions`` must be above 0 (it is 0 by default): connecting says so if not.
"""
from __future__ import annotations

import contextlib
import re
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Optional
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from batchray.core.txn import crashpoints
from batchray.core.storage.store import CATALOG, ITEMS, ShardNaming, gate_scopes
from batchray.core.txn.chunks import (
    ITEM_BITS,
    BeforeImages,
    Chunk,
    CreateItems,
    DeleteItems,
    PutDocs,
    RestoreItems,
    TransformItems,
    TxnRef,
    UndoBatch,
    UpdateItems,
    check_txn_id,
    chunk_handler,
    context_of,
    context_range,
)
from batchray.errors import (
    BatchrayError,
    InDoubtError,
    InternalError,
    LockConflict,
    ParticipantUnavailable,
    StaleEpochError,
    StoreError,
    TransactionAborted,
    ValidationError,
)
from batchray.core.storage.patching import ItemPatcher, transform_values

FORMAT_VERSION = 1
DEFAULT_SCHEMA = "batchray"
GID_PREFIX = "batchray"
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")
_PARTICIPANT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")


def _psycopg():
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise StoreError("the PostgreSQL store needs psycopg 3 (pip install 'psycopg[binary]')") from exc
    return psycopg


# -- URLs --------------------------------------------------------------------------------------

def parse_pg_url(url: str) -> tuple[str, str]:
    """``(dsn for psycopg, schema)`` from ``postgresql://...[?schema=NAME]``."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValidationError(f"not a PostgreSQL URL: {redact(url)!r}", field="store")
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = DEFAULT_SCHEMA
    kept = []
    for key, value in query:
        if key == "schema":
            schema = value
        else:
            kept.append((key, value))
    if not _SCHEMA_NAME.match(schema):
        raise ValidationError(
            f"store schema {schema!r} must be 1-40 lower-case letters, digits or '_' (not first a digit)",
            field="store",
        )
    dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(kept), parts.fragment))
    return dsn, schema


def redact(url: str) -> str:
    """The URL without its password."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def store_identity(url: str) -> str:
    """A name for a store that is the same for every spelling of its URL's credentials:
    ``postgresql://host:port/db?schema=NAME`` (no user, no password)."""
    dsn, schema = parse_pg_url(url)
    parts = urlsplit(dsn)
    host = parts.hostname or ""
    port = parts.port or 5432
    return f"postgresql://{host}:{port}{parts.path}?schema={schema}"


def gid_for(schema: str, participant: str, txn: str) -> str:
    """The global id of one transaction at one participant: ``batchray:<schema>:<participant>:<txn>``
    (validated, so it can be written into SQL as a literal; at most 200 characters)."""
    check_txn_id(txn)
    if not _SCHEMA_NAME.match(schema) or not _PARTICIPANT_NAME.match(participant):
        raise ValidationError(f"invalid schema or participant name {schema!r}/{participant!r}")
    gid = f"{GID_PREFIX}:{schema}:{participant}:{txn}"
    if len(gid) >= 200:
        raise ValidationError(f"global id too long ({len(gid)} characters)", field="transactionId")
    return gid


def parse_gid(gid: str) -> Optional[tuple[str, str, str]]:
    """``(schema, participant, txn)`` of a batchray global id, or None."""
    parts = gid.split(":", 3)
    if len(parts) != 4 or parts[0] != GID_PREFIX:
        return None
    return parts[1], parts[2], parts[3]


def _key31(text: str) -> int:
    """A stable 31-bit advisory-lock key (non-negative, so pg_locks shows it as given)."""
    return zlib.crc32(text.encode()) & 0x7FFFFFFF


# -- connections -------------------------------------------------------------------------------

class _Pool:
    """Idle autocommit connections of one store (PostgreSQL logins cost tens of milliseconds)."""

    def __init__(self, connect, max_idle: int = 8) -> None:
        self._connect = connect
        self._idle: list[Any] = []
        self._mutex = threading.Lock()
        self.max_idle = max_idle
        self.closed = False

    def get(self):
        while True:
            with self._mutex:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect()
            if conn.closed or conn.broken:
                continue
            try:
                conn.execute("SELECT 1")  # a server restart leaves idle connections broken
                return conn
            except Exception:  # noqa: BLE001 - drop it and take another
                _close_quietly(conn)

    def put(self, conn) -> None:
        psycopg = _psycopg()
        healthy = (not conn.closed and not conn.broken
                   and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE)
        with self._mutex:
            if healthy and not self.closed and len(self._idle) < self.max_idle:
                self._idle.append(conn)
                return
        _close_quietly(conn)

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        conn = self.get()
        try:
            yield conn
        except BaseException:
            _close_quietly(conn)  # in an unknown state
            raise
        self.put(conn)

    def close(self) -> None:
        with self._mutex:
            self.closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            _close_quietly(conn)


def _close_quietly(conn) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001
        pass


def _store_error(what: str, exc: Exception) -> BatchrayError:
    """A PostgreSQL failure as batchray's error: a lost connection is retryable."""
    psycopg = _psycopg()
    if isinstance(exc, BatchrayError):
        return exc
    if isinstance(exc, psycopg.OperationalError):
        return ParticipantUnavailable(f"{what}: PostgreSQL connection failed: {exc}")
    return StoreError(f"{what}: {type(exc).__name__}: {exc}")


class PgStore:
    """One store (a schema of one database): connections, schema, shard count, participant numbers."""

    def __init__(self, url: str, shards: Optional[int] = None, *, connect_timeout: int = 10) -> None:
        self.url = url
        self.dsn, self.schema = parse_pg_url(url)
        self.s = f'"{self.schema}"'  # validated identifier
        self.identity = store_identity(url)
        self.connect_timeout = connect_timeout
        self.pool = _Pool(self.connect)
        self._nums: dict[str, int] = {}
        with self.pool.connection() as conn:
            self._check_server(conn)
            self._ensure_schema(conn)
            self.shards = self._shard_count(conn, shards)

    # connections
    def connect(self, *, lock_timeout: Optional[float] = None):
        """A new autocommit connection; ``lock_timeout`` in seconds (None: the server's)."""
        psycopg = _psycopg()
        try:
            conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=self.connect_timeout,
                                   application_name="batchray")
        except psycopg.Error as exc:
            raise ParticipantUnavailable(f"cannot connect to {redact(self.dsn)}: {exc}") from None
        # a crashed client's session must not keep its transaction (and locks) for long
        conn.execute("SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3")
        if lock_timeout is not None:
            conn.execute(f"SET lock_timeout = {max(1, int(lock_timeout * 1000))}")  # an integer
        return conn

    def _check_server(self, conn) -> None:
        value = int(conn.execute("SHOW max_prepared_transactions").fetchone()[0])
        if value <= 0:
            raise StoreError(
                "PostgreSQL has max_prepared_transactions = 0, so it cannot prepare transactions; "
                "set max_prepared_transactions (e.g. 64, at least the number of shards times the "
                "batches running at once) in postgresql.conf and restart the server",
                setting="max_prepared_transactions",
            )
        self.max_prepared = value

    def _ensure_schema(self, conn) -> None:
        s = self.s
        exists = conn.execute("SELECT to_regclass(%s)", (f"{s}.store_meta",)).fetchone()[0]
        if exists is not None:
            row = conn.execute(f"SELECT value FROM {s}.store_meta WHERE key='format'").fetchone()
            if row is not None:
                if int(row[0]) != FORMAT_VERSION:
                    raise StoreError(f"store {self.identity} has format {row[0]}, expected {FORMAT_VERSION}")
                return
        with _transaction(conn):
            conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (_key31(f"{self.schema}:ddl"),))
            conn.execute(_DDL.replace("{s}", s))
            conn.execute(f"INSERT INTO {s}.store_meta VALUES('format', %s) ON CONFLICT DO NOTHING", (str(FORMAT_VERSION),))

    def _shard_count(self, conn, shards: Optional[int]) -> int:
        s = self.s
        row = conn.execute(f"SELECT value FROM {s}.store_meta WHERE key='shards'").fetchone()
        if row is not None:
            if shards is not None and shards != int(row[0]):
                raise ValidationError(f"store {self.identity} was created with {row[0]} shards, not {shards}",
                                      field="shards")
            return int(row[0])
        from batchray.core.storage.store import DEFAULT_SHARDS

        count = shards or DEFAULT_SHARDS
        if not 1 <= count <= 256:
            raise ValidationError("shards must be between 1 and 256", field="shards")
        conn.execute(f"INSERT INTO {s}.store_meta VALUES('shards', %s) ON CONFLICT DO NOTHING", (str(count),))
        return int(conn.execute(f"SELECT value FROM {s}.store_meta WHERE key='shards'").fetchone()[0])

    def participant_num(self, name: str) -> int:
        """The number that tags a participant's rows (assigned once, kept forever)."""
        if not _PARTICIPANT_NAME.match(name):
            raise ValidationError(f"invalid participant name {name!r}", field="participant")
        if name in self._nums:
            return self._nums[name]
        s = self.s
        with self.pool.connection() as conn:
            row = conn.execute(f"SELECT num FROM {s}.participants WHERE name=%s", (name,)).fetchone()
            if row is None:
                with _transaction(conn):
                    conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (_key31(f"{self.schema}:ddl"),))
                    conn.execute(
                        f"INSERT INTO {s}.participants(name, num) "
                        f"SELECT %s, coalesce(max(num), 0) + 1 FROM {s}.participants ON CONFLICT (name) DO NOTHING",
                        (name,),
                    )
                row = conn.execute(f"SELECT num FROM {s}.participants WHERE name=%s", (name,)).fetchone()
        self._nums[name] = row[0]
        return row[0]

    def prepared_gids(self, conn, participant: Optional[str] = None) -> dict[str, Any]:
        """``{gid: prepared_at}`` of this store's prepared transactions (one participant's, if named)."""
        prefix = f"{GID_PREFIX}:{self.schema}:" + (f"{participant}:" if participant else "")
        rows = conn.execute(
            "SELECT gid, prepared FROM pg_prepared_xacts WHERE database = current_database() "
            "AND starts_with(gid, %s)", (prefix,),
        ).fetchall()
        return dict(rows)

    def close(self) -> None:
        self.pool.close()


@contextlib.contextmanager
def _transaction(conn) -> Iterator[None]:
    """An explicit transaction on an autocommit connection."""
    conn.execute("BEGIN")
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


_DDL = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.store_meta(key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.participants(
    name text PRIMARY KEY, num integer NOT NULL UNIQUE, epoch bigint NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS {s}.items(
    id bigint PRIMARY KEY, part integer NOT NULL, vals text NOT NULL, ver bigint NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS {s}.docs(
    part integer NOT NULL, key text NOT NULL, doc text NOT NULL, PRIMARY KEY(part, key));
CREATE TABLE IF NOT EXISTS {s}.txns(
    part integer NOT NULL, txn text NOT NULL, state text NOT NULL, ts bigint NOT NULL,
    epoch bigint NOT NULL, backup boolean NOT NULL, pid integer, backend_start timestamptz,
    started double precision NOT NULL, PRIMARY KEY(part, txn));
CREATE INDEX IF NOT EXISTS txns_by_pid ON {s}.txns(pid);
CREATE TABLE IF NOT EXISTS {s}.finished(
    part integer NOT NULL, txn text NOT NULL, outcome text NOT NULL, at double precision NOT NULL,
    PRIMARY KEY(part, txn));
CREATE TABLE IF NOT EXISTS {s}.applied(
    part integer NOT NULL, txn text NOT NULL, chunk bigint NOT NULL, images bytea NOT NULL,
    PRIMARY KEY(part, txn, chunk));
CREATE TABLE IF NOT EXISTS {s}.backups(
    part integer NOT NULL, txn text NOT NULL, tbl text NOT NULL, key text NOT NULL, before text,
    before_ver bigint, ver bigint NOT NULL, PRIMARY KEY(part, txn, tbl, key));
CREATE TABLE IF NOT EXISTS {s}.backup_ranges(
    part integer NOT NULL, txn text NOT NULL, lo bigint NOT NULL, hi bigint NOT NULL, n bigint NOT NULL,
    ver bigint NOT NULL);
CREATE INDEX IF NOT EXISTS backup_ranges_by_txn ON {s}.backup_ranges(part, txn);
CREATE SEQUENCE IF NOT EXISTS {s}.wseq;
CREATE TABLE IF NOT EXISTS {s}.batches(
    txn text PRIMARY KEY, state text NOT NULL, kind text NOT NULL, queue text NOT NULL,
    priority integer NOT NULL, ts bigint NOT NULL, submitted double precision NOT NULL,
    started double precision, finished double precision, idem_key text UNIQUE, request text, result text);
CREATE INDEX IF NOT EXISTS batches_by_state ON {s}.batches(state);
CREATE TABLE IF NOT EXISTS {s}.decisions(
    txn text PRIMARY KEY, outcomes text NOT NULL, at double precision NOT NULL,
    done boolean NOT NULL DEFAULT false);
CREATE INDEX IF NOT EXISTS decisions_open ON {s}.decisions(txn) WHERE NOT done;
CREATE TABLE IF NOT EXISTS {s}.sequences(name text PRIMARY KEY, value bigint NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.log_backups(
    txn text NOT NULL, participant text NOT NULL, seq integer NOT NULL, images bytea NOT NULL,
    PRIMARY KEY(txn, participant, seq));
"""


# -- the participant ---------------------------------------------------------------------------

@dataclass
class _Tx:
    """A transaction of this participant object: its connection while it is open."""

    txn: str
    ts: int
    backup: bool
    state: str = "new"  # new | active | prepared | done
    conn: Any = None
    chunks: int = 0
    mutex: threading.RLock = field(default_factory=threading.RLock)


_APPLY_DELAY_LINE = threading.Lock()
_COPY_BLOCK = 4096
"""Rows per COPY write: the server stores one block while the next is encoded."""


class _LockView:
    """What the worker actor reports as ``locks``: transactions holding locks here."""

    def __init__(self, participant: "PgParticipant") -> None:
        self.participant = participant

    def lock_count(self) -> int:
        return len(self.participant.pending())

    def held_by(self, txn: str) -> set:
        return {txn} if any(p["txn"] == txn for p in self.participant.pending()) else set()


class PgParticipant:
    """One participant (a shard, or the catalog) of a PostgreSQL store; see the module docstring.

    Thread-safe: each transaction has its own connection and mutex; decisions and recovery go
    through one control connection. ``apply_delay`` is as for
    :class:`~batchray.core.storage.sqlite.shard.SqliteShard` (tests and benchmarks only).
    """

    def __init__(self, store: PgStore, name: str, *, lock_timeout: float = 10.0, recover: bool = True,
                 apply_delay: float = 0.0) -> None:
        if apply_delay < 0:
            raise ValueError("apply_delay must not be negative")
        self.store = store
        self.name = name
        self.s = store.s
        self.num = store.participant_num(name)
        self.lock_timeout = float(lock_timeout)
        self.apply_delay = float(apply_delay)
        self.gid_prefix = f"{GID_PREFIX}:{store.schema}:{name}:"
        self._lock_class = _key31(f"{store.schema}:{name}")  # objid 0: the fence; a context id: that context
        self._doc_class = _key31(f"{store.schema}:{name}:docs")
        self._txns: dict[str, _Tx] = {}
        self._txns_mutex = threading.Lock()
        self._control_mutex = threading.RLock()
        self._control = None
        self._closed = False
        self.locks = _LockView(self)
        self.in_doubt: list[dict[str, Any]] = self.recover() if recover else []

    # -- connections ------------------------------------------------------------------------
    def _conn(self):
        """A connection for a new transaction (lock_timeout set)."""
        conn = self.store.pool.get()
        conn.execute(f"SET lock_timeout = {max(1, int(self.lock_timeout * 1000))}")
        return conn

    @contextlib.contextmanager
    def _controlled(self, what: str) -> Iterator[Any]:
        """The control connection, for decisions, recovery and claims (one at a time)."""
        psycopg = _psycopg()
        with self._control_mutex:
            if self._closed:
                raise StoreError(f"participant {self.name} is closed")
            if self._control is None or self._control.closed or self._control.broken:
                self._control = self.store.connect(lock_timeout=self.lock_timeout)
            try:
                yield self._control
            except psycopg.Error as exc:
                if self._control.broken or self._control.closed:
                    _close_quietly(self._control)
                    self._control = None
                elif self._control.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    with contextlib.suppress(Exception):
                        self._control.execute("ROLLBACK")
                raise _store_error(f"participant {self.name}: {what}", exc) from None

    def close(self) -> None:
        with self._txns_mutex:
            txns = list(self._txns.values())
            self._txns.clear()
        for tx in txns:  # an open connection ends its transaction: PostgreSQL rolls it back
            if tx.conn is not None:
                _close_quietly(tx.conn)
        with self._control_mutex:
            self._closed = True
            if self._control is not None:
                _close_quietly(self._control)
                self._control = None

    # -- the fence (epochs) -----------------------------------------------------------------
    def _fence(self, conn, epoch: Optional[int]) -> None:
        """Hold the fence shared on ``conn`` and check ``epoch`` against the recorded one.

        A try-lock loop, not a blocking call: on a connection inside a transaction, an error
        (a lock timeout) would abort the whole transaction."""
        deadline = time.monotonic() + max(self.lock_timeout, 1.0)
        while not conn.execute("SELECT pg_try_advisory_lock_shared(%s, 0)", (self._lock_class,)).fetchone()[0]:
            if time.monotonic() > deadline:
                raise ParticipantUnavailable(f"participant {self.name} is being claimed by a new owner")
            time.sleep(0.01)
        if epoch is None:
            return
        try:
            current = conn.execute(f"SELECT epoch FROM {self.s}.participants WHERE name=%s", (self.name,)).fetchone()[0]
            if epoch < current:
                raise StaleEpochError(
                    f"participant {self.name} is owned by epoch {current}; a message of epoch {epoch} is stale",
                    shard=self.name, epoch=epoch, current=current,
                )
        except BaseException:
            self._unfence(conn)
            raise

    def _unfence(self, conn) -> None:
        with contextlib.suppress(Exception):
            conn.execute("SELECT pg_advisory_unlock_shared(%s, 0)", (self._lock_class,))

    def _fence_exclusive(self, conn) -> None:
        """Hold the fence exclusive on ``conn`` (session-level): every step in flight has ended.
        A step that holds it past ``lock_timeout`` belongs to an owner being replaced: its
        session is terminated (PostgreSQL rolls back what it had not prepared)."""
        psycopg = _psycopg()
        for attempt in range(3):
            try:
                conn.execute("SELECT pg_advisory_lock(%s, 0)", (self._lock_class,))
                return
            except psycopg.errors.LockNotAvailable:
                holders = conn.execute(
                    "SELECT DISTINCT pid FROM pg_locks WHERE locktype='advisory' AND granted AND objsubid=2 "
                    "AND classid=%s AND objid=0 AND pid IS NOT NULL AND pid <> pg_backend_pid() "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                    (self._lock_class,),
                ).fetchall()
                for (pid,) in holders:
                    _terminate(conn, pid)
        raise ParticipantUnavailable(f"participant {self.name}: cannot take the fence from its current holders")

    def _unfence_exclusive(self, conn) -> None:
        with contextlib.suppress(Exception):
            conn.execute("SELECT pg_advisory_unlock(%s, 0)", (self._lock_class,))

    def claim(self, epoch: int) -> int:
        with self._controlled("claim") as conn:
            self._fence_exclusive(conn)
            try:
                current = self._read_epoch(conn)
                if epoch < current:
                    raise StaleEpochError(f"participant {self.name} already claimed by epoch {current}", current=current)
                conn.execute(f"UPDATE {self.s}.participants SET epoch=%s WHERE name=%s", (epoch, self.name))
                crashpoints.durable_write(f"{self.name}:claim")
            finally:
                self._unfence_exclusive(conn)
        return epoch

    def claim_next(self) -> int:
        """Claim the next epoch atomically (a new owner fences out every older one)."""
        with self._controlled("claim") as conn:
            self._fence_exclusive(conn)
            try:
                epoch = conn.execute(
                    f"UPDATE {self.s}.participants SET epoch = epoch + 1 WHERE name=%s RETURNING epoch", (self.name,)
                ).fetchone()[0]
                crashpoints.durable_write(f"{self.name}:claim")
            finally:
                self._unfence_exclusive(conn)
        return epoch

    @property
    def epoch(self) -> int:
        with self._controlled("epoch") as conn:
            return self._read_epoch(conn)

    def _read_epoch(self, conn) -> int:
        return conn.execute(f"SELECT epoch FROM {self.s}.participants WHERE name=%s", (self.name,)).fetchone()[0]

    def gid(self, txn: str) -> str:
        return gid_for(self.store.schema, self.name, txn)

    # -- apply ------------------------------------------------------------------------------
    def apply(self, ref: TxnRef, chunk: Chunk, prepare: bool = False) -> BeforeImages:
        """Apply one chunk; with ``prepare`` (the participant's last chunk) also vote:
        ``images.vote``."""
        check_txn_id(ref.txn)
        with self._txns_mutex:
            tx = self._txns.get(ref.txn)
            if tx is None:
                tx = self._txns[ref.txn] = _Tx(ref.txn, ref.ts, ref.backup)
        with tx.mutex:
            if tx.state == "done" or self._txns.get(ref.txn) is not tx:
                return self.apply(ref, chunk, prepare)  # it ended meanwhile: ask again
            if tx.state == "prepared":
                with self._controlled("apply") as conn:
                    self._fence(conn, ref.epoch)  # a stale owner hears that first
                    self._unfence(conn)
                raise InternalError(
                    f"apply after prepare for {ref.txn} on participant {self.name}: this should never happen",
                    shard=self.name,
                )
            images = self._apply_locked(tx, ref, chunk)
        if self.apply_delay:
            with _APPLY_DELAY_LINE:
                time.sleep(self.apply_delay)
        if prepare:
            images.vote = self.prepare(ref) if not images.errors else False
        return images

    def _apply_locked(self, tx: _Tx, ref: TxnRef, chunk: Chunk) -> BeforeImages:
        psycopg = _psycopg()
        fresh = tx.state == "new"
        if fresh:
            try:
                conn = self._conn()
            except BaseException:
                self._forget_tx(tx)
                raise
        else:
            conn = tx.conn
        try:
            self._fence(conn, ref.epoch)
        except BaseException as exc:
            if fresh:
                self._forget_tx(tx)
                self._release_conn(conn)
            elif isinstance(exc, psycopg.Error):
                self._lost(tx, exc)
            if isinstance(exc, psycopg.Error):
                raise _store_error(f"participant {self.name}: apply", exc) from None
            raise
        try:
            if fresh:
                self._start(tx, ref, conn)
            else:
                done = self._recorded(conn, ref.txn, chunk.chunk_id)
                if done is not None:
                    return done
            if isinstance(chunk, CreateItems):
                images = self._apply_chunk(tx, ref, chunk)  # one COPY: it fails whole or not at all
            else:
                conn.execute("SAVEPOINT batchray_chunk")
                try:
                    images = self._apply_chunk(tx, ref, chunk)
                except BaseException:
                    with contextlib.suppress(psycopg.Error):  # the chunk leaves nothing behind
                        conn.execute("ROLLBACK TO SAVEPOINT batchray_chunk")
                        conn.execute("RELEASE SAVEPOINT batchray_chunk")
                    raise
                conn.execute("RELEASE SAVEPOINT batchray_chunk")
            tx.chunks += 1
            return images
        except (BatchrayError, psycopg.Error) as exc:
            if tx.state == "done":  # refused before it began: nothing of it here
                raise
            if not _healthy(conn):
                # the transaction's session failed: PostgreSQL rolls it back; it votes no
                self._lost(tx, exc)
            elif tx.chunks == 0:
                self._drop(tx)  # nothing of it here yet: hold nothing (e.g. while it backs off)
            if isinstance(exc, psycopg.errors.UniqueViolation):
                raise InternalError(f"item id collision on participant {self.name}: {exc}") from None
            if isinstance(exc, psycopg.Error):
                raise _store_error(f"participant {self.name}: apply", exc) from None
            raise
        finally:
            if tx.conn is conn:
                self._unfence(conn)

    def _start(self, tx: _Tx, ref: TxnRef, conn) -> None:
        """Begin ``ref.txn`` here: refuse a finished or prepared one, register it, BEGIN."""
        s = self.s
        outcome, prepared, holder = conn.execute(
            f"SELECT (SELECT outcome FROM {s}.finished WHERE part=%s AND txn=%s), "
            "EXISTS(SELECT 1 FROM pg_prepared_xacts WHERE gid=%s AND database = current_database()), "
            f"(SELECT coalesce(pid, 0) FROM {s}.txns WHERE part=%s AND txn=%s)",
            (self.num, ref.txn, self.gid(ref.txn), self.num, ref.txn),
        ).fetchone()
        if outcome is None and not prepared and holder is not None:
            # opened by an owner that is gone or replaced (the fence let us in: we are the
            # current one); what it applied is lost to this session, so the transaction ends
            self._end_elsewhere(conn, ref.txn)
            outcome = "aborted"
        if outcome is not None:
            self._forget_tx(tx)
            self._release_conn(conn, unfence=True)
            raise TransactionAborted(f"transaction {ref.txn} is already {outcome} on participant {self.name}",
                                     shard=self.name, outcome=outcome)
        if prepared:
            self._forget_tx(tx)
            self._release_conn(conn, unfence=True)
            raise InternalError(f"apply after prepare for {ref.txn} on participant {self.name}: this should never happen",
                                shard=self.name)
        conn.execute(
            f"INSERT INTO {s}.txns(part, txn, state, ts, epoch, backup, pid, backend_start, started) "
            "VALUES(%s, %s, 'active', %s, %s, %s, pg_backend_pid(), "
            "(SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()), %s)",
            (self.num, ref.txn, ref.ts, ref.epoch, bool(ref.backup), time.time()),
        )
        conn.execute("BEGIN")
        tx.conn = conn
        tx.state = "active"

    def _forget_tx(self, tx: _Tx) -> None:
        tx.state = "done"
        with self._txns_mutex:
            if self._txns.get(tx.txn) is tx:
                del self._txns[tx.txn]

    def _release_conn(self, conn, unfence: bool = False) -> None:
        if unfence:
            self._unfence(conn)
        self.store.pool.put(conn)

    def _drop(self, tx: _Tx) -> None:
        """End a transaction that applied nothing here: as if it never started."""
        conn = tx.conn
        tx.conn = None
        self._forget_tx(tx)
        try:
            conn.execute("ROLLBACK")
            conn.execute(f"DELETE FROM {self.s}.txns WHERE part=%s AND txn=%s", (self.num, tx.txn))
            self._unfence(conn)
            self.store.pool.put(conn)
        except Exception:  # noqa: BLE001 - the session ends: its registration is cleaned by recovery
            _close_quietly(conn)

    def _lost(self, tx: _Tx, exc: BaseException) -> None:
        """The transaction's session failed: roll it back, record it aborted (it votes no)."""
        conn = tx.conn
        tx.conn = None
        self._forget_tx(tx)
        if conn is not None:
            _close_quietly(conn)  # PostgreSQL rolls back a transaction whose session ends
        with contextlib.suppress(BatchrayError):
            with self._controlled("abort lost transaction") as control:
                self._record(control, tx.txn, "aborted")

    def _recorded(self, conn, txn: str, chunk_id: int) -> Optional[BeforeImages]:
        row = conn.execute(
            f"SELECT images FROM {self.s}.applied WHERE part=%s AND txn=%s AND chunk=%s", (self.num, txn, chunk_id)
        ).fetchone()
        return None if row is None else _images_from(chunk_id, row[0])

    def _apply_chunk(self, tx: _Tx, ref: TxnRef, chunk: Chunk) -> BeforeImages:
        handler = chunk_handler(self, chunk)
        conn = tx.conn
        ver = conn.execute(f"SELECT nextval('{self.store.schema}.wseq')").fetchone()[0]
        images, vers = handler(tx, ref, chunk, ver)
        conn.execute(
            f"INSERT INTO {self.s}.applied(part, txn, chunk, images) VALUES(%s, %s, %s, %s)",
            (self.num, ref.txn, chunk.chunk_id, _images_blob(images, vers, ver)),
        )
        crashpoints.durable_write(f"{self.name}:apply")
        return images

    # -- locks ------------------------------------------------------------------------------
    def _holders(self, conn, keys: list[tuple[int, int]]) -> list[Optional[int]]:
        """The ages (``ts``) of the transactions holding any of the advisory ``keys``; None for
        a holder that is not a batchray transaction of this store."""
        rows = conn.execute(
            """
            SELECT l.pid,
                   (SELECT t.ts FROM {s}.txns t WHERE t.pid = l.pid AND t.state = 'active' LIMIT 1),
                   (SELECT p.gid FROM pg_locks x JOIN pg_prepared_xacts p ON p.transaction = x.transactionid
                     WHERE l.pid IS NULL AND x.locktype = 'transactionid'
                       AND x.virtualtransaction = l.virtualtransaction LIMIT 1)
              FROM pg_locks l
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND (l.classid::bigint, l.objid::bigint) IN (SELECT * FROM unnest(%s::bigint[], %s::bigint[]))
               AND l.pid IS DISTINCT FROM pg_backend_pid()
            """.replace("{s}", self.s),
            ([k for k, _ in keys], [o for _, o in keys]),
        ).fetchall()
        ages: list[Optional[int]] = []
        for pid, ts, gid in rows:
            if pid is not None:
                ages.append(ts)
                continue
            parsed = parse_gid(gid) if gid else None
            if parsed is None or parsed[0] != self.store.schema:
                ages.append(None)
                continue
            row = conn.execute(f"SELECT ts FROM {self.s}.txns WHERE txn=%s LIMIT 1", (parsed[2],)).fetchone()
            ages.append(row[0] if row else None)
        return ages

    def _wait_die(self, conn, ref: TxnRef, keys: list[tuple[int, int]], what: str) -> None:
        """Wait-die on a conflict: die (LockConflict) when an older transaction holds ``keys``."""
        older = [ts for ts in self._holders(conn, keys) if ts is not None and ts < ref.ts]
        if older:
            raise LockConflict(
                f"{what} on participant {self.name} is held by an older transaction: {ref.txn} dies (wait-die)",
                shard=self.name, txn=ref.txn,
            )

    def _waiting(self, conn, ref: TxnRef, sql: str, params: Any, what: str) -> list[tuple]:
        """Run a blocking lock statement in a savepoint; a lock timeout or a deadlock is a LockConflict."""
        psycopg = _psycopg()
        conn.execute("SAVEPOINT batchray_wait")
        try:
            rows = conn.execute(sql, params).fetchall() if "SELECT" in sql.upper() else []
        except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected, psycopg.errors.QueryCanceled) as exc:
            conn.execute("ROLLBACK TO SAVEPOINT batchray_wait")
            conn.execute("RELEASE SAVEPOINT batchray_wait")
            raise LockConflict(
                f"{what} on participant {self.name}: gave up waiting ({type(exc).__name__})",
                shard=self.name, txn=ref.txn,
            ) from None
        conn.execute("RELEASE SAVEPOINT batchray_wait")
        return rows

    def _lock_contexts(self, conn, ref: TxnRef, contexts: list[int], exclusive: bool) -> None:
        mode = "" if exclusive else "_shared"
        for ctx in sorted(set(contexts)):
            key = (self._lock_class, int(ctx))
            if conn.execute(f"SELECT pg_try_advisory_xact_lock{mode}(%s, %s)", key).fetchone()[0]:
                continue
            what = f"data context {ctx}"
            self._wait_die(conn, ref, [key], what)
            self._waiting(conn, ref, f"SELECT pg_advisory_xact_lock{mode}(%s, %s)", key, what)

    def _lock_docs(self, conn, ref: TxnRef, keys: list[str]) -> None:
        for objid in sorted({_key31(k) for k in keys}):
            key = (self._doc_class, objid)
            if conn.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", key).fetchone()[0]:
                continue
            self._wait_die(conn, ref, [key], "a catalog document")
            self._waiting(conn, ref, "SELECT pg_advisory_xact_lock(%s, %s)", key, "a catalog document")

    def _lock_items(self, conn, ref: TxnRef, ids: list[int]) -> dict[int, tuple[str, int]]:
        """Lock the items among ``ids`` that exist here; ``{id: (vals, ver)}``."""
        s = self.s
        got = {
            i: (v, ver) for i, v, ver in conn.execute(
                f"SELECT id, vals, ver FROM {s}.items WHERE id = ANY(%s) AND part=%s ORDER BY id FOR UPDATE SKIP LOCKED",
                (ids, self.num),
            ).fetchall()
        }
        missing = [i for i in set(ids) if i not in got]
        if missing:
            present = [i for (i,) in conn.execute(
                f"SELECT id FROM {s}.items WHERE id = ANY(%s) AND part=%s", (missing, self.num)).fetchall()]
            if present:
                got.update(self._wait_for_items(conn, ref, present, None))
        return got

    def _lock_matching(self, conn, ref: TxnRef, context_id: int, where: str) -> dict[int, tuple[str, int]]:
        """Lock the items of a context that match ``where``; ``{id: (vals, ver)}``."""
        fragment, params = _where_sql(where)
        lo, hi = context_range(context_id)
        base = f"FROM {self.s}.items WHERE id BETWEEN %s AND %s AND part=%s AND ({fragment})"
        args = [lo, hi, self.num, *params]
        got = {i: (v, ver) for i, v, ver in conn.execute(
            f"SELECT id, vals, ver {base} ORDER BY id FOR UPDATE SKIP LOCKED", args).fetchall()}
        matching = [i for (i,) in conn.execute(f"SELECT id {base}", args).fetchall()]
        busy = [i for i in matching if i not in got]
        if busy:
            got.update(self._wait_for_items(conn, ref, busy, (fragment, params)))
        return dict(sorted(got.items()))

    def _wait_for_items(self, conn, ref: TxnRef, ids: list[int], where) -> dict[int, tuple[str, int]]:
        """Items locked by others: wait-die over the transactions that hold their contexts (every
        item writer holds its item's context), then wait for them if all are younger."""
        contexts = sorted({context_of(i) for i in ids})
        self._wait_die(conn, ref, [(self._lock_class, c) for c in contexts], f"{len(ids)} item(s)")
        sql = f"SELECT id, vals, ver FROM {self.s}.items WHERE id = ANY(%s) AND part=%s"
        params: list[Any] = [sorted(ids), self.num]
        if where is not None:  # checked again on the version the holder leaves behind
            sql += f" AND ({where[0]})"
            params += where[1]
        rows = self._waiting(conn, ref, sql + " ORDER BY id FOR UPDATE", params, f"{len(ids)} item(s)")
        return {i: (v, ver) for i, v, ver in rows}

    # -- chunk handlers: each returns (images, {item id: (before_ver)}) ----------------------
    def _create(self, tx: _Tx, ref: TxnRef, chunk: CreateItems, ver: int):
        """COPY the chunk's valid rows in blocks, so that the server stores one block while the
        next is validated and encoded here (rows are encoded straight into COPY's text format)."""
        images = BeforeImages(chunk.chunk_id)
        if chunk.schema is None:  # already-encoded JSON texts: escaped as COPY text needs
            ids, texts = chunk.ids, [_copy_text(v) for v in chunk.rows]
            encode = False
        else:
            from batchray.core.storage.patching import _validator

            validator = _validator(orjson.dumps(chunk.schema, option=orjson.OPT_SORT_KEYS))
            positions, texts, errors = validator.validate(chunk.rows, index_of=chunk.index_of)
            images.errors.extend(errors)
            ids = chunk.ids if len(positions) == len(chunk.ids) else [chunk.ids[p] for p in positions]
            encode = True
        if not len(ids):
            return images, {}
        conn = tx.conn
        self._lock_contexts(conn, ref, [context_of(ids[0])], exclusive=False)
        tail, end, dumps = f"\t{self.num}\t", f"\t{ver}\n", orjson.dumps
        with conn.cursor().copy(f"COPY {self.s}.items(id, part, vals, ver) FROM STDIN") as copy:
            for first in range(0, len(ids), _COPY_BLOCK):
                block_ids, block = ids[first:first + _COPY_BLOCK], texts[first:first + _COPY_BLOCK]
                if encode:
                    data = "".join([f"{i}{tail}{dumps(v).decode()}{end}" for i, v in zip(block_ids, block)])
                    if "\\" in data:  # JSON from orjson holds no raw tab or newline: only \ to double
                        data = data.replace("\\", "\\\\")
                else:
                    data = "".join([f"{i}{tail}{v}{end}" for i, v in zip(block_ids, block)])
                copy.write(data)
        images.created.append((ids[0], ids[-1], len(ids)))
        images.affected = len(ids)
        return images, {}

    def _update(self, tx: _Tx, ref: TxnRef, chunk: UpdateItems, ver: int):
        images = BeforeImages(chunk.chunk_id)
        conn = tx.conn
        self._lock_contexts(conn, ref, [chunk.context_id], exclusive=False)
        if chunk.ids is not None:
            ids = list(chunk.ids)
            current = self._lock_items(conn, ref, ids)
        else:
            current = self._lock_matching(conn, ref, chunk.context_id, chunk.where)
            ids = list(current)
        patcher = ItemPatcher(chunk.schema, replace=chunk.replace)
        befores: dict[int, Optional[str]] = {}  # the first before-image of each item
        writes: dict[int, str] = {}  # the last value of each item: patches of one item compose
        for position, item_id in enumerate(ids):
            index = _request_index(chunk, position)
            old = writes.get(item_id, current[item_id][0] if item_id in current else None)
            if old is None:
                images.errors.append({"index": index, "field": None, "code": "NOT_FOUND",
                                      "message": f"item {item_id} does not exist", "itemId": item_id})
                continue
            patch = chunk.patches[position] if chunk.patches is not None else chunk.patch
            try:
                new = patcher.apply(orjson.loads(old), patch or {})
            except ValidationError as exc:
                images.errors.append({"index": index, "field": exc.details.get("field"), "code": exc.code,
                                      "message": exc.message, "itemId": item_id})
                continue
            befores.setdefault(item_id, current[item_id][0])
            writes[item_id] = orjson.dumps(new).decode()
        self._write_items(conn, writes, ver)
        images.items = list(befores.items())
        images.affected = len(writes)
        return images, {i: current[i][1] for i in befores}

    def _write_items(self, conn, writes: dict[int, str], ver: int) -> None:
        if writes:
            conn.execute(
                f"UPDATE {self.s}.items AS i SET vals = w.vals, ver = %s "
                "FROM unnest(%s::bigint[], %s::text[]) AS w(id, vals) WHERE i.id = w.id",
                (ver, list(writes), list(writes.values())),
            )

    def _delete(self, tx: _Tx, ref: TxnRef, chunk: DeleteItems, ver: int):
        images = BeforeImages(chunk.chunk_id)
        conn = tx.conn
        self._lock_contexts(conn, ref, [chunk.context_id], exclusive=False)
        if chunk.ids is not None:
            current = self._lock_items(conn, ref, list(chunk.ids))
            for position, item_id in enumerate(chunk.ids):
                if item_id not in current:
                    images.errors.append({"index": position, "code": "NOT_FOUND",
                                          "message": f"item {item_id} does not exist", "itemId": item_id})
        else:
            current = self._lock_matching(conn, ref, chunk.context_id, chunk.where)
        if current:
            conn.execute(f"DELETE FROM {self.s}.items WHERE id = ANY(%s)", (list(current),))
        images.items = [(i, v) for i, (v, _) in current.items()]
        images.affected = len(current)
        return images, {i: ver_ for i, (_, ver_) in current.items()}

    def _restore(self, tx: _Tx, ref: TxnRef, chunk: RestoreItems, ver: int):
        images = BeforeImages(chunk.chunk_id)
        conn = tx.conn
        self._lock_contexts(conn, ref, [context_of(i) for i in chunk.ids], exclusive=False)
        current = self._lock_items(conn, ref, list(chunk.ids))
        images.items = [(i, current[i][0] if i in current else None) for i in chunk.ids]
        self._put_items(conn, [(i, v) for i, v in zip(chunk.ids, chunk.rows) if v is not None], ver)
        gone = [i for i, v in zip(chunk.ids, chunk.rows) if v is None]
        if gone:
            conn.execute(f"DELETE FROM {self.s}.items WHERE id = ANY(%s) AND part=%s", (gone, self.num))
        images.affected = len(chunk.ids)
        return images, {i: current[i][1] for i in chunk.ids if i in current}

    def _put_items(self, conn, rows: list[tuple[int, str]], ver: int) -> None:
        if rows:
            conn.execute(
                f"INSERT INTO {self.s}.items(id, part, vals, ver) "
                "SELECT w.id, %s, w.vals, %s FROM unnest(%s::bigint[], %s::text[]) AS w(id, vals) "
                "ON CONFLICT (id) DO UPDATE SET vals = EXCLUDED.vals, ver = EXCLUDED.ver, part = EXCLUDED.part",
                (self.num, ver, [i for i, _ in rows], [v for _, v in rows]),
            )

    def _put_docs(self, tx: _Tx, ref: TxnRef, chunk: PutDocs, ver: int):
        images = BeforeImages(chunk.chunk_id)
        conn = tx.conn
        keys = [k for k, _ in chunk.docs]
        self._lock_docs(conn, ref, keys)
        current = dict(conn.execute(
            f"SELECT key, doc FROM {self.s}.docs WHERE part=%s AND key = ANY(%s)", (self.num, keys)).fetchall())
        images.docs = [(k, current.get(k)) for k in keys]
        for key, doc in chunk.docs:
            if doc is None:
                conn.execute(f"DELETE FROM {self.s}.docs WHERE part=%s AND key=%s", (self.num, key))
            else:
                conn.execute(
                    f"INSERT INTO {self.s}.docs(part, key, doc) VALUES(%s, %s, %s) "
                    "ON CONFLICT (part, key) DO UPDATE SET doc = EXCLUDED.doc",
                    (self.num, key, doc),
                )
        images.affected = len(keys)
        return images, {}

    def _transform(self, tx: _Tx, ref: TxnRef, chunk: TransformItems, ver: int):
        from batchray.core.model.schema import Attribute

        images = BeforeImages(chunk.chunk_id)
        conn = tx.conn
        self._lock_contexts(conn, ref, [chunk.context_id], exclusive=True)
        lo, hi = context_range(chunk.context_id)
        converts = {name: Attribute.model_validate(spec) for name, spec in chunk.converts.items()}
        befores: list[tuple[int, str]] = []
        vers: dict[int, int] = {}
        writes: dict[int, str] = {}
        # every item writer of the context holds it shared, so nobody else holds these rows
        rows = conn.execute(
            f"SELECT id, vals, ver FROM {self.s}.items WHERE id BETWEEN %s AND %s AND part=%s ORDER BY id FOR UPDATE",
            (lo, hi, self.num),
        ).fetchall()
        for item_id, old, old_ver in rows:
            new = transform_values(orjson.loads(old), chunk, converts, item_id, images.errors)
            if new is not None:
                befores.append((item_id, old))
                vers[item_id] = old_ver
                writes[item_id] = orjson.dumps(new).decode()
        self._write_items(conn, writes, ver)
        images.items = befores
        images.affected = len(writes)
        return images, vers

    def _undo_batch(self, tx: _Tx, ref: TxnRef, chunk: UndoBatch, ver: int):
        """Restore a committed batch's before-images (see :class:`UndoBatch`)."""
        images = BeforeImages(chunk.chunk_id)
        conn = tx.conn
        s = self.s
        contexts = [c for (c,) in conn.execute(
            f"SELECT DISTINCT key::bigint >> {ITEM_BITS} FROM {s}.backups WHERE part=%s AND txn=%s AND tbl='items' "
            f"UNION SELECT DISTINCT lo >> {ITEM_BITS} FROM {s}.backup_ranges WHERE part=%s AND txn=%s",
            (self.num, chunk.source_txn, self.num, chunk.source_txn),
        ).fetchall()]
        self._lock_contexts(conn, ref, contexts, exclusive=True)
        rows = conn.execute(
            f"SELECT b.key::bigint, b.before, b.before_ver, b.ver, i.ver FROM {s}.backups b "
            f"LEFT JOIN {s}.items i ON i.id = b.key::bigint WHERE b.part=%s AND b.txn=%s AND b.tbl='items'",
            (self.num, chunk.source_txn),
        ).fetchall()
        ranges = conn.execute(
            f"SELECT lo, hi, n, ver FROM {s}.backup_ranges WHERE part=%s AND txn=%s", (self.num, chunk.source_txn)
        ).fetchall()
        conflicts = [key for key, _, _, wrote, now in rows if (now if now is not None else -1) != wrote]
        for lo, hi, n, wrote in ranges:
            changed = conn.execute(
                f"SELECT id FROM {s}.items WHERE id BETWEEN %s AND %s AND part=%s AND ver <> %s LIMIT 10",
                (lo, hi, self.num, wrote),
            ).fetchall()
            present = conn.execute(
                f"SELECT count(*) FROM {s}.items WHERE id BETWEEN %s AND %s AND part=%s", (lo, hi, self.num)
            ).fetchone()[0]
            conflicts += [i for (i,) in changed] + ([lo] if present != n else [])
        if conflicts and not chunk.force:
            images.errors.append({
                "index": None, "field": None, "code": "CONFLICT", "itemIds": conflicts[:20],
                "message": f"{len(conflicts)} item(s) on {self.name} were changed by later batches since "
                           f"{chunk.source_txn}; undo refused (force to override)",
            })
            return images, {}
        keys = [key for key, *_ in rows]
        gone: list[int] = [key for key, before, *_ in rows if before is None]
        for lo, hi, _, _ in ranges:
            gone += [i for (i,) in conn.execute(
                f"SELECT id FROM {s}.items WHERE id BETWEEN %s AND %s AND part=%s", (lo, hi, self.num)).fetchall()]
        touched = sorted(set(keys) | set(gone))
        current = {i: (v, cv) for i, v, cv in conn.execute(
            f"SELECT id, vals, ver FROM {s}.items WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (touched,)).fetchall()}
        self._put_items(conn, [(key, before) for key, before, *_ in rows if before is not None], ver)
        if gone:
            conn.execute(f"DELETE FROM {s}.items WHERE id = ANY(%s) AND part=%s", (gone, self.num))
        images.items = [(i, current[i][0] if i in current else None) for i in touched]
        images.affected = len(keys) + sum(n for _, _, n, _ in ranges)
        return images, {i: current[i][1] for i in touched if i in current}

    # -- voting and deciding ----------------------------------------------------------------
    def prepare(self, ref: TxnRef) -> bool:
        check_txn_id(ref.txn)
        tx = self._txns.get(ref.txn)
        if tx is not None:
            with tx.mutex:
                if tx.state == "active" and self._txns.get(ref.txn) is tx:
                    return self._prepare_open(tx, ref)
        with self._controlled("prepare") as conn:
            self._fence(conn, ref.epoch)
            try:
                if self.gid(ref.txn) in self.store.prepared_gids(conn, self.name):
                    return True
                outcome = self._outcome(conn, ref.txn)
                if outcome is not None:
                    return False
                # never applied here, lost with its session, or open in a replaced owner's
                # session: vote no, and remember, so that a late apply is refused
                self._end_elsewhere(conn, ref.txn)
                return False
            finally:
                self._unfence(conn)

    def _prepare_open(self, tx: _Tx, ref: TxnRef) -> bool:
        psycopg = _psycopg()
        conn = tx.conn
        try:
            self._fence(conn, ref.epoch)
        except psycopg.Error as exc:
            self._lost(tx, exc)
            return False
        s = self.s
        try:
            if tx.backup:
                self._keep_backups(conn, tx.txn)
            conn.execute(f"DELETE FROM {s}.applied WHERE part=%s AND txn=%s", (self.num, tx.txn))
            # the commit's own record: visible exactly when (and if) COMMIT PREPARED runs
            conn.execute(f"INSERT INTO {s}.finished(part, txn, outcome, at) VALUES(%s, %s, 'committed', %s)",
                         (self.num, tx.txn, time.time()))
            crashpoints.durable_write(f"{self.name}:prepare")
            conn.execute(f"PREPARE TRANSACTION '{self.gid(tx.txn)}'")  # validated: no quote can appear
        except psycopg.Error as exc:
            # PostgreSQL rolled it back (e.g. a global id already in use): vote no
            self._lost(tx, exc)
            return False
        try:
            conn.execute(f"UPDATE {s}.txns SET state='prepared', pid=NULL WHERE part=%s AND txn=%s",
                         (self.num, tx.txn))
            self._unfence(conn)
            self.store.pool.put(conn)
        except psycopg.Error:
            _close_quietly(conn)  # prepared all the same: the registry's state is only a hint
        tx.conn = None
        tx.state = "prepared"
        return True

    def _keep_backups(self, conn, txn: str) -> None:
        """Before the vote of a transaction that asked for backups: keep its before-images with
        the version each item got, so :class:`UndoBatch` can later restore them and notice items
        that a later batch changed. Written inside the transaction: kept only if it commits."""
        s = self.s
        firsts: dict[tuple[str, str], tuple[Optional[str], Optional[int]]] = {}
        for chunk_id, blob in conn.execute(
            f"SELECT chunk, images FROM {s}.applied WHERE part=%s AND txn=%s ORDER BY chunk", (self.num, txn)
        ).fetchall():
            data = orjson.loads(blob)
            vers = {int(k): v for k, v in data.get("vers", {}).items()}
            for key, before in data["items"]:
                firsts.setdefault(("items", str(key)), (before, vers.get(key)))
            for key, before in data["docs"]:
                firsts.setdefault(("docs", key), (before, None))
            for lo, hi, n in data["created"]:
                conn.execute(f"INSERT INTO {s}.backup_ranges VALUES(%s, %s, %s, %s, %s, %s)",
                             (self.num, txn, lo, hi, n, data["ver"]))
        item_keys = [int(k) for (t, k) in firsts if t == "items"]
        now = dict(conn.execute(f"SELECT id, ver FROM {s}.items WHERE id = ANY(%s)", (item_keys,)).fetchall())
        rows = [(self.num, txn, tbl, key, before, before_ver, now.get(int(key), -1) if tbl == "items" else -1)
                for (tbl, key), (before, before_ver) in firsts.items()]
        if rows:
            with conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO {s}.backups VALUES(%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", rows)

    def drop_backups(self, txn: str) -> None:
        """Forget a batch's backups (it can no longer be undone)."""
        with self._controlled("drop backups") as conn:
            conn.execute(f"DELETE FROM {self.s}.backups WHERE part=%s AND txn=%s", (self.num, txn))
            conn.execute(f"DELETE FROM {self.s}.backup_ranges WHERE part=%s AND txn=%s", (self.num, txn))

    def commit(self, ref: TxnRef) -> None:
        self._finish(ref, "committed")

    def abort(self, ref: TxnRef) -> None:
        self._finish(ref, "aborted")

    def _finish(self, ref: TxnRef, outcome: str) -> None:
        psycopg = _psycopg()
        check_txn_id(ref.txn)
        tx = self._txns.get(ref.txn)
        if tx is not None:
            with tx.mutex:
                if tx.state == "active" and self._txns.get(ref.txn) is tx:
                    try:
                        self._finish_open(tx, ref, outcome)
                        return
                    except psycopg.Error as exc:
                        self._lost(tx, exc)
                        if outcome == "committed":
                            raise InternalError(
                                f"transaction {ref.txn} on participant {self.name} failed while committing "
                                f"without a vote: {exc}") from None
                        return
        with self._controlled(outcome) as conn:
            self._fence(conn, ref.epoch)
            try:
                gid = self.gid(ref.txn)
                if gid in self.store.prepared_gids(conn, self.name):
                    try:
                        conn.execute(f"{'COMMIT' if outcome == 'committed' else 'ROLLBACK'} PREPARED '{gid}'")
                    except psycopg.errors.UndefinedObject:
                        pass  # finished meanwhile by another session: the record below says how
                    crashpoints.durable_write(f"{self.name}:{outcome}")
                done = self._outcome(conn, ref.txn)
                if done is not None and done != outcome:
                    raise InternalError(
                        f"transaction {ref.txn} on participant {self.name} is {done}, asked to be {outcome}: "
                        "this should never happen, please file a bug", shard=self.name)
                if done is None:
                    if outcome == "committed" and self._registered(conn, ref.txn):
                        raise InternalError(
                            f"transaction {ref.txn} on participant {self.name} never voted here; it cannot "
                            "commit: this should never happen, please file a bug", shard=self.name)
                    self._end_elsewhere(conn, ref.txn, outcome)
                else:
                    conn.execute(f"DELETE FROM {self.s}.txns WHERE part=%s AND txn=%s", (self.num, ref.txn))
            finally:
                self._unfence(conn)
        if tx is not None:
            self._forget_tx(tx)

    def _finish_open(self, tx: _Tx, ref: TxnRef, outcome: str) -> None:
        """Commit or roll back a transaction that is still open here (it never voted)."""
        conn = tx.conn
        self._fence(conn, ref.epoch)
        s = self.s
        if outcome == "committed":
            if tx.backup:
                self._keep_backups(conn, tx.txn)
            conn.execute(f"DELETE FROM {s}.applied WHERE part=%s AND txn=%s", (self.num, tx.txn))
            conn.execute(f"INSERT INTO {s}.finished(part, txn, outcome, at) VALUES(%s, %s, 'committed', %s)",
                         (self.num, tx.txn, time.time()))
            conn.execute("COMMIT")
        else:
            conn.execute("ROLLBACK")
            self._record(conn, tx.txn, "aborted")
        crashpoints.durable_write(f"{self.name}:{outcome}")
        conn.execute(f"DELETE FROM {s}.txns WHERE part=%s AND txn=%s", (self.num, tx.txn))
        tx.conn = None
        self._unfence(conn)
        self.store.pool.put(conn)
        self._forget_tx(tx)

    def _record(self, conn, txn: str, outcome: str) -> None:
        conn.execute(
            f"INSERT INTO {self.s}.finished(part, txn, outcome, at) VALUES(%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (self.num, txn, outcome, time.time()),
        )
        conn.execute(f"DELETE FROM {self.s}.txns WHERE part=%s AND txn=%s", (self.num, txn))

    def _registered(self, conn, txn: str) -> bool:
        return conn.execute(f"SELECT 1 FROM {self.s}.txns WHERE part=%s AND txn=%s", (self.num, txn)).fetchone() is not None

    def _end_elsewhere(self, conn, txn: str, outcome: str = "aborted") -> None:
        """End a transaction that is not open in this object and not prepared: terminate the
        session that still has it open (a replaced owner's), then record ``outcome``."""
        row = conn.execute(
            f"SELECT t.pid FROM {self.s}.txns t JOIN pg_stat_activity a ON a.pid = t.pid "
            "AND a.backend_start = t.backend_start WHERE t.part=%s AND t.txn=%s AND a.pid <> pg_backend_pid()",
            (self.num, txn),
        ).fetchone()
        if row is not None and not _terminate(conn, row[0]):
            raise ParticipantUnavailable(f"participant {self.name}: the session holding {txn} (pid {row[0]}) did not end")
        self._record(conn, txn, outcome)

    # -- recovery ---------------------------------------------------------------------------
    def recover(self) -> list[dict[str, Any]]:
        """Abort transactions that never voted (presumed abort), and return the prepared ones
        (``{txn, ts, shard}``) as in doubt. PostgreSQL keeps their writes and locks."""
        with self._controlled("recover") as conn:
            self._fence_exclusive(conn)
            try:
                prepared = {parse_gid(g)[2] for g in self.store.prepared_gids(conn, self.name)}
                rows = conn.execute(
                    f"SELECT t.txn, t.ts, f.outcome FROM {self.s}.txns t LEFT JOIN {self.s}.finished f "
                    "ON f.part = t.part AND f.txn = t.txn WHERE t.part=%s ORDER BY t.ts, t.txn", (self.num,)
                ).fetchall()
                known = {txn: ts for txn, ts, _ in rows}
                for txn, ts, outcome in rows:
                    if txn in prepared or txn in self._txns:
                        continue
                    if outcome is not None:  # finished; only its registration was left
                        conn.execute(f"DELETE FROM {self.s}.txns WHERE part=%s AND txn=%s", (self.num, txn))
                    else:
                        self._end_elsewhere(conn, txn)
                in_doubt = [{"txn": txn, "ts": known.get(txn, 0), "shard": self.name} for txn in prepared]
            finally:
                self._unfence_exclusive(conn)
        return sorted(in_doubt, key=lambda d: (d["ts"], d["txn"]))

    def pending(self) -> list[dict[str, Any]]:
        """Transactions not yet finished here (``{txn, state, ts}``)."""
        with self._controlled("pending") as conn:
            prepared = {parse_gid(g)[2] for g in self.store.prepared_gids(conn, self.name)}
            rows = conn.execute(
                f"SELECT t.txn, t.ts FROM {self.s}.txns t WHERE t.part=%s AND NOT EXISTS "
                f"(SELECT 1 FROM {self.s}.finished f WHERE f.part = t.part AND f.txn = t.txn) ORDER BY t.ts, t.txn",
                (self.num,),
            ).fetchall()
        return [{"txn": t, "state": "prepared" if t in prepared else "active", "ts": ts} for t, ts in rows]

    def outcome(self, txn: str) -> Optional[str]:
        with self._controlled("outcome") as conn:
            return self._outcome(conn, txn)

    def _outcome(self, conn, txn: str) -> Optional[str]:
        row = conn.execute(f"SELECT outcome FROM {self.s}.finished WHERE part=%s AND txn=%s", (self.num, txn)).fetchone()
        return row[0] if row else None

    def before_images(self, txn: str) -> list[BeforeImages]:
        """The before-images of a transaction still open in this object, chunk by chunk.

        Once prepared they are PostgreSQL's (``ROLLBACK PREPARED`` restores them) and no session
        can read them; this returns ``[]`` then."""
        tx = self._txns.get(txn)
        if tx is None:
            return []
        with tx.mutex:
            if tx.state != "active" or tx.conn is None:
                return []
            rows = tx.conn.execute(
                f"SELECT chunk, images FROM {self.s}.applied WHERE part=%s AND txn=%s ORDER BY chunk", (self.num, txn)
            ).fetchall()
        return [_images_from(c, blob) for c, blob in rows]

    # -- reads --------------------------------------------------------------------------------
    def read_items(
        self,
        context_id: int,
        where: Optional[str] = None,
        *,
        own_txn: Optional[str] = None,
        ids: Optional[list[int]] = None,
        limit: Optional[int] = None,
        after: Optional[int] = None,
    ) -> Iterator[tuple[int, str]]:
        """Committed items of a context on this participant in id order; with ``own_txn`` (open
        here) that transaction's own writes too."""
        sql, params = _items_sql("id, vals", self.s, context_id, where, self.num, ids, after, limit, order=True)
        return iter(self._read(sql, params, own_txn))

    def count_items(self, context_id: int, where: Optional[str] = None) -> int:
        sql, params = _items_sql("count(*)", self.s, context_id, where, self.num, None, None, None, order=False)
        return self._read(sql, params, None)[0][0]

    def read_docs(self, prefix: str = "") -> dict[str, str]:
        """Committed catalog documents whose key starts with ``prefix``."""
        rows = self._read(f"SELECT key, doc FROM {self.s}.docs WHERE part=%s AND starts_with(key, %s)",
                          [self.num, prefix], None)
        return dict(rows)

    def _read(self, sql: str, params: list[Any], own_txn: Optional[str]) -> list[tuple]:
        psycopg = _psycopg()
        tx = self._txns.get(own_txn) if own_txn else None
        if tx is not None:
            with tx.mutex:
                if tx.state == "active" and tx.conn is not None:
                    return tx.conn.execute(sql, params).fetchall()
        try:
            with self.store.pool.connection() as conn:
                return conn.execute(sql, params).fetchall()
        except psycopg.Error as exc:
            raise _store_error(f"participant {self.name}: read", exc) from None

    def integrity_check(self) -> str:
        return "ok"

    def leftovers(self) -> dict[str, int]:
        """Counts of 2PC state still recorded (all zero when nothing is in flight)."""
        with self._controlled("leftovers") as conn:
            txns, applied = conn.execute(
                f"SELECT (SELECT count(*) FROM {self.s}.txns WHERE part=%s), "
                f"(SELECT count(*) FROM {self.s}.applied WHERE part=%s)", (self.num, self.num)).fetchone()
            prepared = len(self.store.prepared_gids(conn, self.name))
        return {"txns": txns, "undo": 0, "created": 0, "applied": applied, "prepared": prepared}


def _terminate(conn, pid: int, wait: float = 5.0) -> bool:
    """End another session (its open transaction rolls back) and wait until it is gone."""
    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    deadline = time.monotonic() + wait
    while conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid=%s", (pid,)).fetchone() is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _healthy(conn) -> bool:
    """The connection is up and inside a transaction that can go on."""
    psycopg = _psycopg()
    return (conn is not None and not conn.closed and not conn.broken
            and conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS)


# -- helpers --------------------------------------------------------------------------------

def _copy_text(value: str) -> str:
    """A value in COPY's text format (JSON from orjson has no raw tabs or newlines; a
    pre-encoded row might)."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value


def _images_blob(images: BeforeImages, vers: dict[int, int], ver: int) -> bytes:
    return orjson.dumps({
        "created": images.created, "items": images.items, "docs": images.docs, "affected": images.affected,
        "errors": images.errors, "vers": {str(k): v for k, v in vers.items()}, "ver": ver,
    })


def _images_from(chunk_id: int, blob: bytes) -> BeforeImages:
    data = orjson.loads(blob)
    return BeforeImages(
        chunk_id,
        created=[tuple(r) for r in data["created"]],
        items=[tuple(r) for r in data["items"]],
        docs=[tuple(r) for r in data["docs"]],
        affected=data["affected"],
        errors=data["errors"],
    )


def _request_index(chunk: UpdateItems, position: int) -> int:
    if not chunk.indexes:
        return position
    return chunk.indexes[position] if chunk.ids is not None else chunk.indexes[0]


def _where_sql(where: str) -> tuple[str, list[Any]]:
    from batchray.core.model.query import parse, postgresql_column, to_sql

    return to_sql(parse(where), postgresql_column, dialect="postgresql")


def _items_sql(columns: str, s: str, context_id: int, where: Optional[str], part: Optional[int],
               ids: Optional[list[int]], after: Optional[int], limit: Optional[int], *, order: bool) -> tuple[str, list[Any]]:
    lo, hi = context_range(context_id)
    clauses = ["id BETWEEN %s AND %s"]
    params: list[Any] = [lo, hi]
    if part is not None:
        clauses.append("part = %s")
        params.append(part)
    if where:
        fragment, extra = _where_sql(where)
        clauses.append(f"({fragment})")
        params += extra
    if ids is not None:
        clauses.append("id = ANY(%s)")
        params.append([int(i) for i in ids])
    if after is not None:
        clauses.append("id > %s")
        params.append(int(after))
    sql = f"SELECT {columns} FROM {s}.items WHERE " + " AND ".join(clauses)
    if order:
        sql += " ORDER BY id"
    if limit is not None:
        sql += " LIMIT %s"
        params.append(int(limit))
    return sql, params


# -- the store-wide reader, the log and the gate ----------------------------------------------

class PgItemSource:
    """Committed items of every participant at once (one statement, one snapshot): what
    :class:`~batchray.core.storage.store.ItemReader` reads a PostgreSQL store through."""

    name = "items"

    def __init__(self, store: PgStore) -> None:
        self.store = store

    def read_items(self, context_id: int, where: Optional[str] = None, *, own_txn: Optional[str] = None,
                   ids: Optional[list[int]] = None, limit: Optional[int] = None,
                   after: Optional[int] = None) -> Iterator[tuple[int, str]]:
        sql, params = _items_sql("id, vals", self.store.s, context_id, where, None, ids, after, limit, order=True)
        return iter(self._read(sql, params))

    def count_items(self, context_id: int, where: Optional[str] = None) -> int:
        sql, params = _items_sql("count(*)", self.store.s, context_id, where, None, None, None, None, order=False)
        return self._read(sql, params)[0][0]

    def _read(self, sql: str, params: list[Any]) -> list[tuple]:
        psycopg = _psycopg()
        try:
            with self.store.pool.connection() as conn:
                return conn.execute(sql, params).fetchall()
        except psycopg.Error as exc:
            raise _store_error("read", exc) from None

    def close(self) -> None:
        pass


class PgCommitGate:
    """The commit gates (see :class:`~batchray.core.storage.store.CommitGate`) as session-level advisory
    locks, one for items and one for the catalog: readers hold one shared, phase 2 holds
    exclusive those for what its batch touched. Each holder uses a connection of its own (one
    session's locks never conflict with each other); a holder that dies releases them with its
    session."""

    def __init__(self, store: PgStore) -> None:
        self.store = store
        base = _key31(f"{store.schema}:gate")
        self.keys = {ITEMS: (base, 0), CATALOG: (base, 1)}
        self._pool = _Pool(lambda: store.connect(), max_idle=4)

    @contextlib.contextmanager
    def _held(self, scopes: list[str], shared: bool) -> Iterator[None]:
        mode = "_shared" if shared else ""
        conn = self._pool.get()
        taken: list[tuple[int, int]] = []
        try:
            for scope in scopes:
                conn.execute(f"SELECT pg_advisory_lock{mode}(%s, %s)", self.keys[scope])
                taken.append(self.keys[scope])
        except BaseException:
            _close_quietly(conn)
            raise
        try:
            yield
        finally:
            try:
                for key in reversed(taken):
                    conn.execute(f"SELECT pg_advisory_unlock{mode}(%s, %s)", key)
                self._pool.put(conn)
            except Exception:  # noqa: BLE001 - ending the session releases them
                _close_quietly(conn)

    def exclusive(self, participants: Optional[Iterable[str]] = None):
        return self._held(gate_scopes(participants), False)

    def shared(self, scope: str = ITEMS):
        return self._held([scope], True)

    def close(self) -> None:
        self._pool.close()


class PgDecisionLog:
    """The coordinator's durable log (see :class:`~batchray.core.storage.decision_log.DecisionLog`) in the
    store's schema. Every write is its own committed transaction (durable with PostgreSQL's
    default ``synchronous_commit``)."""

    def __init__(self, store: PgStore) -> None:
        self.store = store
        self.s = store.s
        self._mutex = threading.RLock()
        self._conn = None

    def close(self) -> None:
        with self._mutex:
            if self._conn is not None:
                _close_quietly(self._conn)
                self._conn = None

    def _run(self, label: str, sql: str, params: Any = (), *, fetch: str = "none", durable: bool = True):
        psycopg = _psycopg()
        with self._mutex:
            for attempt in (1, 2):
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = self.store.connect()
                try:
                    cur = self._conn.execute(sql, params)
                    if durable:
                        crashpoints.durable_write(f"log:{label}")
                    if fetch == "one":
                        return cur.fetchone()
                    if fetch == "all":
                        names = [d.name for d in cur.description]
                        return [dict(zip(names, r)) for r in cur.fetchall()]
                    if fetch == "rows":
                        return cur.fetchall()
                    return None
                except psycopg.OperationalError as exc:
                    _close_quietly(self._conn)
                    self._conn = None
                    if attempt == 2 or not sql.lstrip().upper().startswith("SELECT"):
                        raise _store_error(f"decision log: {label}", exc) from None
                except psycopg.Error as exc:
                    raise StoreError(f"decision log: {label} failed: {exc}") from None

    # batches
    def add_batch(self, txn: str, *, kind: str, queue: str = "default", priority: int = 0, ts: int,
                  state: str = "queued", idempotency_key: Optional[str] = None, request: Any = None) -> None:
        self._run(
            "add",
            f"INSERT INTO {self.s}.batches(txn, state, kind, queue, priority, ts, submitted, idem_key, request) "
            "VALUES(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (txn, state, kind, queue, priority, ts, time.time(), idempotency_key,
             orjson.dumps(request).decode() if request is not None else None),
        )

    def set_state(self, txn: str, state: str, result: Any = None) -> None:
        now = time.time()
        if result is not None:
            self._run("state", f"UPDATE {self.s}.batches SET state=%s, finished=%s, result=%s WHERE txn=%s",
                      (state, now, orjson.dumps(result).decode(), txn))
        elif state == "running":
            self._run("state", f"UPDATE {self.s}.batches SET state=%s, started=%s WHERE txn=%s", (state, now, txn))
        else:
            self._run("state", f"UPDATE {self.s}.batches SET state=%s WHERE txn=%s", (state, txn))

    def batch(self, txn: str) -> Optional[dict[str, Any]]:
        rows = self._run("read", f"SELECT * FROM {self.s}.batches WHERE txn=%s", (txn,), fetch="all", durable=False)
        return _decode(rows[0]) if rows else None

    def batch_by_key(self, idempotency_key: str) -> Optional[dict[str, Any]]:
        rows = self._run("read", f"SELECT * FROM {self.s}.batches WHERE idem_key=%s", (idempotency_key,),
                         fetch="all", durable=False)
        return _decode(rows[0]) if rows else None

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._run("read", f"SELECT * FROM {self.s}.batches ORDER BY submitted DESC LIMIT %s", (limit,),
                         fetch="all", durable=False)
        return [_decode(r) for r in rows]

    def batches_in(self, *states: str) -> list[dict[str, Any]]:
        rows = self._run("read", f"SELECT * FROM {self.s}.batches WHERE state = ANY(%s) ORDER BY submitted",
                         (list(states),), fetch="all", durable=False)
        return [_decode(r) for r in rows]

    # decisions
    def decide(self, txn: str, outcomes: dict[str, str]) -> dict[str, str]:
        """Durably record the outcome per participant; the first decision wins."""
        self._run("decide", f"INSERT INTO {self.s}.decisions(txn, outcomes, at) VALUES(%s, %s, %s) "
                            "ON CONFLICT (txn) DO NOTHING", (txn, orjson.dumps(outcomes).decode(), time.time()))
        return self.decision(txn) or outcomes

    def decision(self, txn: str) -> Optional[dict[str, str]]:
        row = self._run("read", f"SELECT outcomes FROM {self.s}.decisions WHERE txn=%s", (txn,), fetch="one",
                        durable=False)
        return orjson.loads(row[0]) if row else None

    def mark_done(self, txn: str) -> None:
        self._run("done", f"UPDATE {self.s}.decisions SET done=true WHERE txn=%s", (txn,))

    def unfinished(self) -> tuple[list[dict[str, Any]], list[tuple[str, dict[str, str]]]]:
        undecided = self._run(
            "read", f"SELECT * FROM {self.s}.batches b WHERE state='running' AND NOT EXISTS "
                    f"(SELECT 1 FROM {self.s}.decisions d WHERE d.txn = b.txn) ORDER BY submitted",
            fetch="all", durable=False)
        decided = self._run("read", f"SELECT txn, outcomes FROM {self.s}.decisions WHERE NOT done ORDER BY at",
                            fetch="rows", durable=False)
        return [_decode(r) for r in undecided], [(t, orjson.loads(o)) for t, o in decided]

    # sequences
    def next_value(self, name: str, count: int = 1, start: int = 1) -> int:
        """Reserve ``count`` consecutive values of sequence ``name``; return the first."""
        row = self._run(
            "sequence",
            f"INSERT INTO {self.s}.sequences AS q(name, value) VALUES(%s, %s) "
            "ON CONFLICT (name) DO UPDATE SET value = q.value + %s RETURNING value - %s",
            (name, start + count, count, count), fetch="one",
        )
        return row[0]

    # backups
    def save_backup(self, txn: str, participant: str, seq: int, images: bytes) -> None:
        self._run("backup", f"INSERT INTO {self.s}.log_backups VALUES(%s, %s, %s, %s) "
                            "ON CONFLICT (txn, participant, seq) DO UPDATE SET images = EXCLUDED.images",
                  (txn, participant, seq, images))

    def backups(self, txn: str) -> list[tuple[str, bytes]]:
        rows = self._run("read", f"SELECT participant, images FROM {self.s}.log_backups WHERE txn=%s "
                                 "ORDER BY participant, seq", (txn,), fetch="rows", durable=False)
        return [(p, bytes(i)) for p, i in rows]

    def drop_backups(self, txn: str) -> None:
        self._run("backup-drop", f"DELETE FROM {self.s}.log_backups WHERE txn=%s", (txn,))


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("request", "result"):
        if row.get(key):
            row[key] = orjson.loads(row[key])
    return row


class PgLayout(ShardNaming):
    """The fixed settings of a PostgreSQL store, shaped like :class:`~batchray.core.storage.store.StoreLayout`."""

    kind = "postgresql"

    def __init__(self, store: PgStore) -> None:
        self.store = store
        self.shards = store.shards
        self.url = store.url
        self.root = store.identity  # a name for the store (no credentials): actor names, messages


__all__ = [
    "InDoubtError",
    "PgCommitGate",
    "PgDecisionLog",
    "PgItemSource",
    "PgLayout",
    "PgParticipant",
    "PgStore",
    "gid_for",
    "parse_gid",
    "parse_pg_url",
    "redact",
    "store_identity",
]
