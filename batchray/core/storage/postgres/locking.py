"""Locks of a PostgreSQL participant, decided by wait-die.

Items are locked with ``SELECT ... FOR UPDATE SKIP LOCKED``; data contexts and catalog
documents with transaction-level advisory locks (item writers hold their context shared, a
schema rewrite exclusive), all kept by a prepared transaction. On a conflict the holders are
looked up in ``pg_locks`` (the transactions holding the context) and **wait-die** decides: a
younger requester fails at once with :class:`~batchray.errors.LockConflict`, an older one
waits, up to the connection's ``lock_timeout``, in a savepoint (a timeout or a deadlock
reported by PostgreSQL is a LockConflict too, and leaves the transaction as it was).

An *ordered* transaction (its lock set known when planned, :mod:`batchray.core.txn.ordering`)
skips wait-die on items and waits for them until its lock deadline: ordered transactions ask
in one global order, so they form no cycle among themselves, and PostgreSQL's deadlock
detector breaks any other cycle (a retryable LockConflict).

:class:`PgLockView` is the participant's ``locks`` (:class:`~batchray.core.txn.participant.LockView`).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from batchray.core.storage.postgres.connection import psycopg_module
from batchray.core.storage.postgres.reads import where_sql
from batchray.core.storage.postgres.store import PgStore
from batchray.core.storage.postgres.url import advisory_key, parse_gid
from batchray.core.txn.chunks import TxnRef, context_of, context_range
from batchray.errors import LockConflict


class PgLocking:
    """Takes the locks of one participant's transactions on their own connections.

    ``context_class`` is the participant's advisory-lock class: object 0 is its epoch fence
    (see :class:`~batchray.core.storage.postgres.participant.PgParticipant`), object ``c`` the
    lock of data context ``c``; ``doc_class`` holds catalog documents' locks, ``backups_class``
    the locks of committed batches' backups (taken by an undo and a drop of them)."""

    def __init__(self, store: PgStore, name: str, num: int) -> None:
        self.store = store
        self.name = name
        self.num = num
        self.s = store.s
        self.context_class = advisory_key(f"{store.schema}:{name}")
        self.doc_class = advisory_key(f"{store.schema}:{name}:docs")
        self.backups_class = advisory_key(f"{store.schema}:{name}:backups")
        self.waits: dict[str, dict[str, Any]] = {}
        """What each transaction waits for now: ``{"items"}`` or ``{"key", "what"}`` and ``mode``."""

    def holders(self, conn, keys: list[tuple[int, int]]) -> list[tuple[Optional[str], Optional[int]]]:
        """``(txn, ts)`` of each transaction holding any of the advisory ``keys``; ``(None,
        None)`` for a holder that is not a batchray transaction of this store."""
        rows = conn.execute(
            """
            SELECT l.pid,
                   (SELECT t.ts FROM {s}.txns t WHERE t.pid = l.pid AND t.state = 'active' LIMIT 1),
                   (SELECT t.txn FROM {s}.txns t WHERE t.pid = l.pid AND t.state = 'active' LIMIT 1),
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
        found: list[tuple[Optional[str], Optional[int]]] = []
        for pid, ts, txn, gid in rows:
            if pid is not None:
                found.append((txn, ts))
                continue
            found.append(self._prepared(conn, gid))
        return found

    def _prepared(self, conn, gid: Optional[str]) -> tuple[Optional[str], Optional[int]]:
        """``(txn, ts)`` of the prepared transaction ``gid`` when it is one of this store's."""
        parsed = parse_gid(gid) if gid else None
        if parsed is None or parsed[0] != self.store.schema:
            return None, None
        row = conn.execute(f"SELECT ts FROM {self.s}.txns WHERE txn=%s LIMIT 1", (parsed[2],)).fetchone()
        return parsed[2], (row[0] if row else None)

    def item_holders(self, conn, ids: list[int]) -> list[str]:
        """The batchray transactions that may hold the items ``ids`` here: those holding their
        data contexts (every item writer holds its item's context shared; PostgreSQL names a
        row's locker only by a (sub)transaction id that its lock table may not list)."""
        keys = [(self.context_class, c) for c in sorted({context_of(i) for i in ids})]
        return sorted({txn for txn, _ in self.holders(conn, keys)} - {None})

    def wait_die(self, conn, ref: TxnRef, keys: list[tuple[int, int]], what: str,
                 items: Optional[list[int]] = None) -> None:
        """Wait-die on a conflict: die (LockConflict, naming the older holders in ``heldBy``)
        when an older transaction holds ``keys``."""
        older = sorted({txn or "?" for txn, ts in self.holders(conn, keys) if ts is not None and ts < ref.ts})
        if older:
            raise LockConflict(
                f"{what} on participant {self.name} is held by an older transaction ({', '.join(older)}): "
                f"{ref.txn} dies (wait-die)",
                shard=self.name, txn=ref.txn, items=items or [], heldBy=older, holder=older[0],
            )

    def waiting(self, conn, ref: TxnRef, sql: str, params: Any, what: str,
                items: Optional[list[int]] = None, keyed: bool = False) -> list[tuple]:
        """Run a blocking lock statement in a savepoint; a lock timeout or a deadlock is a
        LockConflict naming the holders (``heldBy``: of the items' contexts, or of the advisory
        lock ``params`` when ``keyed``). An ordered transaction (``ref.lock_deadline``) waits
        until its deadline rather than the connection's ``lock_timeout``."""
        psycopg = psycopg_module()
        conn.execute("SAVEPOINT batchray_wait")
        default = None
        if ref.lock_deadline is not None:
            default = conn.execute("SELECT current_setting('lock_timeout')").fetchone()[0]
            wait_ms = max(1, int(ref.lock_wait(0.0) * 1000))
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{wait_ms}ms",))
        self.waits[ref.txn] = ({"items": items, "mode": "X"} if items else
                               {"key": tuple(params) if keyed else None, "what": what,
                                "mode": "S" if "_shared" in sql else "X"})
        try:
            rows = conn.execute(sql, params).fetchall() if "SELECT" in sql.upper() else []
        except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected, psycopg.errors.QueryCanceled) as exc:
            conn.execute("ROLLBACK TO SAVEPOINT batchray_wait")  # also undoes the set_config
            conn.execute("RELEASE SAVEPOINT batchray_wait")
            held = self.item_holders(conn, items) if items else (
                sorted({txn for txn, _ in self.holders(conn, [tuple(params)])} - {None}) if keyed else [])
            raise LockConflict(
                f"{what} on participant {self.name}: gave up waiting ({type(exc).__name__})"
                + (f", held by {', '.join(held)}" if held else ""),
                shard=self.name, txn=ref.txn, items=items or [], heldBy=held, holder=held[0] if held else None,
            ) from None
        finally:
            self.waits.pop(ref.txn, None)
        if default is not None:
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (default,))
        conn.execute("RELEASE SAVEPOINT batchray_wait")
        return rows

    def contexts(self, conn, ref: TxnRef, contexts: list[int], exclusive: bool) -> None:
        mode = "" if exclusive else "_shared"
        for ctx in sorted(set(contexts)):
            key = (self.context_class, int(ctx))
            if conn.execute(f"SELECT pg_try_advisory_xact_lock{mode}(%s, %s)", key).fetchone()[0]:
                continue
            what = f"data context {ctx}"
            self.wait_die(conn, ref, [key], what)
            self.waiting(conn, ref, f"SELECT pg_advisory_xact_lock{mode}(%s, %s)", key, what, keyed=True)

    def docs(self, conn, ref: TxnRef, keys: list[str]) -> None:
        self._exclusive(conn, ref, self.doc_class, keys, "a catalog document")

    def backups(self, conn, ref: TxnRef, source_txn: str) -> None:
        """Hold the backups of committed batch ``source_txn`` until the decision."""
        self._exclusive(conn, ref, self.backups_class, [source_txn], f"the backups of batch {source_txn}")

    def _exclusive(self, conn, ref: TxnRef, lock_class: int, names: list[str], what: str) -> None:
        for objid in sorted({advisory_key(n) for n in names}):
            key = (lock_class, objid)
            if conn.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", key).fetchone()[0]:
                continue
            self.wait_die(conn, ref, [key], what)
            self.waiting(conn, ref, "SELECT pg_advisory_xact_lock(%s, %s)", key, what, keyed=True)

    def items(self, conn, ref: TxnRef, ids: list[int]) -> dict[int, tuple[str, int]]:
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

    def matching(self, conn, ref: TxnRef, context_id: int, where: str) -> dict[int, tuple[str, int]]:
        """Lock the items of a context that match ``where``; ``{id: (vals, ver)}``.

        First all of them in one statement that does not wait (``NOWAIT``, in a savepoint):
        when no other transaction holds any of them, the common case, the predicate is
        evaluated once. When one does, that statement is undone, the free items are locked
        (``SKIP LOCKED``), the others found by a second evaluation and waited for (wait-die,
        their predicate checked again on the version their holder leaves)."""
        psycopg = psycopg_module()
        fragment, params = where_sql(where)
        lo, hi = context_range(context_id)
        base = f"FROM {self.s}.items WHERE id BETWEEN %s AND %s AND part=%s AND ({fragment})"
        args = [lo, hi, self.num, *params]
        conn.execute("SAVEPOINT batchray_match")
        try:
            rows = conn.execute(f"SELECT id, vals, ver {base} ORDER BY id FOR UPDATE NOWAIT", args).fetchall()
        except psycopg.errors.LockNotAvailable:
            conn.execute("ROLLBACK TO SAVEPOINT batchray_match")
            conn.execute("RELEASE SAVEPOINT batchray_match")
        else:
            conn.execute("RELEASE SAVEPOINT batchray_match")
            return {i: (v, ver) for i, v, ver in rows}
        got = {i: (v, ver) for i, v, ver in conn.execute(
            f"SELECT id, vals, ver {base} ORDER BY id FOR UPDATE SKIP LOCKED", args).fetchall()}
        busy = [i for (i,) in conn.execute(f"SELECT id {base}", args).fetchall() if i not in got]
        while busy:
            got.update(self._wait_for_items(conn, ref, busy, (fragment, params)))
            # the batches waited for committed: items they made match are matched now (each
            # statement reads what is committed when it starts), as a run after them would be
            fresh = [i for (i,) in conn.execute(f"SELECT id {base}", args).fetchall() if i not in got]
            if fresh:
                got.update({i: (v, ver) for i, v, ver in conn.execute(
                    f"SELECT id, vals, ver {base} AND id = ANY(%s) ORDER BY id FOR UPDATE SKIP LOCKED",
                    [*args, fresh]).fetchall()})
            busy = [i for i in fresh if i not in got]
        return dict(sorted(got.items()))

    def _wait_for_items(self, conn, ref: TxnRef, ids: list[int], where) -> dict[int, tuple[str, int]]:
        """Items locked by others: wait-die over the transactions that hold their contexts (every
        item writer holds its item's context), then wait for them if all are younger."""
        contexts = sorted({context_of(i) for i in ids})
        if not ref.ordered:  # an ordered transaction waits; the server breaks any cycle itself
            self.wait_die(conn, ref, [(self.context_class, c) for c in contexts], f"{len(ids)} item(s)", sorted(ids))
        sql = f"SELECT id, vals, ver FROM {self.s}.items WHERE id = ANY(%s) AND part=%s"
        params: list[Any] = [sorted(ids), self.num]
        if where is not None:  # checked again on the version the holder leaves behind
            sql += f" AND ({where[0]})"
            params += where[1]
        rows = self.waiting(conn, ref, sql + " ORDER BY id FOR UPDATE", params, f"{len(ids)} item(s)", sorted(ids))
        return {i: (v, ver) for i, v, ver in rows}


class PgLockView:
    """The participant's ``locks``: PostgreSQL holds the locks themselves (row locks are listed
    nowhere), so a transaction's locks are named by one key, ``("txn", txn)``, for as long as it
    is pending here (active or prepared); ``lock_count`` counts those transactions. A lock
    wait is known to the :class:`PgLocking` that runs it (this process), and its holders are
    looked up in ``pg_locks`` on a connection of its own (:meth:`waits_of`)."""

    def __init__(self, pending: Callable[[], list[dict[str, Any]]], locking: Optional[PgLocking] = None) -> None:
        self._pending = pending
        self._locking = locking

    def lock_count(self) -> int:
        return len(self._pending())

    def waits_of(self, txn: str) -> Optional[dict[str, Any]]:
        """What ``txn`` waits for here now: ``{"item", "mode", "heldBy", "queuedBehind"}`` (the
        item: the first of the items it waits for, or the advisory lock's description; the
        holders: the batchray transactions holding the items' data contexts, or the advisory
        lock; PostgreSQL queues its waiters itself, so ``queuedBehind`` is empty), or None."""
        locking = self._locking
        wait = locking.waits.get(txn) if locking is not None else None
        if wait is None:
            return None
        conn = locking.store.connect()
        try:
            if wait.get("items"):
                held = locking.item_holders(conn, wait["items"])
                item: Any = wait["items"][0]
            else:
                held = sorted({t for t, _ in locking.holders(conn, [wait["key"]])} - {None}) if wait["key"] else []
                item = wait["what"]
        finally:
            conn.close()
        return {"item": item, "mode": wait["mode"], "heldBy": [t for t in held if t != txn], "queuedBehind": []}

    def held_by(self, txn: str) -> set[Any]:
        return {("txn", txn)} if any(p["txn"] == txn for p in self._pending()) else set()
