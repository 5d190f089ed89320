"""The store's disk full, or its files read-only, in the middle of a batch.

Injected (always run): every SQLite connection of a the in-process runtime (:class:`~batchray.core.run.local.LocalRuntime`) (each
participant's and the decision log's) is wrapped so that its ``n``-th write statement (INSERT,
UPDATE, DELETE, REPLACE or COMMIT, counted over all of them) raises
``sqlite3.OperationalError("database or disk is full")`` or ``("attempt to write a readonly
database")``. For four kinds of batch (a create across both shards, an update by query with an
expression, a schema change that rewrites every item, a delete by query) the fault is put at
every write the batch makes, in three variants:

* ``disk-full-once``: one write fails, the next ones find room again (another process freed
  space);
* ``disk-full-until-freed``: every write from the ``n``-th on fails until the test frees space;
* ``read-only-until-fixed``: the same with the read-only error, until permissions are fixed.

At each point the batch must end cleanly: either a result (``success`` with everything
committed, or a failure whose error is ``STORE``, rolled back) or a raised
:class:`~batchray.errors.StoreError` (the decision log could not be written; when the outcome
was already final it says which, in ``details['committed']``). Once the fault is gone and
recovery has run (what ``batchray recover`` does), the store holds the batch entirely or not at
all, as reported, every participant's 2PC leftovers are zero, ``PRAGMA integrity_check`` is
``ok``, and a following batch over every item succeeds. A result returned in the
``disk-full-once`` variant must need no recovery at all.

Real (when possible): a 6 MB tmpfs mounted for the store (needs root, as CI has; skipped with
the reason otherwise) fills up during a large atomic create; and store files made read-only
with ``chmod`` (skipped as root, whom permissions do not stop; the injected read-only variant
covers it there).

Figures: set ``BATCHRAY_EXHAUSTION_SUMMARY=FILE`` for the fault points per batch and outcome.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from local_runtime import Client, local_client
from batchray.errors import StoreError

WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "COMMIT")
DISK_FULL = "database or disk is full"
READ_ONLY = "attempt to write a readonly database"
VARIANTS = {
    "disk-full-once": (DISK_FULL, False),
    "disk-full-until-freed": (DISK_FULL, True),
    "read-only-until-fixed": (READ_ONLY, True),
}
ZERO = {"txns": 0, "undo": 0, "created": 0, "applied": 0}


class Disk:
    """Counts write statements over every wrapped connection; fails the ``n``-th (and, when
    ``persistent``, every later one) until :meth:`heal`."""

    def __init__(self) -> None:
        self.writes = 0
        self.fail_at: Optional[int] = None
        self.persistent = False
        self.message = DISK_FULL
        self.failed: list[str] = []

    def arm(self, n: int, message: str, persistent: bool) -> None:
        self.writes, self.fail_at, self.message, self.persistent = 0, n, message, persistent

    def heal(self) -> None:
        self.fail_at = None

    def check(self, verb: str, sql: str, where: str) -> None:
        self.writes += 1
        if self.fail_at is not None and (self.writes == self.fail_at or self.persistent and self.writes > self.fail_at):
            self.failed.append(f"{where}: {' '.join(sql.split())[:60]}")
            raise sqlite3.OperationalError(self.message)


class FaultyConnection:
    """A sqlite3 connection whose writes go through a :class:`Disk` first. The COMMIT of a
    transaction that wrote counts as a write (SQLite appends to the WAL then); the COMMIT of
    a read snapshot does not."""

    def __init__(self, conn: sqlite3.Connection, disk: Disk, where: str) -> None:
        self._conn, self._disk, self._where = conn, disk, where
        self._wrote = False

    def _check(self, sql: str) -> None:
        words = sql.lstrip().split(None, 1)
        verb = words[0].upper() if words else ""
        if verb == "BEGIN":
            self._wrote = False
        elif verb in WRITES and (verb != "COMMIT" or self._wrote):
            self._wrote = verb != "COMMIT"
            self._disk.check(verb, sql, self._where)
        elif verb in ("COMMIT", "ROLLBACK", "END"):
            self._wrote = False

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._check(sql)
        return self._conn.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
        self._check(sql)
        return self._conn.executemany(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def break_disk(engine: Client) -> Disk:
    disk = Disk()
    for name, participant in engine.runtime.participants.items():
        participant._conn = FaultyConnection(participant._conn, disk, name)
    engine.runtime.log._conn = FaultyConnection(engine.runtime.log._conn, disk, "log")
    return disk


# -- the batches ------------------------------------------------------------------------------
CONTEXT = "M"
BATCHES: dict[str, Callable[[Client], Any]] = {
    "create 60 items on 2 shards": lambda e: e.create_items(
        CONTEXT, CONTEXT, [{"n": 100 + i, "s": "new"} for i in range(60)], batch_size=20),
    "update by query with =expr": lambda e: e.update_items(
        CONTEXT, [{"selector": {"query": "n < 30"}, "values": {"s": "=concat(s, '!')", "n": "=n + 1000"}}]),
    "rename and retype (rewrites every item)": lambda e: e.schema_operations(CONTEXT, [
        {"action": "update", "target": "attribute", "attribute": "s", "spec": {"name": "t"}},
        {"action": "update", "target": "attribute", "attribute": "k", "spec": {"type": "numeric"}}]),
    "delete by query": lambda e: e.delete_items(CONTEXT, [{"query": "n >= 20"}]),
}


def _store_base(tmp_path_factory) -> tuple[Path, bool]:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):  # a fresh store per fault point: copies are cheap there
        return Path(tempfile.mkdtemp(prefix="batchray-exhaustion-", dir=shm)), True
    return tmp_path_factory.mktemp("exhaustion"), False


def snapshot(store: Path) -> dict[str, Any]:
    """Items (id, values) and catalog documents, and each participant's 2PC leftovers, read
    through connections of their own."""
    data, leftovers = {}, {}
    for path in sorted(store.glob("*.sqlite")):
        if path.name == "coordinator.sqlite":
            continue
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            data[path.stem] = (conn.execute("SELECT id, vals FROM items ORDER BY id").fetchall(),
                               conn.execute("SELECT key, doc FROM docs ORDER BY key").fetchall())
            leftovers[path.stem] = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ZERO}
        finally:
            conn.close()
    return {"data": data, "leftovers": leftovers}


class World:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.template = base / "template"
        with local_client(self.template, shards=2) as engine:
            engine.create_data_context(CONTEXT, [{"name": CONTEXT, "attrs": [
                {"name": "n", "type": "numeric"}, {"name": "s"}, {"name": "k", "type": "categorical"}]}])
            result = engine.create_items(CONTEXT, CONTEXT, [{"n": i, "s": f"v{i}", "k": str(i % 7)} for i in range(40)])
            assert result.success, result
        self.before = snapshot(self.template)["data"]
        self.expected: dict[str, Any] = {}
        self.writes: dict[str, int] = {}
        for name, batch in BATCHES.items():
            engine, disk = self.fresh()
            result = batch(engine)
            assert result.success, result
            self.writes[name] = disk.writes
            engine.close()
            self.expected[name] = snapshot(self.base / "store")["data"]
        self.outcomes: dict[str, Counter] = defaultdict(Counter)

    def fresh(self) -> tuple[Client, Disk]:
        store = self.base / "store"
        if store.exists():
            shutil.rmtree(store)
        shutil.copytree(self.template, store)
        engine = local_client(store)
        engine.runtime.driver.phase2_attempts = 3  # a phase 2 that cannot be delivered is left to recovery quickly
        engine.runtime.driver.sleep = lambda seconds: None
        disk = break_disk(engine)
        return engine, disk


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base, on_shm = _store_base(tmp_path_factory)
    world = World(base)
    yield world
    summary = {"writePoints": world.writes, "outcomes": {k: dict(v) for k, v in sorted(world.outcomes.items())},
               "faultPoints": sum(sum(v.values()) for v in world.outcomes.values()), "anomalies": 0}
    out = os.environ.get("BATCHRAY_EXHAUSTION_SUMMARY")
    if out:
        Path(out).write_text(json.dumps(summary, indent=2))
    print("\nresource exhaustion:", json.dumps(summary))
    if on_shm:
        shutil.rmtree(base, ignore_errors=True)


def _run(engine: Client, batch: Callable[[Client], Any]) -> tuple[str, Any]:
    """``("result", BatchResult)`` or ``("raised", StoreError)``; anything else fails the test."""
    try:
        return "result", batch(engine)
    except StoreError as exc:
        return "raised", exc


def _check_store_after(engine: Client, world: World, committed: bool, where: str) -> None:
    store = engine.layout.root
    state = snapshot(store)
    assert state["leftovers"] == {p: ZERO for p in state["leftovers"]}, (where, state["leftovers"])
    assert engine.runtime.log.unfinished() == ([], []), where
    assert all(p.integrity_check() == "ok" for p in engine.runtime.participants.values()), where
    expected = world.expected[where.split(" @ ")[0]] if committed else world.before
    assert state["data"] == expected, f"{where}: the store holds part of the batch, or not what was reported"
    count = engine.count_items(CONTEXT)
    follow = engine.update_items(CONTEXT, [{"selector": {"query": "n >= 0"}, "values": {"n": "=n + 1"}}])
    assert follow.success, (where, follow)
    assert engine.count_items(CONTEXT) == count


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("batch", list(BATCHES))
def test_a_fault_at_every_write_of_a_batch_ends_it_cleanly(world, batch, variant):
    message, persistent = VARIANTS[variant]
    assert world.writes[batch] > 10
    for n in range(1, world.writes[batch] + 1):
        where = f"{batch} @ write {n} ({variant})"
        engine, disk = world.fresh()
        try:
            disk.arm(n, message, persistent)
            how, value = _run(engine, BATCHES[batch])
            assert disk.failed, f"{where}: the fault never fired"
            disk.heal()  # space freed, permissions fixed
            if how == "result":
                if value.success:
                    assert value.state.value == "completed", (where, value)
                    committed, label = True, "committed (fault absorbed by a retried phase 2)"
                else:
                    assert value.error and value.error["code"] == "STORE", (where, value)
                    assert value.state.value == "rolled_back", (where, value)
                    committed, label = False, "rolled back, STORE error returned"
                if not persistent:  # nothing left for recovery to do
                    assert snapshot(engine.layout.root)["leftovers"] == {p: ZERO for p in engine.runtime.participants}, where
                    assert engine.runtime.log.unfinished() == ([], []), where
            else:
                committed = bool(value.details.get("committed", False))
                label = f"StoreError raised ({'committed' if committed else 'not committed'})"
            engine.runtime.executor.recover()
            world.outcomes[f"{batch} ({variant})"][label] += 1
            _check_store_after(engine, world, committed, where)
        finally:
            engine.close()


# -- a real full disk ---------------------------------------------------------------------------
@pytest.fixture
def small_tmpfs(tmp_path):
    """A 6 MB tmpfs (an empty store takes about 2 MB: three WAL files of DDL pages)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root); the injected variant covers disk full")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); "
                    "the injected variant covers disk full")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_really_full_disk_fails_the_batch_cleanly(small_tmpfs):
    engine = local_client(small_tmpfs / "store", shards=2)
    try:
        engine.runtime.driver.phase2_deadline = 0.5
        engine.create_data_context(CONTEXT, [{"name": CONTEXT, "attrs": [{"name": "n", "type": "numeric"},
                                                                         {"name": "s"}]}])
        assert engine.create_items(CONTEXT, CONTEXT, [{"n": i, "s": "seed"} for i in range(50)]).success
        before = snapshot(small_tmpfs / "store")["data"]
        rows = ({"n": 1000 + i, "s": "x" * 400} for i in range(10_000))  # about 4 MB: more than is free
        try:
            result = engine.create_items(CONTEXT, CONTEXT, rows, batch_size=500)
            assert not result.success and result.error["code"] == "STORE", result
        except StoreError as exc:  # the decision log is on the same full disk
            assert not exc.details.get("committed"), exc
        assert shutil.disk_usage(small_tmpfs).free < 64 << 10, "the disk did not fill up"
        assert engine.count_items(CONTEXT) == 50  # nothing of the batch is visible, even before recovery
        # room again (an operator frees space), then recovery finishes the abort
        subprocess.run(["mount", "-o", "remount,size=32m", str(small_tmpfs)], check=True)
        engine.runtime.executor.recover()
        state = snapshot(small_tmpfs / "store")
        assert state["data"] == before
        assert state["leftovers"] == {p: ZERO for p in state["leftovers"]}
        assert all(p.integrity_check() == "ok" for p in engine.runtime.participants.values())
        assert engine.create_items(CONTEXT, CONTEXT, [{"n": 5000 + i, "s": "after"} for i in range(20)]).success
        assert engine.update_items(CONTEXT, [{"selector": {"query": "n >= 0"}, "values": {"s": "y"}}]).success
        assert engine.count_items(CONTEXT) == 70
    finally:
        engine.close()


# -- read-only files ----------------------------------------------------------------------------
@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root ignores file permissions; the injected read-only variant covers it")
def test_store_files_made_read_only(tmp_path):
    store = tmp_path / "store"
    with local_client(store, shards=2) as engine:
        engine.create_data_context(CONTEXT, [{"name": CONTEXT, "attrs": [{"name": "n", "type": "numeric"}]}])
        assert engine.create_items(CONTEXT, CONTEXT, [{"n": i} for i in range(10)]).success
        files = [p for p in store.iterdir() if p.is_file()]

        def rows():  # made read-only in the middle of the batch
            for i in range(200):
                if i == 100:
                    for path in files:
                        path.chmod(0o400)
                    store.chmod(0o500)
                yield {"n": 100 + i}

        # the open store keeps its descriptors, so this batch ends either way, all or nothing
        try:
            outcome = engine.create_items(CONTEXT, CONTEXT, rows(), batch_size=20)
            assert outcome.success or outcome.error["code"] == "STORE", outcome
        except StoreError:
            pass
    # opened again while read-only: refused with a StoreError, and nothing is left open
    with pytest.raises(StoreError):
        local_client(store)
    store.chmod(0o700)
    for path in files:
        path.chmod(0o600)
    with local_client(store) as engine:  # permissions fixed: usable at once
        engine.runtime.executor.recover()
        state = snapshot(store)
        assert state["leftovers"] == {p: ZERO for p in state["leftovers"]}
        assert all(p.integrity_check() == "ok" for p in engine.runtime.participants.values())
        assert engine.count_items(CONTEXT) in (10, 210)
        assert engine.create_items(CONTEXT, CONTEXT, [{"n": 1000}]).success
        assert engine.update_items(CONTEXT, [{"selector": {"query": "n >= 0"}, "values": {"n": "=n + 1"}}]).success
