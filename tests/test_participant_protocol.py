"""The participant protocol contract (batchray/core/txn/participant.py), checked on both stores.

The cases are :mod:`batchray.testing.conformance`'s (any participant can run them); here they
run on the SQLite shard files always, and on PostgreSQL when ``BATCHRAY_TEST_PG_DSN`` names a
server (else those runs are skipped and say why). Each PostgreSQL run has a schema of its own,
dropped at the end, and must leave no prepared transaction behind.
"""
from __future__ import annotations

import pytest

from batchray.testing.conformance import *  # noqa: F401,F403 - the suite's test functions
from batchray.testing.conformance import run_conformance
from batchray.testing.conformance_stores import STORE_KINDS, SqliteConformanceStore, store_for


@pytest.fixture(params=STORE_KINDS)
def conformance_store(request, tmp_path):
    store = store_for(request.param, tmp_path)
    yield store
    store.close()


def test_the_suite_runs_without_pytest(tmp_path):
    """``run_conformance`` runs every case and parameter on a fresh store each."""
    fresh = iter(range(1000))
    runs = run_conformance(lambda: SqliteConformanceStore(tmp_path / f"store-{next(fresh)}"))
    assert runs >= 20
