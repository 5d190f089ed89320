"""Reading committed items of a PostgreSQL store: the SQL of a selection, and the store-wide reader.

Reads run in sessions of their own, so MVCC keeps every uncommitted (or prepared) write out of
them. :func:`items_sql` builds the one statement a selection is (a context's id range, a query,
ids, a cursor, a limit), over one participant's rows (``part``) or every participant's.
:class:`PgItemSource` reads all shards in one statement and one snapshot.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional

from batchray.core.storage.postgres.connection import psycopg_module, store_error, transaction
from batchray.core.storage.postgres.store import PgStore
from batchray.core.txn.chunks import context_range


def where_sql(where: str) -> tuple[str, list[Any]]:
    from batchray.core.model.query import parse, postgresql_column, to_sql

    return to_sql(parse(where), postgresql_column, dialect="postgresql")


def items_sql(columns: str, s: str, context_id: int, where: Optional[str], part: Optional[int],
               ids: Optional[list[int]], after: Optional[int], limit: Optional[int], *, order: bool) -> tuple[str, list[Any]]:
    lo, hi = context_range(context_id)
    clauses = ["id BETWEEN %s AND %s"]
    params: list[Any] = [lo, hi]
    if part is not None:
        clauses.append("part = %s")
        params.append(part)
    if where:
        fragment, extra = where_sql(where)
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


class PgItemSource:
    """Committed items of every participant at once (one statement, one snapshot): what
    :class:`~batchray.core.storage.store.ItemReader` reads a PostgreSQL store through."""

    name = "items"

    def __init__(self, store: PgStore) -> None:
        self.store = store

    def read_items(self, context_id: int, where: Optional[str] = None, *, own_txn: Optional[str] = None,
                   ids: Optional[list[int]] = None, limit: Optional[int] = None,
                   after: Optional[int] = None) -> Iterator[tuple[int, str]]:
        sql, params = items_sql("id, vals", self.store.s, context_id, where, None, ids, after, limit, order=True)
        return iter(self._read(sql, params))

    def count_items(self, context_id: int, where: Optional[str] = None) -> int:
        sql, params = items_sql("count(*)", self.store.s, context_id, where, None, None, None, None, order=False)
        return self._read(sql, params)[0][0]

    def read_page(self, context_id: int, where: Optional[str] = None, *, limit: Optional[int] = None,
                  after: Optional[int] = None) -> tuple[list[tuple[int, str]], int]:
        return read_page(self.store, context_id, where, None, limit=limit, after=after)

    def _read(self, sql: str, params: list[Any]) -> list[tuple]:
        psycopg = psycopg_module()
        try:
            with self.store.pool.connection() as conn:
                return conn.execute(sql, params).fetchall()
        except psycopg.Error as exc:
            raise store_error("read", exc) from None


def read_page(store: PgStore, context_id: int, where: Optional[str], part: Optional[int], *,
              limit: Optional[int] = None, after: Optional[int] = None) -> tuple[list[tuple[int, str]], int]:
    """The items of ``where`` (``limit``, ``after``) and the count of all of them, of participant
    number ``part`` (None: every one), read in one ``REPEATABLE READ`` transaction: one snapshot
    for both, so no commit lands between them."""
    page_sql, page_params = items_sql("id, vals", store.s, context_id, where, part, None, after, limit, order=True)
    count_sql, count_params = items_sql("count(*)", store.s, context_id, where, part, None, None, None, order=False)
    psycopg = psycopg_module()
    try:
        with store.pool.connection() as conn:
            with transaction(conn):
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                rows = conn.execute(page_sql, page_params).fetchall()
                total = conn.execute(count_sql, count_params).fetchone()[0]
    except psycopg.Error as exc:
        raise store_error("read", exc) from None
    return rows, total

    def close(self) -> None:
        pass

