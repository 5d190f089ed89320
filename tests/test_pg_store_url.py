"""Opening a PostgreSQL store: what its URL says, and the errors of a server that refuses.

* Every query parameter but ``schema`` is libpq's and reaches it as written (``%20`` a space,
  ``+`` a plus sign); the URL's ``connect_timeout`` and ``application_name`` win over
  batchray's defaults; a parameter libpq does not know is a VALIDATION error before any
  connection is tried.
* A role that may not create the store's schema, or not read an existing store, gets a STORE
  error saying so, not a driver exception.

The tests that talk to a server skip without ``BATCHRAY_TEST_PG_DSN`` (the privilege test also
needs ``BATCHRAY_TEST_PG_ADMIN_DSN``, which ``.ci/postgres.sh start`` prints).
"""
from __future__ import annotations

import os
import uuid

import pytest
from pg_schema import own_schema

from batchray.core.storage.postgres.url import parse_pg_url
from batchray.errors import StoreError, ValidationError


def test_query_parameters_other_than_schema_reach_libpq_as_written():
    dsn, schema = parse_pg_url("postgresql://u@h/db?options=-c%20statement_timeout%3D5&schema=s1&password=a+b")
    assert schema == "s1"
    assert dsn == "postgresql://u@h/db?options=-c%20statement_timeout%3D5&password=a+b"


def test_an_encoded_schema_parameter_is_decoded():
    assert parse_pg_url("postgresql://u@h/db?%73chema=my%5Fstore")[1] == "my_store"


def test_a_parameter_libpq_does_not_know_is_a_validation_error():
    pytest.importorskip("psycopg")
    from batchray.core.storage.postgres.store import PgStore

    # no server is needed: the URL is refused before any connection is tried
    with pytest.raises(ValidationError) as caught:
        PgStore("postgresql://u:secret@127.0.0.1:1/db?schema=s&shards=4")
    assert "shards" in str(caught.value) and "secret" not in str(caught.value)
    assert caught.value.to_dict()["code"] == "VALIDATION"


def test_a_url_of_several_hosts_names_each_with_its_port():
    """libpq takes a list of hosts (``h1:5432,h2``); its ports are no URL port that Python's
    ``urlsplit`` can read, and opening such a store failed with an INTERNAL ValueError."""
    from batchray.core.storage.postgres.url import store_identity

    assert store_identity("postgresql://u:pw@db1:5433,DB2/app?schema=s") == "postgresql://db1:5433,db2:5432/app?schema=s"
    assert store_identity("postgresql://u@h/app") == "postgresql://h:5432/app?schema=batchray"
    assert store_identity("postgresql://[::1]:6000/app") == "postgresql://::1:6000/app?schema=batchray"


@pytest.mark.parametrize("url", ["postgresql://u:secret@h:notaport/db", "postgresql://u:secret@h:99999/db",
                                 "postgresql://u:secret@h1,h2:x/db", "postgresql://u:secret@[::1/db"])
def test_a_url_with_a_bad_host_or_port_is_a_validation_error(url):
    pytest.importorskip("psycopg")
    from batchray.core.storage.backends import open_backend

    with pytest.raises(ValidationError) as caught:
        open_backend(url)
    assert caught.value.details["field"] == "store" and "secret" not in str(caught.value.to_dict())


@pytest.mark.parametrize("option", ["sslmode=bogus", "gssencmode=bogus", "target_session_attrs=nope",
                                    "keepalives=x"])
def test_a_connection_option_libpq_refuses_is_a_validation_error_not_a_server_to_wait_for(option):
    """libpq checks option values before it connects: such a URL was refused as UNAVAILABLE,
    retryable, so a caller waiting for the store (``wait=``) retried a URL that cannot work.
    A server out of reach stays UNAVAILABLE."""
    from batchray.core.storage.backends import open_backend
    from batchray.errors import ParticipantUnavailable

    with pytest.raises(ValidationError) as caught:
        open_backend(f"postgresql://u:secret@127.0.0.1:1/db?{option}")
    assert caught.value.details["field"] == "store" and "secret" not in str(caught.value.to_dict())
    with pytest.raises(ParticipantUnavailable):
        open_backend("postgresql://u:secret@127.0.0.1:1/db?sslmode=disable&connect_timeout=2")


def test_connection_settings_of_the_url_are_used():
    from batchray.core.storage.postgres.store import PgStore

    with own_schema("pgurl") as schema:
        url = (f"{schema.url}&options=-c%20statement_timeout%3D4321"
               "&application_name=my_loader&connect_timeout=7")
        store = PgStore(url)
        try:
            conn = store.connect()
            try:
                assert conn.execute("SHOW statement_timeout").fetchone()[0] == "4321ms"
                assert conn.execute("SHOW application_name").fetchone()[0] == "my_loader"
                assert conn.info.get_parameters().get("application_name") == "my_loader"
                assert "connect_timeout=7" in conn.info.dsn
            finally:
                conn.close()
            assert store.connect_timeout == 7
        finally:
            store.close()
        plain = PgStore(schema.url)
        try:
            conn = plain.connect()
            try:
                assert conn.execute("SHOW application_name").fetchone()[0] == "batchray"
            finally:
                conn.close()
        finally:
            plain.close()


@pytest.fixture
def low_role():
    """A login role with no privilege beyond CONNECT: ``(store URL of schema NAME, NAME)``."""
    admin = os.environ.get("BATCHRAY_TEST_PG_ADMIN_DSN")
    dsn = os.environ.get("BATCHRAY_TEST_PG_DSN")
    if not admin or not dsn:
        pytest.skip("needs BATCHRAY_TEST_PG_DSN and BATCHRAY_TEST_PG_ADMIN_DSN (.ci/postgres.sh start)")
    psycopg = pytest.importorskip("psycopg")
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    given = conninfo_to_dict(dsn)
    admin_db = make_conninfo(admin, dbname=given["dbname"])
    role = f"pglow_{uuid.uuid4().hex[:10]}"
    password = uuid.uuid4().hex
    with psycopg.connect(admin_db, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))

    def url(schema: str) -> str:
        return (f"postgresql://{role}:{password}@{given.get('host', '127.0.0.1')}:{given.get('port', 5432)}"
                f"/{given['dbname']}?schema={schema}")

    try:
        yield url, admin_db, role
    finally:
        with psycopg.connect(admin_db, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_role_that_may_not_create_the_schema_gets_a_store_error(low_role):
    from batchray.core.storage.postgres.store import PgStore

    url, _, _ = low_role
    with pytest.raises(StoreError) as caught:
        PgStore(url(f"pglow_{uuid.uuid4().hex[:8]}"))
    assert "CREATE on the database" in str(caught.value)
    assert caught.value.to_dict()["code"] == "STORE"


def test_a_role_that_may_not_read_an_existing_store_gets_a_store_error(low_role):
    import psycopg
    from psycopg import sql

    from batchray.core.storage.postgres.store import PgStore

    url, admin_db, role = low_role
    with own_schema("pglow") as schema:
        PgStore(schema.url).close()
        with psycopg.connect(admin_db, autocommit=True) as conn:
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema.name),
                                                                          sql.Identifier(role)))
        with pytest.raises(StoreError) as caught:
            PgStore(url(schema.name))
        assert "permission denied" in str(caught.value)
