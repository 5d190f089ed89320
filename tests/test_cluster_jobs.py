"""batchray on real Ray clusters: ``ray start --head`` with ``ray job submit``, and a multi-node
cluster losing a node in the middle of a batch.

* A head node of this module's own (``ray start --head --block`` on loopback, its own ports and
  temp folder, in a process group of its own that the module ends — never ``ray stop``, which
  would stop every Ray on the machine) runs ``cluster/load_job.py`` submitted with
  ``ray job submit --working-dir``: the job reaches SUCCEEDED and its items are in the store.
  The same job submitted again with the same idempotency key returns the first result and
  applies nothing twice.
* Three nodes on this machine (``ray.cluster_utils.Cluster``, in a subprocess: see
  tests/cluster_driver.py) serve a PostgreSQL store with workers spread over the nodes; a node
  running a worker is removed mid-batch: the batch is all-or-nothing, the worker comes back
  elsewhere under a newer epoch, and the removed worker's epoch can no longer act
  (StaleEpochError). Needs ``BATCHRAY_TEST_PG_DSN``; skipped otherwise.

Nothing here imports Ray in the test process: the clusters, the jobs and the drivers are
subprocesses, so this module runs alone or in the whole suite (whose shared Ray session it
leaves alone).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from pg_schema import DSN as PG_DSN, own_schema

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parent.parent
ITEMS = 3_000


def _ray_env() -> dict[str, str]:
    """A head started with ``ray start`` uses token authentication when a token exists; the
    ``ray job`` CLI and drivers that join it need ``RAY_AUTH_MODE=token`` to send it."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "BATCHRAY_CRASH_FILE")}
    token_file = Path(env.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if "RAY_AUTH_MODE" not in env and (env.get("RAY_AUTH_TOKEN") or token_file.exists()):
        env["RAY_AUTH_MODE"] = "token"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Head:
    """``ray start --head --block`` in a process group of its own; ``stop()`` ends that group."""

    def __init__(self) -> None:
        self.temp = Path(tempfile.mkdtemp(prefix="brhead", dir="/tmp"))  # short: socket paths
        ports = {name: _free_port() for name in (
            "port", "dashboard-port", "ray-client-server-port", "node-manager-port", "object-manager-port",
            "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
            "metrics-export-port")}
        self.dashboard = f"http://127.0.0.1:{ports['dashboard-port']}"
        command = ["ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=4",
                   "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--temp-dir={self.temp}",
                   "--disable-usage-stats", *[f"--{k}={v}" for k, v in ports.items()]]
        self.log = open(self.temp / "head.log", "w")
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=_ray_env(),
                                     start_new_session=True, cwd=REPO)
        self._wait_up()

    def _wait_up(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"ray start exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                urllib.request.urlopen(f"{self.dashboard}/api/version", timeout=2).read()
                return
            except urllib.error.HTTPError:  # 401 without a token: the server is up
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the head did not come up in {timeout:.0f} s:\n{self.tail()}") from None
                time.sleep(0.5)

    def tail(self, chars: int = 4000) -> str:
        self.log.flush()
        return (self.temp / "head.log").read_text(errors="replace")[-chars:]

    def job(self, submission_id: str, *entrypoint: str, timeout: float = 240.0) -> tuple[str, str]:
        """Submit a job with the repository as its working dir; wait for it; ``(status, output)``."""
        run = subprocess.run(
            ["ray", "job", "submit", "--address", self.dashboard, "--submission-id", submission_id,
             "--working-dir", str(REPO), "--", *entrypoint],
            capture_output=True, text=True, env=_ray_env(), timeout=timeout, cwd=REPO,
        )
        status = subprocess.run(["ray", "job", "status", "--address", self.dashboard, submission_id],
                                capture_output=True, text=True, env=_ray_env(), timeout=60, cwd=REPO)
        said = (status.stdout + status.stderr).lower()  # e.g. "Job 'ID' succeeded"
        for state in ("SUCCEEDED", "FAILED", "STOPPED", "RUNNING", "PENDING"):
            if f"job '{submission_id}' {state.lower()}" in said or f"status: {state.lower()}" in said:
                return state, run.stdout + run.stderr
        return "UNKNOWN", run.stdout + run.stderr + status.stdout + status.stderr

    def stop(self) -> None:
        """End the head's process group: the head and everything it started, nothing else."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=5)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        self.log.close()
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def head():
    pytest.importorskip("ray")
    if shutil.which("ray") is None:
        pytest.skip("the ray command is not on PATH")
    started = Head()
    try:
        yield started
    finally:
        started.stop()


def _summary(output: str) -> dict[str, Any]:
    lines = [line for line in output.splitlines() if line.startswith('{"success"')]
    assert lines, f"the job printed no summary:\n{output[-4000:]}"
    return json.loads(lines[-1])


def _count(store: str, context: str) -> int:
    """Items of ``context`` read straight from the store (committed data only)."""
    from batchray.core.storage.backends import open_backend
    from batchray.core.storage.store import CATALOG, Catalog, ItemReader

    backend = open_backend(store)
    participants = {n: backend.open_participant(n, recover=False) for n in backend.layout.participant_names}
    log = backend.open_log()
    try:
        context_id, _ = Catalog(participants[CATALOG]).context(context)
        return ItemReader(backend.item_sources(participants), backend.gate(), log).count(context_id)
    finally:
        for participant in participants.values():
            participant.close()
        log.close()
        backend.close()


def test_a_job_loads_a_batch_and_a_resubmission_applies_nothing_twice(head, tmp_path):
    store = str(tmp_path / "store")
    load = ["python", "cluster/load_job.py", "--store", store, "--address", "auto", "--context", "People",
            "--generate", str(ITEMS), "--idempotency-key", "people-load-1", "--batch-size", "500"]
    state, output = head.job(f"load-{uuid.uuid4().hex[:8]}", *load)
    assert state == "SUCCEEDED", output[-4000:]
    first = _summary(output)
    assert first["success"] and first["itemsCreated"] == ITEMS and not first["replayed"], first
    assert _count(store, "People") == ITEMS

    # the job resubmitted (say, after its driver's node failed): the first result, nothing new
    state, output = head.job(f"load-again-{uuid.uuid4().hex[:8]}", *load)
    assert state == "SUCCEEDED", output[-4000:]
    again = _summary(output)
    assert again["replayed"] and again["transactionId"] == first["transactionId"], again
    assert again["itemsCreated"] == ITEMS
    assert _count(store, "People") == ITEMS


@pytest.mark.postgres
@pytest.mark.skipif(not PG_DSN, reason="workers on several nodes need a store every node reaches: "
                                       "set BATCHRAY_TEST_PG_DSN (eval \"$(bash .ci/postgres.sh start)\")")
def test_a_node_removed_mid_batch(tmp_path):
    log = tmp_path / "driver.log"
    with own_schema("nodes") as schema:
        url = schema.url
        with open(log, "w") as stderr:
            run = subprocess.run([sys.executable, str(REPO / "tests" / "cluster_driver.py"), "node-removal", url],
                                 stdout=subprocess.PIPE, stderr=stderr, text=True, env=_ray_env(), timeout=280,
                                 cwd=REPO)
        lines = run.stdout.strip().splitlines()
        assert lines, f"no reply from the driver ({run.returncode}):\n{log.read_text()[-4000:]}"
        reply = json.loads(lines[-1])
        assert reply["ok"], f"{reply['error']}\n{reply.get('trace')}\n{log.read_text()[-3000:]}"
        out = reply["value"]
        # the workers were spread round-robin, one per node, the first next to the driver (head)
        assert len(set(out["workerNodes"])) == len(out["workerNodes"]) == 2, out
        assert out["workerNodes"][0] == out["nodes"]["head"], out
        # all or nothing
        assert out["state"] in ("completed", "rolled_back"), out
        assert out["count"] == (30_000 if out["state"] == "completed" else 0), out
        # the removed worker came back on another node, with a newer epoch for each of its participants
        assert out["victimNode"] in out["workerNodes"] and out["victimNode"] != out["nodes"]["head"]
        assert out["replacement"]["node"] != out["victimNode"]
        for name, epoch in out["victimEpochs"].items():
            assert out["replacement"]["epochs"][name] > epoch
        # and its old epoch cannot act any more
        assert out["staleSteps"] and all(verdict == "StaleEpochError" for _, _, verdict in out["staleSteps"]), out
        assert out["prepared"] == []
        for name, counts in out["leftovers"].items():
            assert counts["txns"] == 0 and counts.get("prepared", 0) == 0, (name, counts)
