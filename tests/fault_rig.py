"""The rig of the kill and pause tests on Ray (tests/test_ray_faults.py, tests/test_bank_faults.py,
tests/test_ray_crash_sweep.py, tests/test_pause_sweep.py, tests/bank_soak.py); not a test module
itself. In the suite their modules share one cluster (the ``cluster`` fixture of
tests/conftest.py), each on stores of its own.

Why the Ray work runs in subprocesses: these tests need a Ray cluster of their own (their kills
must not touch the shared session other tests use), and a process can be connected to one Ray
cluster only. The pytest process may already hold the shared session (``ray_session``), and
``Cluster.shutdown()`` resets process-wide Ray state, so the test processes never import Ray:
the cluster, a long-lived driver (the "agent", which loads and inspects) and the drivers that
get killed are subprocesses (``tests/fault_driver.py``). The test process sends the SIGKILLs
itself and reads the store's files directly.

* :class:`Child`: one subprocess of fault_driver.py, spoken to in JSON lines;
* :func:`ray_cluster`: a Ray cluster of its own, in a subprocess, for a ``with`` block;
* :class:`Rig`: one store on that cluster, the agent that drives and inspects it, crash points
  armed through the trigger file (:mod:`batchray.core.txn.crashpoints`), and the checks after recovery;
* :func:`kill`: a SIGKILL that tolerates a process already gone.
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional

DRIVER = Path(__file__).with_name("fault_driver.py")
N = 20_000  # items per trial
CHUNK = 2_000  # items per chunk: 5 chunks per shard
STALL_TIMEOUT = 5.0  # seconds without input before a streaming batch is rolled back
FINAL = {"completed", "failed", "rolled_back", "cancelled"}
SEED = int(os.environ.get("BATCHRAY_FAULT_SEED", "20261129"))


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
    """A subprocess of fault_driver.py (or ``script``) whose stdout lines are read by a thread (so reads can
    time out); its stderr goes to a log file, quoted when a test fails."""

    def __init__(self, args: list[str], log: Path, script: Path = DRIVER, own_group: bool = False) -> None:
        self.log = log
        self._log_handle = open(log, "w")
        # own_group: the child leads a process group of its own, which a test can kill whole
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._log_handle, env=_ray_env(), text=True, bufsize=1, start_new_session=own_group,
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



@contextlib.contextmanager
def ray_cluster(logs: Path) -> Iterator[str]:
    """A Ray cluster of its own (one head node, 4 CPUs) in a subprocess; yields its address.
    Leaving the block closes the subprocess's stdin, and it shuts the cluster down."""
    logs.mkdir(parents=True, exist_ok=True)
    child = Child(["cluster"], logs / "cluster.log")
    try:
        yield child.read(timeout=120)["address"]
    finally:
        child.close(timeout=120)


class Rig:
    """One store on the cluster, the agent that drives and inspects it, and the bookkeeping of
    the trials run on it: what every data context must hold from now on."""

    def __init__(self, address: str, root: Path, store: Optional[str] = None) -> None:
        """``store``: a store URL (a PostgreSQL one); default a SQLite store in ``root/store``."""
        self.address = address
        self.root = root
        self.store = store or root / "store"
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

    def connect(self, workers: int = 2, shards: int = 2) -> dict[str, Any]:
        """Start the store's actors with the crash-point trigger file in their environment."""
        env = {"BATCHRAY_CRASH_FILE": str(self.arm_path)}
        return self.call("connect", env=env, stall_timeout=STALL_TIMEOUT, workers=workers, shards=shards)

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

    def arm(self, trial: str, label: str, at: int = 1, action: str = "hold", *, pid: Optional[int] = None,
            writes: bool = False) -> None:
        """Arm the ``at``-th crash point whose label starts with ``label``; ``pid``: counted in
        that process only; ``writes``: durable writes only (see :mod:`batchray.core.txn.crashpoints`)."""
        self._clear()
        spec: dict[str, Any] = {"id": trial, "label": label, "at": at, "action": action}
        if pid is not None:
            spec["pid"] = pid
        if writes:
            spec["writes"] = True
        tmp = Path(str(self.arm_path) + ".tmp")
        tmp.write_text(json.dumps(spec))
        os.replace(tmp, self.arm_path)  # appears whole

    def hit(self) -> Optional[dict[str, Any]]:
        """The crash point that fired since the last :meth:`arm`, if one did."""
        try:
            return json.loads(Path(str(self.arm_path) + ".hit").read_text())
        except (FileNotFoundError, ValueError):
            return None

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
        participants = {"catalog.sqlite", *(f.name for f in files if f.name.startswith("shard-"))}
        assert {"coordinator.sqlite", "catalog.sqlite", "shard-0000.sqlite"} <= {f.name for f in files}, files
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


def kill(pid: int) -> None:
    """SIGKILL ``pid``; a process already gone is fine."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


