"""PostgreSQL prepared transactions under real failures (marker ``postgres``).

The classic scenarios, on a real server (``BATCHRAY_TEST_PG_DSN``; the server-restart test
restarts a server of its own, ``tests/pg_server.py``, never the shared one other tests use at
the same time):

* prepared changes are invisible to every other session until COMMIT PREPARED;
* a participant *process* holding the transaction's connection is SIGKILLed after PREPARE:
  the transaction survives it and is finished by a participant opened afterwards; killed
  before PREPARE, its work is gone and recovery records it aborted;
* the server is stopped (``pg_ctl stop -m immediate``) and started again between the decision
  and phase 2: a new engine's recovery finishes the batch;
* a second PREPARE with a global id already in use is refused, and the participant votes no.

Every test ends with no prepared transaction of this module's stores left in
``pg_prepared_xacts`` (checked by its ``url`` fixture), in a schema of its own that is dropped
afterwards. Other tests' transactions on the shared server are not this module's to judge.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest

from batchray.core.txn.chunks import CreateItems, TxnRef, UpdateItems, context_range
from batchray.errors import LockConflict, TransactionAborted

pytestmark = pytest.mark.postgres

DSN = os.environ.get("BATCHRAY_TEST_PG_DSN")
REPO = Path(__file__).resolve().parent.parent
CTX = 1
LO, _ = context_range(CTX)
ITEMS = {LO + 1: {"name": "a", "mass": 1}, LO + 2: {"name": "b", "mass": 2}}

if not DSN:
    pytest.skip("needs a PostgreSQL server: set BATCHRAY_TEST_PG_DSN (eval \"$(bash .ci/postgres.sh start)\")",
                allow_module_level=True)

psycopg = pytest.importorskip("psycopg")


SCHEMA_PREFIX = "pgprep_"
"""Every schema of this module starts so: its stores' global ids start with ``batchray:pgprep_``."""


def _all_prepared(dsn: str = DSN) -> list[str]:
    """The global ids of the prepared transactions of this module's stores on the server of ``dsn``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [g for (g,) in conn.execute("SELECT gid FROM pg_prepared_xacts WHERE starts_with(gid, %s) ORDER BY gid",
                                           (f"batchray:{SCHEMA_PREFIX}",))]


@pytest.fixture
def url():
    """A schema of the test's own; afterwards no prepared transaction of this module's stores may be left."""
    before = _all_prepared()
    assert before == [], f"prepared transactions left by an earlier run: {before}"
    schema = f"{SCHEMA_PREFIX}{uuid.uuid4().hex[:10]}"
    yield f"{DSN}{'&' if '?' in DSN else '?'}schema={schema}"
    left = _all_prepared()
    with psycopg.connect(DSN, autocommit=True) as conn:
        for gid in left:
            conn.execute(f"ROLLBACK PREPARED '{gid}'")
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    assert left == [], f"pg_prepared_xacts is not empty at the end of the test: {left}"


def _participant(url: str, name: str = "s", **kwargs):
    from batchray.core.storage.postgres.participant import PgParticipant
    from batchray.core.storage.postgres.store import PgStore

    return PgParticipant(PgStore(url), name, **kwargs)


def _create(chunk_id, items):
    return CreateItems(chunk_id, list(items), [orjson.dumps(v).decode() for v in items.values()])


def _seed(participant) -> None:
    ref = TxnRef("seed", 1)
    participant.apply(ref, _create(1, ITEMS))
    assert participant.prepare(ref)
    participant.commit(ref)


def _visible(participant) -> dict[int, dict]:
    return {i: orjson.loads(v) for i, v in participant.read_items(CTX)}


def _raw_items(url: str) -> dict[int, dict]:
    from batchray.core.storage.postgres.url import parse_pg_url

    dsn, schema = parse_pg_url(url)
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {i: orjson.loads(v) for i, v in conn.execute(f'SELECT id, vals FROM "{schema}".items ORDER BY id')}


# -- invisibility -------------------------------------------------------------------------------

def test_prepared_changes_are_invisible_until_commit(url):
    participant = _participant(url)
    _seed(participant)
    ref = TxnRef("t1", 10)
    participant.apply(ref, UpdateItems(2, CTX, ids=[LO + 1], patch={"mass": 100}))
    participant.apply(ref, _create(3, {LO + 3: {"name": "c", "mass": 3}}))
    assert participant.prepare(ref)
    gid = participant.gid("t1")
    assert gid in _all_prepared() and gid.startswith("batchray:") and gid.endswith(":s:t1")
    for _ in range(2):  # a plain session, a participant of another process
        assert _raw_items(url) == ITEMS
        other = _participant(url, recover=False)
        assert _visible(other) == ITEMS and other.count_items(CTX, "mass >= 100") == 0
        other.close()
    participant.commit(ref)
    assert _raw_items(url) == {**ITEMS, LO + 1: {"name": "a", "mass": 100}, LO + 3: {"name": "c", "mass": 3}}
    participant.close()


# -- a participant process killed -----------------------------------------------------------------

CHILD = r"""
import sys, time, orjson
from batchray.core.txn.chunks import CreateItems, TxnRef, UpdateItems, context_range
from batchray.core.storage.postgres.participant import PgParticipant
from batchray.core.storage.postgres.store import PgStore
url, mode = sys.argv[1], sys.argv[2]
lo, _ = context_range(1)
participant = PgParticipant(PgStore(url), "s", recover=False)
ref = TxnRef("victim", 20)
participant.apply(ref, UpdateItems(2, 1, ids=[lo + 1], patch={"mass": 500}))
participant.apply(ref, CreateItems(3, [lo + 7], [orjson.dumps({"name": "g", "mass": 7}).decode()]))
if mode == "prepared":
    assert participant.prepare(ref)
print("ready", flush=True)
time.sleep(600)
"""


def _killed_child(url: str, mode: str) -> None:
    """A process that applies (and, with mode "prepared", prepares) then is SIGKILLed."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, url, mode], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = child.stdout.readline()
        assert line.strip() == "ready", child.stderr.read()
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


@pytest.mark.parametrize("decision", ["commit", "abort"])
def test_a_participant_process_killed_after_prepare_is_finished_by_recovery(url, decision):
    participant = _participant(url)
    _seed(participant)
    participant.close()
    _killed_child(url, "prepared")
    assert participant.gid("victim") in _all_prepared(), "the prepared transaction died with its process"
    assert _raw_items(url) == ITEMS

    survivor = _participant(url, lock_timeout=0.5)  # a new process takes the participant over
    assert survivor.in_doubt == [{"txn": "victim", "ts": 20, "shard": "s"}]
    with pytest.raises(LockConflict):  # the killed process's locks are still held
        survivor.apply(TxnRef("late", 21), UpdateItems(4, CTX, ids=[LO + 1], patch={"mass": 1}))
    getattr(survivor, decision)(TxnRef("victim", 20))
    getattr(survivor, decision)(TxnRef("victim", 20))  # delivered twice: the same
    if decision == "commit":
        assert _raw_items(url) == {**ITEMS, LO + 1: {"name": "a", "mass": 500}, LO + 7: {"name": "g", "mass": 7}}
    else:
        assert _raw_items(url) == ITEMS
    assert survivor.leftovers()["txns"] == 0 and survivor.pending() == []
    survivor.close()


def test_a_participant_process_killed_before_prepare_loses_its_work(url):
    participant = _participant(url)
    _seed(participant)
    participant.close()
    _killed_child(url, "active")
    survivor = _participant(url, lock_timeout=2.0)
    assert survivor.in_doubt == [] and survivor.outcome("victim") == "aborted"  # presumed abort
    assert _raw_items(url) == ITEMS
    with pytest.raises(TransactionAborted):  # a late apply of it is refused
        survivor.apply(TxnRef("victim", 20), UpdateItems(5, CTX, ids=[LO + 2], patch={"mass": 9}))
    assert survivor.prepare(TxnRef("victim", 20)) is False
    free = TxnRef("free", 22)  # its locks went with its session
    survivor.apply(free, UpdateItems(6, CTX, ids=[LO + 1], patch={"mass": 11}))
    assert survivor.prepare(free)
    survivor.commit(free)
    assert _raw_items(url)[LO + 1]["mass"] == 11
    survivor.close()


# -- the server restarted -----------------------------------------------------------------------

@pytest.fixture
def own_server():
    """A server of the test's own (the shared one serves other tests meanwhile); skipped
    without PostgreSQL's binaries."""
    from pg_server import OwnServer, server_binaries

    if server_binaries() is None:
        pytest.skip("restarting a server needs PostgreSQL's binaries (install postgresql, or set BATCHRAY_TEST_PG_BIN)")
    server = OwnServer()
    yield server
    server.stop()


def test_the_server_restarted_between_prepare_and_commit(own_server):
    from batchray.core.model.batch import RunOptions
    from local_runtime import local_client

    url = own_server.url(f"{SCHEMA_PREFIX}{uuid.uuid4().hex[:10]}")
    collections = [{"name": "People", "attrs": [{"name": "name"}, {"name": "age", "type": "numeric"}]}]
    with local_client(url, shards=2) as engine:
        assert engine.create_data_context("People", collections).success
        plan = engine.planner.create_items("People", "People", ({"name": f"p{i}", "age": i} for i in range(500)),
                                           batch_size=250)  # a chunk per shard
        txn, ts, _ = engine.runtime.executor.begin(plan.kind)
        # phase 1 and the logged decision; phase 2 never gets through
        engine.runtime.driver.finish = lambda *args, **kwargs: ["shard-0000", "shard-0001"]
        engine.runtime.executor.execute(txn, ts, plan, RunOptions())
        assert engine.runtime.log.decision(txn) == {"shard-0000": "commit", "shard-0001": "commit"}
        gids = [g for g in _all_prepared(own_server.dsn) if g.endswith(f":{txn}")]
        assert len(gids) == 2
        own_server.crash()  # every session ends; the prepared transactions are on disk
        own_server.start()
        assert sorted(g for g in _all_prepared(own_server.dsn) if g.endswith(f":{txn}")) == sorted(gids)
    with local_client(url) as recovered:  # recovery finishes the batch with the logged decision
        assert recovered.count_items("People") == 500
        assert recovered.runtime.log.unfinished() == ([], [])
        assert recovered.runtime.log.batch(txn)["state"] == "completed"
    assert _all_prepared(own_server.dsn) == []


# -- duplicate global ids -----------------------------------------------------------------------

def test_a_duplicate_global_id_is_rejected(url):
    participant = _participant(url)
    _seed(participant)
    ref = TxnRef("dup", 30)
    participant.apply(ref, UpdateItems(2, CTX, ids=[LO + 2], patch={"mass": 77}))
    gid = participant.gid("dup")
    # another session takes the global id first
    with psycopg.connect(participant.store.dsn, autocommit=True) as intruder:
        intruder.execute("BEGIN")
        intruder.execute("SELECT 1")
        intruder.execute(f"PREPARE TRANSACTION '{gid}'")
        with psycopg.connect(participant.store.dsn, autocommit=True) as again:
            again.execute("BEGIN")
            with pytest.raises(psycopg.errors.DuplicateObject):
                again.execute(f"PREPARE TRANSACTION '{gid}'")
        assert participant.prepare(ref) is False  # PostgreSQL refused the id: the vote is no
        assert participant.outcome("dup") == "aborted"
        participant.abort(ref)  # the decision: roll back (the intruder's transaction too)
    assert _all_prepared() == []
    assert _raw_items(url) == ITEMS  # the participant's writes were rolled back
    participant.close()


def test_a_store_on_a_server_without_prepared_transactions_is_refused(url, monkeypatch):
    from batchray.errors import StoreError
    from batchray.core.storage.postgres.store import PgStore

    real = PgStore._check_server

    def zero(self, conn):
        class Shown:
            def execute(self, sql):
                class Row:
                    def fetchone(self):
                        return ("0",)
                return Row() if sql.startswith("SHOW max_prepared") else conn.execute(sql)

        return real(self, Shown())

    monkeypatch.setattr(PgStore, "_check_server", zero)
    with pytest.raises(StoreError, match="max_prepared_transactions"):
        PgStore(url)
