"""PostgreSQL faults beyond a killed client: the server crashing at each point of two-phase
commit, and the server refusing work (markers ``postgres`` and ``faults``).

Every test runs against a server of its own (``tests/pg_server.py`` runs ``.ci/postgres.sh
start``; skipped when no PostgreSQL binaries are found), since
these tests crash it and change its settings; never the shared server of
``BATCHRAY_TEST_PG_DSN``.

**Server crashes.** The bank workload (``tests/pg_bank.py``: client threads of transfers and
reads, each logged for the history checker) runs on a 2-shard store; an in-process crash point
(:func:`batchray.core.txn.crashpoints.arm` with an action) crashes the server with ``pg_ctl stop
-m immediate`` when a batch reaches the chosen point, and a timer starts it again a second
later:

* ``apply``: a shard writing its part (``shard-0000:apply``, its transaction open);
* ``prepare``: the second shard about to ``PREPARE TRANSACTION`` (the first one prepared);
* ``decided``: just after the decision is logged (``log:decide`` fires after its autocommit
  write), before any ``COMMIT PREPARED``;
* ``commit``: between the two shards' ``COMMIT PREPARED`` (``shard-0000:committed`` fires after
  the first one ran).

After the crash the workload goes on until transfers succeed again (batchray reconnected by
itself); then the history checker judges every operation against the final balances and each
transfer's state in the store, recovery leaves nothing unfinished, ``pg_prepared_xacts`` is
empty, and no client hung past its batch timeout. Each point runs ``BATCHRAY_PG_CRASH_TRIALS`` times
(default 1; 3 in the figures of docs/reliability.md). A batch the crash cut off at its decision
or in phase 2 is finished by the runtime's settler (``batchray.core.run.settler``) once the
server answers again; before the settler it kept its locks until recovery ran, and a trial
could wait minutes for transfers to succeed again, or fail.

**Refusals** (see test docstrings): ``max_prepared_transactions`` used up by other sessions,
the role's connection limit reached, the server read-only, the tablespace's disk full. Each
time: the batch is refused with a structured error (code and ``retryable`` checked), the
balances are exactly as before (read over the superuser's connection), no prepared transaction
of batchray is left, and once the cause is gone the same client's next batch commits.

**The soak** (``-m soak``, ``test_pg_soak``): the bank workload for ``BATCHRAY_SOAK_MINUTES``
(default 10) with server crashes at random points and refusal windows mixed, one history check
at the end.
"""
from __future__ import annotations

import contextlib
import os
import random
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import orjson
import pytest

from batchray.core.txn import crashpoints
from batchray.errors import BatchrayError

pytest.importorskip("psycopg")

from pg_bank import ACCOUNTS, BANK, INITIAL, PgBank  # noqa: E402
from pg_server import OwnServer, PreparedSlots, Unavailable, fill, server_binaries, small_tablespace  # noqa: E402

pytestmark = [pytest.mark.postgres, pytest.mark.faults]

if server_binaries() is None:
    pytest.skip("no PostgreSQL server binaries (install postgresql, or set BATCHRAY_TEST_PG_BIN)",
                allow_module_level=True)

SEED = int(os.environ.get("BATCHRAY_FAULT_SEED", "17"))
CRASH_POINTS = {
    "apply": "shard-0000:apply",
    "prepare": "shard-0001:prepare",
    "decided": "log:decide",
    "commit": "shard-0000:committed",
}


@pytest.fixture(scope="module")
def server():
    own = OwnServer()
    yield own
    own.stop()


@pytest.fixture
def schema(server):
    name = f"pgfault_{uuid.uuid4().hex[:10]}"
    yield name
    left = server.prepared()
    with server.admin() as conn:
        for gid in left:
            conn.execute(f"ROLLBACK PREPARED '{gid}'")
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    assert left == [], f"pg_prepared_xacts is not empty at the end of the test: {left}"


# -- server crashes -------------------------------------------------------------------------------

def crash_trial(server: OwnServer, url: str, root: Path, point: str, seed: int) -> dict:
    """One crash of the server at ``point`` under the bank workload; the figures of the trial."""
    bank = PgBank(url, root, seed=seed)
    fired = threading.Event()
    restarted = threading.Event()

    def crash(label: str, n: int) -> None:
        server.crash()
        fired.set()
        threading.Timer(1.0, lambda: (server.start(), restarted.set())).start()

    rng = random.Random(seed)
    bank.start()
    time.sleep(rng.uniform(0.2, 1.0))
    crashpoints.arm(rng.randint(1, 3), action=crash, label_prefix=CRASH_POINTS[point])
    try:
        assert fired.wait(60), f"no batch reached {CRASH_POINTS[point]}"
        assert restarted.wait(60)
        started = time.monotonic()
        ok_before = bank.counts["transfer ok"]
        while bank.counts["transfer ok"] < ok_before + 3:  # reconnected by itself
            assert time.monotonic() - started < 60, f"no transfer succeeded after the restart: {bank.counts}"
            time.sleep(0.05)
        reconnect = time.monotonic() - started
    finally:
        crashpoints.arm(None)
    figures = bank.finish()
    assert server.prepared() == []
    figures["recovered in s"] = round(reconnect, 2)
    return figures


@pytest.mark.soak
def test_server_crash_after_the_decision_is_logged(server, schema, tmp_path):
    figures = crash_trial(server, server.url(schema), tmp_path, "decided", SEED)
    print("server crash after the decision:", figures)


@pytest.mark.parametrize("point", list(CRASH_POINTS))
def test_server_crash_at_each_2pc_point(server, schema, tmp_path, point):
    trials = int(os.environ.get("BATCHRAY_PG_CRASH_TRIALS", "1"))
    for trial in range(trials):
        root = tmp_path / f"t{trial}"
        root.mkdir()
        figures = crash_trial(server, server.url(f"{schema}_{trial}"), root, point, SEED + trial)
        print(f"server crash at {point}, trial {trial}:", figures)
        with server.admin() as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}_{trial}" CASCADE')


# -- refusals -------------------------------------------------------------------------------------

def _raw_balances(server: OwnServer, schema: str) -> dict[int, float]:
    """Every account's balance as the tables hold it, over the superuser's own session."""
    with server.admin() as conn:
        rows = conn.execute(f'SELECT id, vals FROM "{schema}".items ORDER BY id').fetchall()
    return {i: (v if isinstance(v, dict) else orjson.loads(v))["balance"] for i, v in rows}


def _ours(server: OwnServer) -> list[str]:
    return [gid for gid in server.prepared() if gid.startswith("batchray:")]


def _deposit(client) -> tuple[bool, dict | None]:
    """One atomic batch over both shards: every account + 1. (success, structured error)."""
    updates = [{"selector": {"query": "balance >= 0"}, "values": {"balance": "=balance + 1"}}]
    try:
        result = client.update_items(BANK, updates, atomic=True, progress=False, timeout=15_000)
    except BatchrayError as exc:
        return False, exc.to_dict()
    return result.success, result.error


def refusal_trial(server: OwnServer, schema: str, tmp: Path, refuse: Callable[[], None],
                  lift: Callable[[], None], code: str, retryable: bool) -> dict:
    """Seed the bank; ``refuse()``; a batch over both shards must fail with ``code`` and
    change nothing, leaving no prepared transaction; ``lift()``; the next batch commits (after
    at most two retries of a retryable refusal, as a client would)."""
    bank = PgBank(server.url(schema), tmp, seed=SEED)
    before = _raw_balances(server, schema)
    assert sorted(before.values()) == [INITIAL] * ACCOUNTS
    refuse()
    try:
        started = time.monotonic()
        success, error = _deposit(bank.client)
        refused_in = time.monotonic() - started
        assert not success, "the batch went through although the server refused work"
        assert error["code"] == code and error["retryable"] is retryable, error
        assert _raw_balances(server, schema) == before  # nothing half-applied
        assert _ours(server) == []
    finally:
        lift()
    for attempt in range(3):
        success, again = _deposit(bank.client)
        if success or not (again or {}).get("retryable"):
            break
        print("retrying after", again)
        time.sleep(0.5)
    assert success, again
    assert _raw_balances(server, schema) == {i: b + 1 for i, b in before.items()}
    bank.client.close()
    assert _ours(server) == []
    return {"code": error["code"], "retryable": error["retryable"], "message": error["message"],
            "refused in s": round(refused_in, 2), "tries after lifting": attempt + 1}


def test_max_prepared_transactions_used_up_by_other_work(server, schema, tmp_path):
    """Other sessions hold every ``max_prepared_transactions`` slot: PREPARE TRANSACTION fails
    (53200), the vote is a retryable ``RESOURCE_EXHAUSTED``, and the batch rolls back."""
    slots = PreparedSlots(server)
    print(refusal_trial(server, schema, tmp_path, slots.take, slots.give_back, "RESOURCE_EXHAUSTED", True))


def test_connection_limit_reached(server, schema, tmp_path):
    """The role may open no more sessions (``CONNECTION LIMIT 0``, its open ones ended, as when
    other clients hold every slot): a retryable ``UNAVAILABLE`` naming the limit."""
    figures = refusal_trial(server, schema, tmp_path, server.limit_connections,
                            server.unlimit_connections, "UNAVAILABLE", True)
    assert "too many connections" in figures["message"] or "terminating connection" in figures["message"]
    print(figures)


def test_read_only_server(server, schema, tmp_path):
    """``default_transaction_read_only = on`` for the whole server (what a hot standby refuses
    too, with the same SQLSTATE 25006): a permanent ``STORE`` error that says read-only."""
    figures = refusal_trial(server, schema, tmp_path,
                            lambda: server.set_system("default_transaction_read_only", "on"),
                            lambda: server.set_system("default_transaction_read_only", None),
                            "STORE", False)
    assert "read-only" in figures["message"]
    print(figures)


@contextlib.contextmanager
def _small_tablespace(server: OwnServer, megabytes: int):
    """:func:`pg_server.small_tablespace`, skipped where it cannot be mounted."""
    with contextlib.ExitStack() as stack:
        try:
            mount = stack.enter_context(small_tablespace(server, megabytes))
        except Unavailable as exc:
            pytest.skip(str(exc))
        yield mount


def test_disk_full_under_the_tablespace(server, schema, tmp_path):
    """The store's tables live in a tablespace on a small tmpfs; other files fill it up. A
    batch that must grow the tables is refused with a permanent ``STORE`` error naming the full
    disk (53100), nothing of it stays; the disk freed, the next batch commits."""
    with _small_tablespace(server, 24) as mount:
        try:
            bank = PgBank(server.url(schema), tmp_path, seed=SEED)
            before = _raw_balances(server, schema)
            filler = fill(mount)
            rows = [{"owner": f"new{k}", "balance": 1} for k in range(4000)]
            try:
                result = bank.client.create_items(BANK, "Accounts", rows, progress=False)
                success, error = result.success, result.error
            except BatchrayError as exc:
                success, error = False, exc.to_dict()
            assert not success
            assert error["code"] == "STORE" and not error["retryable"] and "disk is full" in error["message"], error
            assert _raw_balances(server, schema) == before
            assert _ours(server) == []
            filler.unlink()
            result = bank.client.create_items(BANK, "Accounts", rows, progress=False)
            assert result.success, result.error
            assert len(_raw_balances(server, schema)) == ACCOUNTS + len(rows)
            bank.client.close()
            print({"code": error["code"], "retryable": error["retryable"], "message": error["message"][:160]})
        finally:
            with server.admin() as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                conn.execute("DROP TABLESPACE IF EXISTS small")


# -- the soak -------------------------------------------------------------------------------------

@pytest.mark.soak
@pytest.mark.timeout(0)  # as long as BATCHRAY_SOAK_MINUTES says
def test_pg_soak(server, schema, tmp_path, request):
    """``BATCHRAY_SOAK_MINUTES`` (default 10) minutes of the bank workload with a fault every 1
    to 3 s: a server crash at a random 2PC point (half of them), or for 0.5 to 2 s every
    prepared-transaction slot taken, the connection limit reached, or the server read-only.
    One history check at the end; the figures are printed."""
    expression = request.config.getoption("-m") or ""
    if "soak" not in expression or "not soak" in expression:
        pytest.skip("a soak run: select it with pytest -m soak")
    seconds = 60 * float(os.environ.get("BATCHRAY_SOAK_MINUTES", "10"))
    rng = random.Random(SEED)
    bank = PgBank(server.url(schema), tmp_path, seed=SEED)
    faults: dict[str, int] = {}
    fired = threading.Event()
    restarted = threading.Event()

    def crash(label: str, n: int) -> None:
        server.crash()
        fired.set()
        threading.Timer(rng.uniform(0.5, 2.0), lambda: (server.start(), restarted.set())).start()

    slots = PreparedSlots(server)
    refusals = {
        "max_prepared_transactions used up": (slots.take, slots.give_back),
        "connection limit reached": (server.limit_connections, server.unlimit_connections),
        "read-only server": (lambda: server.set_system("default_transaction_read_only", "on"),
                             lambda: server.set_system("default_transaction_read_only", None)),
    }
    started = time.monotonic()
    bank.start()
    try:
        inject(server, bank, rng, seconds, started, faults, fired, restarted, crash, refusals)
    finally:
        bank.stop.set()  # a failure above must not leave the clients running
        crashpoints.arm(None)
    figures = bank.finish()
    assert server.prepared() == []
    figures["faults"] = faults
    figures["seconds"] = round(time.monotonic() - started, 1)
    print("PostgreSQL soak:", figures)


def inject(server, bank, rng, seconds, started, faults, fired, restarted, crash, refusals) -> None:
    """The soak's faults, one every 1 to 3 s, until ``seconds`` have passed since ``started``."""
    while time.monotonic() - started < seconds:
        time.sleep(rng.uniform(1.0, 3.0))
        if rng.random() < 0.5:
            point = rng.choice(list(CRASH_POINTS))
            fired.clear()
            restarted.clear()
            crashpoints.arm(1, action=crash, label_prefix=CRASH_POINTS[point])
            reached = fired.wait(10)
            crashpoints.arm(None)
            if not reached:
                faults[f"crash at {point}: not reached"] = faults.get(f"crash at {point}: not reached", 0) + 1
                continue
            assert restarted.wait(60)
            what = f"server crash at {point}"
        else:
            what = rng.choice(sorted(refusals))
            refuse, lift = refusals[what]
            refuse()
            try:
                time.sleep(rng.uniform(0.5, 2.0))
            finally:
                lift()
        faults[what] = faults.get(what, 0) + 1
