"""A schema of a test's own on the shared PostgreSQL test server (``$BATCHRAY_TEST_PG_DSN``).

* :data:`DSN` and :data:`SKIP_REASON`: the server, and why a test is skipped without it;
  :func:`dsn_or_skip` returns the server or skips the calling test.
* :func:`schema_url`: the store URL of a named schema on that server.
* :func:`own_schema`: a fresh schema's store URL for the ``with`` block; afterwards the
  prepared transactions batchray left for that schema are rolled back and the schema dropped,
  and the ids of those transactions are in the yielded :class:`OwnSchema`'s ``left`` (a test
  that must leave none asserts on it).

Tests that crash or reconfigure the server use a server of their own instead
(``tests/pg_server.py``).
"""
from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass, field
from typing import Iterator, Optional

import pytest

DSN: Optional[str] = os.environ.get("BATCHRAY_TEST_PG_DSN")
SKIP_REASON = 'needs a PostgreSQL server: set BATCHRAY_TEST_PG_DSN (eval "$(bash .ci/postgres.sh start)")'


def dsn_or_skip() -> str:
    """The shared server's DSN; the calling test is skipped without one (or without psycopg)."""
    if not DSN:
        pytest.skip(SKIP_REASON)
    pytest.importorskip("psycopg")
    return DSN


def schema_url(schema: str, dsn: Optional[str] = None) -> str:
    """The store URL of ``schema`` on ``dsn`` (default: the shared server)."""
    dsn = dsn or dsn_or_skip()
    return f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"


@dataclass
class OwnSchema:
    """A schema of the test's own: its ``name``, its store ``url``, and after the ``with``
    block the prepared transactions it ``left`` (rolled back since)."""

    name: str
    url: str
    left: list[str] = field(default_factory=list)


@contextlib.contextmanager
def own_schema(prefix: str) -> Iterator[OwnSchema]:
    """A fresh schema named ``<prefix>_<random>`` for the block, cleaned up after it (see the
    module docstring)."""
    import psycopg
    from psycopg import sql

    dsn = dsn_or_skip()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    schema = OwnSchema(name, schema_url(name, dsn))
    try:
        yield schema
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            schema.left = [gid for (gid,) in conn.execute(
                "SELECT gid FROM pg_prepared_xacts WHERE starts_with(gid, %s)", (f"batchray:{name}:",))]
            for gid in schema.left:
                conn.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)))
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
