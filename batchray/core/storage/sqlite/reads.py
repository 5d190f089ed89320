"""Reading a SQLite shard: committed items with other transactions' uncommitted writes masked.

Writes go in place (see :mod:`batchray.core.storage.sqlite.shard`), so a read masks what other
transactions have not committed: rows in a pending ``created`` range are skipped, and rows with
an ``undo`` entry are read from ``undo.before`` instead. The mask is used only when some other
transaction has uncommitted writes in the shard; with nothing pending, a plain range scan is as
fast as reading the table itself. Every function takes the shard's connection; the caller holds
the shard's mutex.
"""
from __future__ import annotations

import contextlib
import re
import sqlite3
from typing import Any, Iterator, Optional

import orjson

from batchray.core.txn.chunks import context_range

_MASKED_ITEMS = """
SELECT id, vals FROM items
 WHERE id BETWEEN :lo AND :hi
   AND NOT EXISTS (SELECT 1 FROM created p WHERE p.txn != :own AND items.id BETWEEN p.lo AND p.hi)
   AND NOT EXISTS (SELECT 1 FROM undo u WHERE u.tbl = 'items' AND u.key = items.id AND u.txn != :own)
UNION ALL
SELECT key, before FROM undo
 WHERE tbl = 'items' AND txn != :own AND before IS NOT NULL AND key BETWEEN :lo AND :hi
   AND NOT EXISTS (SELECT 1 FROM created p WHERE p.txn != :own AND undo.key BETWEEN p.lo AND p.hi)
"""
"""Committed rows of one context, plus the caller's own uncommitted writes (``:own``). A
before-image of an item in a pending created range is no committed row: it is what its
transaction created and then changed or deleted."""

_PLAIN_ITEMS = "SELECT id, vals FROM items WHERE id BETWEEN :lo AND :hi AND :own = :own"
"""The same rows when no other transaction has uncommitted writes in the shard."""

_PENDING_ITEMS = (
    "SELECT EXISTS(SELECT 1 FROM created WHERE txn != :own) "
    "OR EXISTS(SELECT 1 FROM undo WHERE tbl = 'items' AND txn != :own)"
)

_INT64_MAX = 2**63 - 1


def ids_param(ids: list[int]) -> str:
    """A list of ids as the JSON text ``json_each`` splits."""
    return orjson.dumps(ids).decode()


def _visible(
    context_id: int, where: Optional[str], *, own_txn: Optional[str] = None, ids: Optional[list[int]] = None,
    after: Optional[int] = None,
) -> tuple[str, dict[str, Any], list[Any]]:
    """The filter of a read of visible items: ``(tail, named, positional)``, ``tail`` the
    ``WHERE ...`` (or nothing) that follows ``FROM (visible rows) AS visible``."""
    from batchray.core.model.query import parse, sqlite_column, to_sql  # the query module is optional for writes

    lo, hi = context_range(context_id)
    params: dict[str, Any] = {"lo": lo, "hi": hi, "own": own_txn or ""}
    clauses = []
    positional: list[Any] = []
    if where:
        fragment, positional = to_sql(parse(where), sqlite_column)
        clauses.append(fragment)
    if ids is not None:
        clauses.append("id IN (SELECT value FROM json_each(?))")
        positional.append(ids_param(ids))
    if after is not None:  # a cursor: the range starts after it, so a page costs its size
        if int(after) >= hi:  # nothing of the context past it (and hi + 1 may not fit 64 bits)
            params["lo"], params["hi"] = hi, hi - 1
        else:
            params["lo"] = max(lo, int(after) + 1)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params, positional


def _in_order(tail: str, positional: list[Any], limit: Optional[int]) -> tuple[str, list[Any]]:
    """``tail`` and its parameters with the rows in id order, at most ``limit`` of them."""
    if limit is None:
        return tail + " ORDER BY id", positional
    # offset + limit of a reader may pass 64 bits
    return tail + " ORDER BY id LIMIT ?", [*positional, min(int(limit), _INT64_MAX)]


def select_items(
    conn: sqlite3.Connection,
    context_id: int,
    where: Optional[str],
    *,
    own_txn: Optional[str] = None,
    ids: Optional[list[int]] = None,
    limit: Optional[int] = None,
    after: Optional[int] = None,
    in_write: bool = False,
) -> list[tuple[int, str]]:
    """The visible items of a context in id order, as ``(id, values JSON)``: committed ones and
    ``own_txn``'s own writes. ``in_write``: ``conn`` is inside a write transaction (which then
    reads through the mask); otherwise the read is one snapshot of its own."""
    tail, params, positional = _visible(context_id, where, own_txn=own_txn, ids=ids, after=after)
    tail, positional = _in_order(tail, positional, limit)
    if in_write:
        return _run_select(conn, True, "id, vals", tail, params, positional)
    with _snapshot(conn):  # one snapshot for the check and the read
        return _run_select(conn, _pending(conn, params), "id, vals", tail, params, positional)


def pending_matches(conn: sqlite3.Connection, context_id: int, where: Optional[str], *, own_txn: str) -> list[int]:
    """Ids of the items of a context that match ``where`` as written, other transactions'
    uncommitted writes included (empty when there are none): a selection by query locks these
    as well as its committed matches, so that it waits for the transactions whose commit may
    make an item match (an update decided, whose commit is still on its way to this shard)."""
    tail, params, positional = _visible(context_id, where, own_txn=own_txn)
    with _snapshot(conn):
        if not _pending(conn, params):
            return []
        return [item_id for (item_id,) in _run_select(conn, False, "id", tail, params, positional)]


def count_all_items(conn: sqlite3.Connection, context_id: int, where: Optional[str] = None) -> int:
    """How many items of a context (matching ``where``) are visible (committed), in one snapshot."""
    tail, params, positional = _visible(context_id, where)
    with _snapshot(conn):
        return _run_select(conn, _pending(conn, params), "count(*)", tail, params, positional)[0][0]


def read_page(conn: sqlite3.Connection, context_id: int, where: Optional[str], *, limit: Optional[int] = None,
              after: Optional[int] = None) -> tuple[list[tuple[int, str]], int]:
    """:func:`select_items` (``limit``, ``after``) and :func:`count_all_items` of ``where`` in
    one snapshot: no commit lands between them."""
    tail, params, positional = _visible(context_id, where, after=after)
    page_tail, page_positional = _in_order(tail, positional, limit)
    count_tail, count_params, count_positional = _visible(context_id, where)
    with _snapshot(conn):
        masked = _pending(conn, params)
        rows = _run_select(conn, masked, "id, vals", page_tail, params, page_positional)
        total = _run_select(conn, masked, "count(*)", count_tail, count_params, count_positional)[0][0]
    return rows, total


@contextlib.contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """A read transaction: every statement inside sees the shard as of its first read."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def _pending(conn: sqlite3.Connection, params: dict[str, Any]) -> bool:
    """Whether another transaction has uncommitted writes in the shard (reads must mask them)."""
    return bool(conn.execute(_PENDING_ITEMS, params).fetchone()[0])


def _run_select(conn: sqlite3.Connection, masked: bool, columns: str, tail: str, params: dict,
                positional: list) -> list[tuple]:
    source = _MASKED_ITEMS if masked else _PLAIN_ITEMS
    sql, all_params = _to_positional(f"SELECT {columns} FROM ({source}) AS visible{tail}", params, positional)
    return conn.execute(sql, all_params).fetchall()


def read_docs(conn: sqlite3.Connection, prefix: str) -> dict[str, str]:
    """Committed catalog documents whose key starts with ``prefix``."""
    sql = (
        "SELECT key, doc FROM docs WHERE substr(key, 1, length(:p)) = :p "
        "AND NOT EXISTS (SELECT 1 FROM undo u WHERE u.tbl='docs' AND u.key = docs.key) "
        "UNION ALL SELECT key, before FROM undo WHERE tbl='docs' AND before IS NOT NULL "
        "AND substr(key, 1, length(:p)) = :p"
    )
    return dict(conn.execute(sql, {"p": prefix}).fetchall())


def _to_positional(sql: str, named: dict[str, Any], positional: list[Any]) -> tuple[str, list[Any]]:
    """Rewrite ``:name`` parameters to ``?`` in order so named and positional can mix."""
    out: list[Any] = []
    pos_iter = iter(positional)

    def repl(match: re.Match) -> str:
        token = match.group(0)
        if token == "?":
            out.append(next(pos_iter))
        else:
            out.append(named[token[1:]])
        return "?"

    return re.sub(r"\?|:[a-z]+", repl, sql), out
