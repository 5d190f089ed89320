"""Opening a participant (batchray/core/storage/sqlite/shard.py, postgres/participant.py): one
whose opening fails leaves nothing open.

A restart aborts the transactions a crash left unvoted; when that recovery fails (the files
made read-only, a full disk, a server that refuses), the open is refused with a STORE error and
the connection it made is closed: a SQLite shard kept its file's descriptors open, a
PostgreSQL participant its control session, for as long as the error was held (a caller that
tries again while the store does not answer opened one more each time).

A closed SQLite shard, and a closed decision log, refuse every further use with a STORE error
naming them (a read of a client closed meanwhile got INTERNAL "unexpected ProgrammingError").
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pg_schema import own_schema

from batchray.core.storage.decision_log import DecisionLog
from batchray.core.storage.sqlite.shard import SqliteShard
from batchray.core.txn.chunks import CreateItems, TxnRef, context_range
from batchray.errors import StoreError

LO, _ = context_range(1)


def _open_files(under: Path) -> list[str]:
    """The files under ``under`` this process has descriptors of."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own descriptor)
            continue
        if target.startswith(str(under)):
            found.append(target)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to list the open descriptors")
def test_a_shard_whose_recovery_cannot_write_is_refused_and_leaves_its_file_closed(tmp_path, monkeypatch):
    path = tmp_path / "s.sqlite"
    shard = SqliteShard(path, name="s")
    shard.apply(TxnRef("unvoted", 5), CreateItems(1, [LO + 1], ['{"n":1}']))  # a restart aborts it
    shard.close()
    assert _open_files(tmp_path) == []

    def read_only(self, ref):
        raise StoreError("shard s: aborted failed: attempt to write a readonly database", shard="s")

    with monkeypatch.context() as patched:
        patched.setattr(SqliteShard, "abort", read_only)
        with pytest.raises(StoreError, match="readonly") as caught:
            SqliteShard(path, name="s")
    assert _open_files(tmp_path) == [], caught  # even while the error (and its traceback) is held
    again = SqliteShard(path, name="s")  # writable again: the restart finishes the abort
    assert again.pending() == [] and again.outcome("unvoted") == "aborted"
    again.close()


@pytest.mark.postgres
def test_a_pg_participant_whose_recovery_fails_is_refused_and_leaves_no_session_open(monkeypatch):
    from batchray.core.storage.postgres.participant import PgParticipant
    from batchray.core.storage.postgres.store import PgStore

    with own_schema("pgopen") as schema:
        store = PgStore(schema.url)
        sessions = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'batchray'"
        with store.pool.connection() as conn:
            before = conn.execute(sessions).fetchone()[0]

        def refused(self, conn, participant=None):
            raise StoreError("participant s: recover: the PostgreSQL server refused")

        with monkeypatch.context() as patched:
            patched.setattr(PgStore, "prepared_gids", refused)
            with pytest.raises(StoreError, match="refused") as caught:
                PgParticipant(store, "s")
        with store.pool.connection() as conn:
            deadline = time.monotonic() + 10  # a closed session leaves the server's list soon after
            while conn.execute(sessions).fetchone()[0] > before and time.monotonic() < deadline:
                time.sleep(0.05)
            assert conn.execute(sessions).fetchone()[0] == before, caught
        store.close()
    assert not schema.left


def test_a_closed_shard_and_a_closed_log_refuse_every_use_with_a_store_error(tmp_path):
    shard = SqliteShard(tmp_path / "s.sqlite", name="s")
    shard.close()
    shard.close()  # twice: nothing more
    uses = [lambda: list(shard.read_items(1)), lambda: shard.count_items(1), lambda: shard.read_page(1),
            lambda: shard.read_docs(), lambda: shard.pending(), lambda: shard.outcome("t"), lambda: shard.epoch,
            lambda: shard.leftovers(), lambda: shard.apply(TxnRef("t", 1), CreateItems(1, [LO + 1], ['{"n":1}']))]
    for use in uses:
        with pytest.raises(StoreError, match="shard s is closed"):
            use()
    log = DecisionLog(tmp_path / "coordinator.sqlite")
    log.close()
    log.close()
    for use in (lambda: log.batch("t"), lambda: log.unfinished(), lambda: log.decide("t", {"s": "commit"}),
                lambda: log.next_value("ids"), lambda: log.add_batch("t", kind="create", ts=1)):
        with pytest.raises(StoreError, match="the decision log is closed"):
            use()
