"""Kill tests of the Ray Data sink (batchray.api.raydata) on a Ray cluster of their own: a
write task that dies mid-write and is run again by Ray applies its blocks once, and a driver
SIGKILLed mid-write leaves nothing in the store (its batch is rolled back by the stall timeout),
and two drivers writing to one store at once both commit.

As in tests/test_ray_faults.py, the Ray work runs in subprocesses (tests/raydata_driver.py)
joined to the fault tests' cluster (the ``cluster`` fixture of tests/conftest.py, started with
``fault_rig.ray_cluster``), so that the kills never touch the Ray session the other tests share.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fault_rig import _ray_env, kill

pytestmark = pytest.mark.faults
DRIVER = Path(__file__).with_name("raydata_driver.py")


def run_driver(*args: str, timeout: float = 240) -> dict:
    done = subprocess.run([sys.executable, str(DRIVER), *args], capture_output=True, text=True,
                          timeout=timeout, env=_ray_env())
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0 and lines, f"driver failed ({done.returncode}):\n{done.stderr[-6000:]}"
    return json.loads(lines[-1])


def test_a_write_task_killed_mid_write_and_run_again_applies_its_blocks_once(cluster, tmp_path):
    n = 8_000  # 8 blocks of 1,000 rows, two to a write task; one task dies after its first
    flag = tmp_path / "died"
    report = run_driver("retry", cluster, str(tmp_path / "store"), str(flag), str(n))
    assert report["died"], "the write task was never killed"
    assert report["success"], report
    assert report["created"] == n and report["count"] == n and report["labels"] == n, report


def test_a_driver_killed_mid_write_leaves_nothing(cluster, tmp_path):
    store = str(tmp_path / "store")
    with open(tmp_path / "hang.log", "w") as log:
        driver = subprocess.Popen([sys.executable, str(DRIVER), "hang", cluster, store, "4000"],
                                  stdout=subprocess.PIPE, stderr=log, text=True, env=_ray_env())
        try:
            fed = {}
            for line in driver.stdout:
                if line.startswith("{") and "fed" in line:
                    fed = json.loads(line)
                    break
            assert fed, f"the driver ended before feeding:\n{(tmp_path / 'hang.log').read_text()[-6000:]}"
            kill(driver.pid)  # mid-write: one block applied, the other not yet read
        finally:
            kill(driver.pid)
            driver.wait(timeout=60)
    report = run_driver("check", cluster, store, fed["fed"])
    assert report == {"state": "rolled_back", "count": 0}, report


def test_a_write_task_that_dies_once_its_chunks_are_fed_loses_none_of_them(cluster, tmp_path):
    """A write task does not wait for its chunks' applies: they are the coordinator's once its
    feed calls return. The shards are locked and one chunk goes at a time, so the task's second
    chunk is still at the coordinator when the task dies; it is applied all the same."""
    report = run_driver("handover", cluster, str(tmp_path / "store"))
    assert report["died"], report
    assert report["success"] and report["created"] == 1000 and report["count"] == 1000, report


def test_two_drivers_writing_datasets_to_one_store_at_once_both_commit(cluster, tmp_path):
    """Two driver processes on one cluster write a Dataset each to the same store together:
    the first to connect serves the store, the second joins it; both batches commit, every row
    of each once."""
    store = str(tmp_path / "store")
    n = 6_000
    drivers = []
    logs = []
    try:
        for prefix in ("a", "b"):
            log = open(tmp_path / f"{prefix}.log", "w")
            logs.append(log)
            drivers.append(subprocess.Popen([sys.executable, str(DRIVER), "write", cluster, store, prefix, str(n)],
                                            stdout=subprocess.PIPE, stderr=log, text=True, env=_ray_env()))
        for driver, log in zip(drivers, logs):  # both connected and the context made
            lines = []
            for line in driver.stdout:
                lines.append(line)
                if line.startswith('{"ready"'):
                    break
            else:
                raise AssertionError(f"a driver failed: {lines}\n{Path(log.name).read_text()[-6000:]}")
        Path(store + ".go").touch()
        reports = []
        for driver, log in zip(drivers, logs):
            out, _ = driver.communicate(timeout=240)
            lines = [line for line in out.splitlines() if line.startswith("{")]
            assert driver.returncode == 0 and lines, f"a driver failed:\n{Path(log.name).read_text()[-6000:]}"
            reports.append(json.loads(lines[-1]))
    finally:
        for driver in drivers:
            if driver.poll() is None:
                kill(driver.pid)
                driver.wait(timeout=60)
        for log in logs:
            log.close()
    assert all(r["success"] and r["created"] == n for r in reports), reports
    assert reports[0]["txn"] != reports[1]["txn"]
    assert max(r["began"] for r in reports) < min(r["ended"] for r in reports), reports  # they overlapped
    counts = run_driver("count", cluster, store)
    assert counts == {"count": 2 * n, "labels": 2 * n, "a": n, "b": n}, counts
