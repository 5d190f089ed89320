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
empty, and no client hung past its batch timeout. The default suite runs ``decided`` (where the
crash leaves prepared transactions that only the logged decision can finish); ``-m soak`` runs
all four, ``BATCHRAY_PG_CRASH_TRIALS`` times each (default 3).

**Refusals** (see test docstrings): ``max_prepared_transactions`` used up by other sessions,
the role's connection limit reached, the server read-only, the tablespace's disk full. Each
time: the batch is refused with a structured error (code and ``retryable`` checked), the
balances are exactly as before (read over the superuser's connection), no prepared transaction
of batchray is left, and once the cause is gone the same client's next batch commits.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from batchray.core.txn import crashpoints
from batchray.errors import BatchrayError

pytest.importorskip("psycopg")

from pg_bank import BANK, PgBank  # noqa: E402
from pg_server import OwnServer, server_binaries  # noqa: E402

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


def test_server_crash_after_the_decision_is_logged(server, schema, tmp_path):
    figures = crash_trial(server, server.url(schema), tmp_path, "decided", SEED)
    print("server crash after the decision:", figures)


@pytest.mark.soak
@pytest.mark.parametrize("point", list(CRASH_POINTS))
def test_server_crash_at_each_2pc_point(server, schema, tmp_path, point):
    trials = int(os.environ.get("BATCHRAY_PG_CRASH_TRIALS", "3"))
    for trial in range(trials):
        root = tmp_path / f"t{trial}"
        root.mkdir()
        figures = crash_trial(server, server.url(f"{schema}_{trial}"), root, point, SEED + trial)
        print(f"server crash at {point}, trial {trial}:", figures)
        with server.admin() as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}_{trial}" CASCADE')
