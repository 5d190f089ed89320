"""Kill tests on Ray: real SIGKILLs of a worker, of the coordinator and of the driver at each
point of two-phase commit, then restart, recovery and checks.

What every trial proves, after the kill, a reconnect, the batch reaching a final state and
``recover()``:

* the batch is all-or-nothing: its data context (one per trial) holds all N items if the batch
  completed and none if it was rolled back, and the outcome is the one the protocol point
  implies (see ``MATRIX``);
* every batch committed by an earlier trial is still all there, every rolled-back one still
  empty;
* nothing is left behind: no 2PC rows (``txns``, ``undo``, ``created``, ``applied``) and no lock
  in any participant (``coordinator.leftovers()``), no undecided or unfinished decision in the
  decision log, no batch left ``running`` or ``queued``; every SQLite file passes
  ``PRAGMA integrity_check`` (read straight from disk, read-only).

How a kill lands on a protocol point: the coordinator and workers run with
``BATCHRAY_CRASH_FILE`` (see :mod:`batchray.crashpoints`). A trial writes that file to *hold*
the process that reaches a labelled point (``shard-0001:apply``, ``log:decide``,
``send:commit:shard-0000``, ``shard-0000:commit``) inside it; the test then SIGKILLs the
victim (the holder itself, or another process) and lets the holder go on. The points:

=============================  ==========================  ====================================
point                          held at                     state there
=============================  ==========================  ====================================
during apply                   2nd apply on shard-0001     chunks applied on both shards
after the votes                the decision log write      every participant prepared, no
                                                           decision
after the decision is logged   shard-0000's commit message decision durable, nobody told
during commit                  shard-0000's commit write   commit told, not yet durable there
=============================  ==========================  ====================================

Trials: 12 (every victim at every point), 10 at random times (4 coordinator, 3 worker, 3
driver), 4 crash exits (the coordinator after the commits but before the decision is marked
done, a worker while it votes, a worker in the catalog's commit of a schema batch, a worker in
the rollback of a rejected batch): 26 kill trials.

Why the Ray work runs in subprocesses: these tests need a Ray cluster of their own (their kills
must not touch the shared session other tests use), and a process can be connected to one Ray
cluster only. The pytest process may already hold the shared session (``ray_session``), and
``Cluster.shutdown()`` resets process-wide Ray state, so this module never imports Ray: the
cluster, a long-lived driver (the "agent", which loads and inspects) and the drivers that get
killed are subprocesses (``tests/fault_driver.py``). The test process sends the SIGKILLs itself
and reads the store's files directly. That works whether this module runs alone or in the whole
suite, in any order.
"""
from __future__ import annotations

import json
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import pytest

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]

DRIVER = Path(__file__).with_name("fault_driver.py")
N = 20_000  # items per trial
CHUNK = 2_000  # items per chunk: 5 chunks per shard
STALL_TIMEOUT = 5.0  # seconds without input before a streaming batch is rolled back
FINAL = {"completed", "failed", "rolled_back", "cancelled"}
SEED = int(os.environ.get("BATCHRAY_FAULT_SEED", "20261129"))

# point -> (label prefix of the crash point, which matching point of the trial: 1st, 2nd)
POINTS = {
    "during apply": ("shard-0001:apply", 2),
    "after the votes": ("log:decide", 1),
    "after the decision is logged": ("send:commit:shard-0000", 1),
    "during commit": ("shard-0000:commit", 1),
}
MATRIX = {  # (point, victim) -> the outcome the protocol implies
    ("during apply", "worker"): "rolled_back",  # the restarted worker aborted its part
    ("during apply", "coordinator"): "rolled_back",  # undecided: presumed abort
    ("during apply", "driver"): "rolled_back",  # input stops: the stall timeout rolls back
    ("after the votes", "worker"): "completed",  # prepared survives; commit redelivered
    ("after the votes", "coordinator"): "rolled_back",  # no decision logged: presumed abort
    ("after the votes", "driver"): "completed",  # the input was complete
    ("after the decision is logged", "worker"): "completed",
    ("after the decision is logged", "coordinator"): "completed",  # recovery delivers it
    ("after the decision is logged", "driver"): "completed",
    ("during commit", "worker"): "completed",  # the lost commit is delivered again
    ("during commit", "coordinator"): "completed",
    ("during commit", "driver"): "completed",
}


# -- subprocesses -------------------------------------------------------------------------------

def _ray_env() -> dict[str, str]:
    """Environment of the subprocesses. Ray turns token auth on for a new cluster when a token
    exists; drivers joining it by address need ``RAY_AUTH_MODE=token`` set before Ray is
    imported, so set it for all of them alike."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "BATCHRAY_CRASH_FILE")}
    token_file = Path(env.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if "RAY_AUTH_MODE" not in env and (env.get("RAY_AUTH_TOKEN") or token_file.exists()):
        env["RAY_AUTH_MODE"] = "token"
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Child:
    """A subprocess of fault_driver.py whose stdout lines are read by a thread (so reads can
    time out); its stderr goes to a log file, quoted when a test fails."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._log_handle = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, str(DRIVER), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._log_handle, env=_ray_env(), text=True, bufsize=1,
        )
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def read(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no answer from {self.log.stem} in {timeout:.0f} s\n{self.tail()}") from None
        if line is None:
            raise AssertionError(f"{self.log.stem} exited ({self.proc.poll()})\n{self.tail()}")
        return json.loads(line)

    def send(self, message: dict[str, Any]) -> None:
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def tail(self, chars: int = 4000) -> str:
        self._log_handle.flush()
        return self.log.read_text(errors="replace")[-chars:]

    def close(self, timeout: float = 60.0) -> None:
        try:
            if self.proc.stdin and not self.proc.stdin.closed:
                self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log_handle.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A Ray cluster of this module's own (one head node, 4 CPUs), in a subprocess."""
    pytest.importorskip("ray")
    logs = tmp_path_factory.mktemp("ray-faults")
    child = Child(["cluster"], logs / "cluster.log")
    try:
        address = child.read(timeout=120)["address"]
        yield address
    finally:
        child.close(timeout=120)  # stdin closed: the cluster shuts down its processes


class Rig:
    """One store on the cluster, the agent that drives and inspects it, and the bookkeeping of
    the trials run on it: what every data context must hold from now on."""

    def __init__(self, address: str, root: Path) -> None:
        self.address = address
        self.root = root
        self.store = root / "store"
        self.arm_path = root / "arm.json"
        self.agent = Child(["agent", address, str(self.store)], root / "agent.log")
        self.expected: dict[str, int] = {}
        self.trials: list[dict[str, Any]] = []
        self.drivers = 0

    # -- the agent ------------------------------------------------------------------------------
    def call(self, op: str, timeout: float = 180.0, **args: Any) -> Any:
        self.agent.send({"op": op, **args})
        reply = self.agent.read(timeout)
        if not reply["ok"]:
            raise AssertionError(f"agent {op} failed: {reply['error']}\n{reply['trace']}\n{self.agent.tail()}")
        return reply["value"]

    def join(self, tag: str) -> dict[str, Any]:
        """The result of a load the agent ran in the background (it must finish)."""
        reported = self.call("join", tag=tag, timeout=200)  # the agent waits up to 120 s
        if not reported["done"]:
            diagnosis = self.call("diagnose")
            raise AssertionError(f"load {tag} did not finish: {json.dumps(diagnosis)}\n{self.agent.tail(12000)}")
        return reported

    def connect(self) -> None:
        env = {"BATCHRAY_CRASH_FILE": str(self.arm_path)}
        self.call("connect", env=env, stall_timeout=STALL_TIMEOUT, workers=2, shards=2)

    def new_context(self, name: str) -> str:
        result = self.call("context", name=name)
        assert result["success"], result
        assert self.call("quiesce")["quiet"]  # its phase 2 is over: the next crash point is the trial's
        self.expected[name] = 0
        return name

    def pids(self) -> dict[str, Any]:
        return self.call("info")

    def worker_of(self, info: dict[str, Any], shard: str) -> int:
        return next(w["pid"] for w in info["workers"] if shard in w["shards"])

    # -- crash points -------------------------------------------------------------------------
    def _clear(self) -> None:
        for suffix in ("", ".hit", ".go", ".claimed", ".tmp"):
            Path(str(self.arm_path) + suffix).unlink(missing_ok=True)

    def arm(self, trial: str, label: str, at: int = 1, action: str = "hold") -> None:
        self._clear()
        tmp = Path(str(self.arm_path) + ".tmp")
        tmp.write_text(json.dumps({"id": trial, "label": label, "at": at, "action": action}))
        os.replace(tmp, self.arm_path)  # appears whole

    def wait_hit(self, timeout: float = 90.0) -> dict[str, Any]:
        hit = Path(str(self.arm_path) + ".hit")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if hit.exists():
                return json.loads(hit.read_text())
            time.sleep(0.002)
        raise AssertionError(f"no process reached the armed point in {timeout:.0f} s\n{self.agent.tail()}")

    def release(self) -> None:
        Path(str(self.arm_path) + ".go").touch()

    def disarm(self) -> None:
        self._clear()

    # -- drivers ------------------------------------------------------------------------------
    def start_driver(self, context: str, n: int = N, pace: float = 0.0) -> Child:
        self.drivers += 1
        return Child(["load", self.address, str(self.store), context, str(n), str(CHUNK), str(pace)],
                     self.root / f"driver-{self.drivers}.log")

    @staticmethod
    def driver_fed(driver: Child) -> int:
        """Block until the driver reports its next chunk's worth of input read; items so far."""
        message = driver.read(timeout=60)
        assert "fed" in message, f"the driver finished before it was killed: {message}"
        return message["fed"]

    @staticmethod
    def driver_report(driver: Child) -> dict[str, Any]:
        """What a driver printed last (its result or error), if it got that far."""
        report: dict[str, Any] = {}
        while True:
            try:
                line = driver.lines.get(timeout=30)
            except queue.Empty:
                return report
            if line is None:
                return report
            message = json.loads(line)
            if "fed" not in message:
                report = message

    # -- checks -------------------------------------------------------------------------------
    def check(self, trial: str, since: float, context: str, *, n: int = N, expect: Optional[str] = None,
              reported: Optional[dict[str, Any]] = None, kind: str = "create_items") -> str:
        """Recover and check one trial and everything before it; return the batch's state."""
        s = self.call("settle", since=since, contexts=sorted(self.expected))
        where = f"trial {trial} (seed {SEED}): {json.dumps(s['batches'])}"
        assert s["batches"], f"no batch registered: {where}"
        assert all(b["state"] in FINAL for b in s["batches"]), f"a batch did not finish: {where}"
        mine = [b for b in s["batches"] if b["kind"] == kind]
        assert mine, where
        # a coordinator killed inside submit may leave an orphan registration besides the
        # batch the driver went on with: each is all-or-nothing, at most one committed
        completed = [b for b in mine if b["state"] == "completed"]
        assert len(completed) <= 1, where
        assert all(b["state"] in ("completed", "rolled_back") for b in mine), where
        state = "completed" if completed else "rolled_back"
        if expect is not None:
            assert state == expect, f"expected {expect}: {where}"
        if reported and reported.get("result"):
            result = reported["result"]
            assert result["state"] == state and result["success"] == (state == "completed"), (result, where)
        if kind == "create_items":
            assert s["counts"][context] == (n if state == "completed" else 0), (s["counts"], where)
            self.expected[context] = s["counts"][context]
        else:
            assert (context in s["contexts"]) == (state == "completed"), (s["contexts"], where)
        assert s["counts"] == self.expected, f"earlier batches changed: {s['counts']} != {self.expected}; {where}"
        if kind != "create_items" and state == "completed":
            self.expected[context] = 0  # a new, empty data context
        assert s["undecided"] == [] and s["decided_not_done"] == [], where
        for participant, left in s["leftovers"].items():
            assert not any(left.values()), f"{participant} kept 2PC state or locks: {left}; {where}"
        self.check_files(where)
        self.trials.append({"trial": trial, "state": state, "seconds": round(time.time() - since, 1)})
        print(f"{trial}: {state} in {time.time() - since:.1f} s")
        return state

    def check_files(self, where: str = "") -> None:
        """Every SQLite file of the store, read from disk: intact; no 2PC state in the
        participants; no batch or decision left open in the decision log."""
        files = sorted(self.store.glob("*.sqlite"))
        participants = {"catalog.sqlite", "shard-0000.sqlite", "shard-0001.sqlite"}
        assert {"coordinator.sqlite", *participants} <= {f.name for f in files}, files
        for path in files:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
            try:
                assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok", f"{path.name} {where}"
                if path.name == "coordinator.sqlite":
                    open_decisions = conn.execute("SELECT count(*) FROM decisions WHERE done=0").fetchone()[0]
                    open_batches = conn.execute(
                        "SELECT count(*) FROM batches WHERE state IN ('running','queued','pending')").fetchone()[0]
                    assert (open_decisions, open_batches) == (0, 0), f"{path.name} {where}"
                elif path.name in participants:
                    for table in ("txns", "undo", "created", "applied"):
                        left = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                        assert left == 0, f"{path.name}.{table} has {left} rows {where}"
            finally:
                conn.close()

    def close(self) -> None:
        self.release()  # a process still held at a point (a trial failed) goes on
        try:
            if self.agent.proc.poll() is None:
                self.call("shutdown", timeout=60)
        finally:
            self.agent.close()
            self.disarm()


@pytest.fixture
def rig(cluster, tmp_path):
    rig = Rig(cluster, tmp_path)
    try:
        rig.connect()
        yield rig
    finally:
        rig.close()
    rig.check_files("after the actors stopped")


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# -- the tests --------------------------------------------------------------------------------

def test_sigkill_each_process_at_each_protocol_point(rig: Rig) -> None:
    """12 trials: a SIGKILL of a worker, of the coordinator, of the driver, at each of the four
    points, each landing exactly there (the process at the point is held until the kill)."""
    rig.new_context("warmup")
    t0 = time.time()
    rig.call("start_load", tag="warmup", context="warmup", n=N, batch_size=CHUNK)
    assert rig.join("warmup")["result"]["success"]
    assert rig.check("warmup", t0, "warmup", expect="completed") == "completed"

    for index, ((point, victim), expect) in enumerate(MATRIX.items()):
        trial = f"m{index}"
        label, at = POINTS[point]
        context = rig.new_context(trial)
        info = rig.pids()
        t0 = time.time()
        rig.arm(trial, label, at)
        driver = None
        if victim == "driver":
            # paced while applying, so the driver is surely still streaming when killed there
            driver = rig.start_driver(context, pace=0.1 if point == "during apply" else 0.0)
        else:
            rig.call("start_load", tag=trial, context=context, n=N, batch_size=CHUNK)
        hit = rig.wait_hit()
        assert hit["label"].startswith(label), hit
        if victim == "worker":
            holder_is_worker = any(w["pid"] == hit["pid"] for w in info["workers"])
            pid = hit["pid"] if holder_is_worker else rig.worker_of(info, "shard-0000")
        elif victim == "coordinator":
            pid = info["coordinator"]
        else:
            pid = driver.proc.pid
        _kill(pid)
        if pid != hit["pid"]:
            rig.release()
        if driver is not None:
            driver.proc.wait(timeout=60)
            reported = rig.driver_report(driver)
            driver.close()
        else:
            reported = rig.join(trial)
        rig.check(f"{trial} {victim} killed {point}", t0, context, expect=expect, reported=reported)
    assert len(rig.trials) == 1 + len(MATRIX)


def test_sigkill_at_random_times(rig: Rig) -> None:
    """10 trials: the coordinator, a worker or the driver SIGKILLed at a random moment of a
    streaming batch (seeded: BATCHRAY_FAULT_SEED)."""
    rng = random.Random(SEED)
    plan = ["coordinator", "worker", "driver", "coordinator", "worker", "driver", "coordinator",
            "worker", "driver", "coordinator"]
    for index, victim in enumerate(plan):
        trial = f"r{index}"
        context = rig.new_context(trial)
        info = rig.pids()
        t0 = time.time()
        if victim == "driver":
            # killed while streaming: after a random number of chunks, never at the end
            driver = rig.start_driver(context, pace=0.05)
            threshold = rng.randrange(1, N // CHUNK - 2) * CHUNK
            while rig.driver_fed(driver) < threshold:
                pass
            _kill(driver.proc.pid)
            driver.proc.wait(timeout=60)
            driver.close()
            rig.check(f"{trial} driver killed after {threshold} items", t0, context, expect="rolled_back")
            continue
        # paced loads stream for about 1 s and the kill lands inside; every other coordinator
        # trial runs unpaced (about 0.5 s), so its kill may land in any phase, or after the end
        paced = victim == "worker" or index % 4 == 0
        n = N if paced else 3 * N
        rig.call("start_load", tag=trial, context=context, n=n, batch_size=CHUNK, pace=0.1 if paced else 0.0)
        delay = rng.uniform(0.1, 0.9) if paced else rng.uniform(0.05, 0.6)
        time.sleep(delay)
        pid = info["coordinator"] if victim == "coordinator" else rng.choice(info["workers"])["pid"]
        _kill(pid)
        reported = rig.join(trial)
        rig.check(f"{trial} {victim} killed after {delay:.2f} s", t0, context, n=n, reported=reported)
    assert len(rig.trials) == len(plan)


def test_crash_exits_in_recovery_paths(rig: Rig) -> None:
    """4 trials where the process dies on its own at the point (``os._exit(137)``): the
    coordinator where only recovery can finish the batch, a worker while it votes, and workers
    in the commit and rollback steps of other kinds of batch (a schema change; a load rejected
    for a bad item)."""
    info = rig.pids()
    exits = [
        # the coordinator, once the commits are delivered, before the decision is marked done
        ("coordinator", "log:done", "completed"),
        # the worker of shard-0001 while it votes: its vote is lost
        ("worker", "shard-0001:prepare", "rolled_back"),
    ]
    for index, (who, label, expect) in enumerate(exits):
        trial = f"x{index}"
        context = rig.new_context(trial)
        t0 = time.time()
        rig.arm(trial, label, 1, action="exit")
        rig.call("start_load", tag=trial, context=context, n=N, batch_size=CHUNK)
        pid = info["coordinator"] if who == "coordinator" else rig.worker_of(info, "shard-0001")
        assert rig.wait_hit()["pid"] == pid
        reported = rig.join(trial)
        rig.check(f"{trial} {who} exits at {label}", t0, context, expect=expect, reported=reported)
        info = rig.pids()

    # the catalog's worker dies in the commit of a new data context
    t0 = time.time()
    rig.arm("x-catalog", "catalog:commit", 1, action="exit")
    result = rig.call("context", name="x-schema")
    assert rig.wait_hit()["label"].startswith("catalog:commit")
    rig.check("x-catalog worker exits committing a schema batch", t0, "x-schema", expect="completed",
              reported={"result": result}, kind="create_data_context")

    # a shard's worker dies rolling back a load rejected for its last item
    context = rig.new_context("x-reject")
    t0 = time.time()
    rig.arm("x-reject", "shard-0000:abort", 1, action="exit")
    rig.call("start_load", tag="x-reject", context=context, n=N, batch_size=CHUNK, bad_at=N - 1)
    assert rig.wait_hit()["label"].startswith("shard-0000:abort")
    reported = rig.join("x-reject")
    rig.check("x-reject worker exits rolling back", t0, context, expect="rolled_back", reported=reported)
    assert len(rig.trials) == 4
