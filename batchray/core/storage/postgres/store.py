"""A PostgreSQL store: one schema of one database, its tables, and its fixed settings.

A store is one schema of one database (``postgresql://user@host/db?schema=NAME``; the
``schema`` parameter is batchray's and is taken off the URL before connecting, default
``batchray``). Its tables::

    items(id bigint, part int, vals text, ver bigint)      every item of every shard; ``part``
                                                           names the participant that owns it
      items_p<num>                                         its partition of participant ``num``
    docs(part, key, doc)                                   catalog documents
    participants(name PK, num, epoch)                      each participant's number and epoch
    txns(part, txn, state, ts, epoch, backup, pid, ...)    transactions started and not finished
    finished(part, txn, outcome, at)                       outcomes (a decision never seen is kept)
    applied(part, txn, chunk, images)                      applied chunks of open transactions
    backups, backup_ranges                                 before-images kept after commit (undo)
    batches, decisions, sequences, log_backups             the coordinator's log
    store_meta                                             format, shard count, the owner record

:class:`PgStore` connects (checking that the server can prepare transactions:
``max_prepared_transactions`` must be above 0, and it is 0 by default), creates the tables on
first use, fixes the shard count, and numbers the participants. The participant itself is
:class:`~batchray.core.storage.postgres.participant.PgParticipant`.

``items`` is partitioned by ``part`` (formats 2 and 3): each participant's items are a table of their
own (``items_p<num>``, attached when the participant is numbered), so the shards' bulk creates,
each a ``COPY`` straight into its partition, never extend one heap together (with two writers
PostgreSQL spent about 10 % more CPU, and four took 15 % longer, on one table: ``python -m
bench.pg_create``, ``docs/performance.md``). Every other statement names ``items`` (the
parent) and so reads and writes any participant's rows the same way; those that read or change
a participant's own rows also name its ``part``, so that PostgreSQL opens that partition only
(an update joined with ``items`` without it probed every partition, and was slower than on one
table). Each partition's primary key is ``id`` (format 3): ids are unique by allocation, and an
item lives in its owner's partition only. ``items`` itself has no key (a partitioned table's
unique keys must hold its partition key): a key ``(id, part)`` on it, as stores of format 2
have, costs every row of a bulk create 8 bytes more in its index entry and in the write-ahead
log (5 % more log per million rows; ``python -m bench.pg_create``, ``docs/performance.md``,
round 17). The one statement that names a key, the undo's
upsert, writes into the participant's own table by its key (:attr:`PgStore.items_key`).
Stores made before are served as they are: format 2 with its key ``(id, part)``, and format 1
(``items`` one table, primary key ``id``, its creates copied into ``items``).
"""
from __future__ import annotations

import re
from typing import Any, Optional

from batchray.core.storage.postgres.connection import ConnectionPool, psycopg_module, store_error, transaction
from batchray.core.storage.postgres.url import (
    GID_PREFIX,
    PARTICIPANT_NAME,
    advisory_key,
    parse_pg_url,
    redact,
    store_identity,
)
from batchray.core.storage.store import DEFAULT_SHARDS, ShardNaming, check_shards
from batchray.errors import NotFoundError, ParticipantUnavailable, StoreError, ValidationError

_OPTION_REFUSED = re.compile(r"\binvalid (?:[a-z_]+ value|integer value|port number)")
"""How libpq refuses a connection option's value, checked before any connection is tried
(``fe-connect.c``: ``invalid %s value``, ``invalid integer value ... for connection option``,
``invalid port number``): a URL to fix, not a server to wait for."""

FORMAT_VERSION = 3
"""The format of the stores this version creates: 3, ``items`` partitioned by participant, each
partition keyed by ``id``."""
FORMATS_SERVED = (1, 2, 3)
"""The formats this version opens: 1, ``items`` one table (its layout before partitioning); 2,
partitioned, keyed by ``(id, part)``; and 3."""


class PgStore:
    """One store (a schema of one database): connections, schema, shard count, participant numbers."""

    def __init__(self, url: str, shards: Optional[int] = None, *, connect_timeout: int = 10,
                 create: bool = True) -> None:
        """Open the store of ``url``, creating its schema and tables on first use (``create``
        False: a schema that holds no store is a :class:`NotFoundError`, and nothing is created).

        Every connection parameter of the URL's query is libpq's and is used as written: a
        parameter libpq does not know (``?shards=4``) is a :class:`ValidationError`; the URL's
        ``connect_timeout`` and ``application_name`` win over the defaults (``connect_timeout``,
        ``"batchray"``). A refusal of the server's while the store is opened (a role that may
        not create the schema, or not read an existing store's tables) is a :class:`StoreError`
        naming what is missing; a server out of reach is :class:`ParticipantUnavailable`."""
        check_shards(shards)
        self.url = url
        self.dsn, self.schema = parse_pg_url(url)
        self.s = f'"{self.schema}"'  # validated identifier
        self.identity = store_identity(url)
        self._defaults = self._connection_defaults(connect_timeout)
        self.pool = ConnectionPool(self.connect)
        self._nums: dict[str, int] = {}
        psycopg = psycopg_module()
        try:
            with self.pool.connection() as conn:
                self._check_server(conn)
                self.format = self._ensure_schema(conn, create)
                self.shards = self._shard_count(conn, shards)
                self.partitioned = self._items_partitioned(conn)
        except psycopg.Error as exc:
            self.pool.close()
            raise self._open_error(exc) from None
        except BaseException:
            self.pool.close()
            raise

    def _connection_defaults(self, connect_timeout: int) -> dict[str, Any]:
        """The settings batchray gives a connection that the URL leaves unset; a URL that
        libpq cannot read is refused here, before any connection is tried."""
        from psycopg.conninfo import conninfo_to_dict

        psycopg = psycopg_module()
        try:
            given = conninfo_to_dict(self.dsn)
        except psycopg.Error as exc:
            raise ValidationError(f"invalid PostgreSQL store URL {redact(self.url)!r}: {redact(str(exc))}",
                                  field="store") from None
        defaults: dict[str, Any] = {"connect_timeout": connect_timeout, "application_name": "batchray"}
        try:
            self.connect_timeout = int(given.get("connect_timeout", connect_timeout))
        except ValueError:
            raise ValidationError(f"invalid connect_timeout in store URL {redact(self.url)!r}", field="store") from None
        return {key: value for key, value in defaults.items() if key not in given}

    def _open_error(self, exc: Exception) -> Exception:
        """A driver error raised while the store was opened, as batchray's error."""
        psycopg = psycopg_module()
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            return StoreError(
                f"store {self.identity}: the PostgreSQL role may not create or write the store's tables in "
                f"schema {self.schema!r} ({exc}); it needs CREATE on the database to create the store, or to "
                "own the schema and its tables",
                sqlstate=exc.sqlstate)
        return store_error(f"store {self.identity}: open", exc)

    # connections
    def connect(self, *, lock_timeout: Optional[float] = None):
        """A new autocommit connection; ``lock_timeout`` in seconds (None: the server's)."""
        psycopg = psycopg_module()
        try:
            conn = psycopg.connect(self.dsn, autocommit=True, **self._defaults)
        except psycopg.Error as exc:
            if _OPTION_REFUSED.search(str(exc)):  # libpq checks option values before it connects: permanent
                raise ValidationError(f"invalid PostgreSQL store URL {redact(self.url)!r}: {redact(str(exc))}",
                                      field="store") from None
            raise ParticipantUnavailable(f"cannot connect to {redact(self.dsn)}: {redact(str(exc))}") from None
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

    def _ensure_schema(self, conn, create: bool = True) -> int:
        """Create the store's tables unless they exist (unless ``create`` is false); its format."""
        s = self.s
        exists = conn.execute("SELECT to_regclass(%s)", (f"{s}.store_meta",)).fetchone()[0]
        if exists is None and not create:
            raise NotFoundError(f"no batchray store at {self.identity}", field="store")
        if exists is not None:
            row = conn.execute(f"SELECT value FROM {s}.store_meta WHERE key='format'").fetchone()
            if row is not None:
                if int(row[0]) not in FORMATS_SERVED:
                    raise StoreError(f"store {self.identity} has format {row[0]}; this version of batchray "
                                     f"serves formats {', '.join(map(str, FORMATS_SERVED))}", format=int(row[0]))
                self._add_tables_since(conn)
                return int(row[0])
        with transaction(conn):
            conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (advisory_key(f"{self.schema}:ddl"),))
            conn.execute(_DDL.replace("{s}", s))
            conn.execute(f"INSERT INTO {s}.store_meta VALUES('format', %s) ON CONFLICT DO NOTHING", (str(FORMAT_VERSION),))
            return int(conn.execute(f"SELECT value FROM {s}.store_meta WHERE key='format'").fetchone()[0])

    def _add_tables_since(self, conn) -> None:
        """Create in an existing store the tables that later versions of its format added:
        ``one_phase`` (stores of format 1 made before one-phase commits were recorded have
        none). Only what is missing is created, so a role that may not create tables still
        opens a store that has them all."""
        s = self.s
        if conn.execute("SELECT to_regclass(%s)", (f"{s}.one_phase",)).fetchone()[0] is not None:
            return
        with transaction(conn):
            conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (advisory_key(f"{self.schema}:ddl"),))
            conn.execute(_ONE_PHASE_DDL.replace("{s}", s))

    def _shard_count(self, conn, shards: Optional[int]) -> int:
        s = self.s
        row = conn.execute(f"SELECT value FROM {s}.store_meta WHERE key='shards'").fetchone()
        if row is not None:
            if shards is not None and shards != int(row[0]):
                raise ValidationError(f"store {self.identity} was created with {row[0]} shards, not {shards}",
                                      field="shards")
            return int(row[0])
        count = shards or DEFAULT_SHARDS
        conn.execute(f"INSERT INTO {s}.store_meta VALUES('shards', %s) ON CONFLICT DO NOTHING", (str(count),))
        return int(conn.execute(f"SELECT value FROM {s}.store_meta WHERE key='shards'").fetchone()[0])

    def participant_num(self, name: str) -> int:
        """The number that tags a participant's rows (assigned once, kept forever); a driver
        error is batchray's (see :meth:`__init__`)."""
        if not PARTICIPANT_NAME.match(name):
            raise ValidationError(f"invalid participant name {name!r}", field="participant")
        if name in self._nums:
            return self._nums[name]
        psycopg = psycopg_module()
        try:
            s = self.s
            with self.pool.connection() as conn:
                row = conn.execute(f"SELECT num FROM {s}.participants WHERE name=%s", (name,)).fetchone()
                if row is None:
                    with transaction(conn):
                        conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (advisory_key(f"{self.schema}:ddl"),))
                        added = conn.execute(
                            f"INSERT INTO {s}.participants(name, num) "
                            f"SELECT %s, coalesce(max(num), 0) + 1 FROM {s}.participants ON CONFLICT (name) DO NOTHING "
                            "RETURNING num",
                            (name,),
                        ).fetchone()
                        if added is not None and self.partitioned:
                            self._attach_partition(conn, added[0])
                    row = conn.execute(f"SELECT num FROM {s}.participants WHERE name=%s", (name,)).fetchone()
        except psycopg.Error as exc:
            raise self._open_error(exc) from None
        self._nums[name] = row[0]
        return row[0]

    def items_table(self, num: int) -> str:
        """The table that participant ``num``'s new items are written into: its partition
        (format 2), or ``items`` itself (format 1)."""
        return f"{self.s}.items_p{int(num)}" if self.partitioned else f"{self.s}.items"

    @property
    def items_key(self) -> str:
        """The key columns of :meth:`items_table`'s table, as an ``ON CONFLICT`` target."""
        return "(id, part)" if self.format == 2 else "(id)"

    def _items_partitioned(self, conn) -> bool:
        return conn.execute("SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass(%s)",
                            (f"{self.s}.items",)).fetchone()[0]

    def _attach_partition(self, conn, num: int) -> None:
        """Give participant ``num`` its partition of ``items`` (in the transaction that numbers
        it, before it writes anything). Made apart and attached: ``ATTACH PARTITION`` takes
        ``items`` in SHARE UPDATE EXCLUSIVE mode, which no reader or writer conflicts with, not
        even a prepared transaction holding its locks (``CREATE TABLE ... PARTITION OF`` would
        wait for them all); with no default partition nothing is scanned."""
        table = self.items_table(num)
        key = ", PRIMARY KEY (id)" if self.format >= 3 else ""  # format 2: the key ATTACH gives it, (id, part)
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (LIKE {self.s}.items INCLUDING DEFAULTS{key})")
        conn.execute(f"ALTER TABLE {self.s}.items ATTACH PARTITION {table} FOR VALUES IN ({int(num)})")

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



_DDL = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.store_meta(key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.participants(
    name text PRIMARY KEY, num integer NOT NULL UNIQUE, epoch bigint NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS {s}.items(
    id bigint NOT NULL, part integer NOT NULL, vals text NOT NULL, ver bigint NOT NULL DEFAULT 0)
    PARTITION BY LIST (part);
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
{one_phase}
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
_ONE_PHASE_DDL = """CREATE TABLE IF NOT EXISTS {s}.one_phase(
    part integer NOT NULL, txn text NOT NULL, chunk bigint NOT NULL, affected bigint NOT NULL,
    PRIMARY KEY(part, txn));"""
_DDL = _DDL.replace("{one_phase}", _ONE_PHASE_DDL)



class PgLayout(ShardNaming):
    """The fixed settings of a PostgreSQL store, shaped like :class:`~batchray.core.storage.store.StoreLayout`."""

    kind = "postgresql"

    def __init__(self, store: PgStore) -> None:
        self.store = store
        self.shards = store.shards
        self.url = store.url
        self.root = store.identity  # a name for the store (no credentials): actor names, messages

