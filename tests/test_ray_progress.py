"""The progress actor outlives the coordinator (both are detached; Ray restarts the coordinator
alone): what it shows of a batch that a killed coordinator left in the middle.

The restarted coordinator rolls the batch back (presumed abort) and the log, ``wait`` and the
batch's status say so; its progress said ``running`` for good, with the throughput it last had
and an ETA, and the progress actor counted it among the running batches (the
``batchray_batches_running`` gauge) and in the throughput gauge until it was itself restarted.
"""
from __future__ import annotations

import os
import signal
import time

import pytest

pytestmark = pytest.mark.ray


def test_a_batch_a_killed_coordinator_left_ends_in_its_progress_too(make_client):
    import ray

    from actors.coordinator import NAMESPACE, actor_prefix

    client = make_client("killed", workers=2, shards=2, shard_apply_delay=0.2)
    client.create_data_context("R", [{"name": "R", "attrs": [{"name": "n", "type": "numeric"}]}])
    pid = client.info()["pid"]
    batch = client.create_items("R", "R", ({"n": i} for i in range(40_000)), batch_size=100, wait=False)
    deadline = time.monotonic() + 60
    while not (client.status(batch).get("progress") or {}).get("completed"):
        assert time.monotonic() < deadline, "the batch applied nothing in 60 s"
        time.sleep(0.1)

    os.kill(pid, signal.SIGKILL)
    result = client.wait(batch)  # answered by the restarted coordinator, from the log
    assert not result.success and result.state.value == "rolled_back", result
    assert client.info()["pid"] != pid

    status = client.status(batch)
    assert status["state"] == "rolled_back"
    assert status["progress"]["state"] == "rolled_back", status["progress"]
    progress = ray.get_actor(f"{actor_prefix(str(client.layout.root))}-progress", namespace=NAMESPACE)
    assert ray.get(progress.running_batches.remote()) == []  # out of the gauges too

    # a batch run by the restarted coordinator is counted as usual
    done = client.create_items("R", "R", [{"n": 1}, {"n": 2}])
    assert done.success and client.status(done.transaction_id)["progress"]["state"] == "completed"
    assert ray.get(progress.running_batches.remote()) == []


def test_a_progress_actor_that_is_gone_fails_no_batch_and_no_status(make_client):
    """Progress is telemetry: with the store's progress actor gone for good (killed without a
    restart), a batch's status failed (the coordinator's call to it raised), and so did every
    streamed batch whose driver showed progress (it reads the status as it feeds): the batch was
    rolled back. They run and answer as before, without progress."""
    import ray

    from actors.coordinator import NAMESPACE, actor_prefix

    client = make_client("no-progress", workers=2, shards=2)
    client.create_data_context("R", [{"name": "R", "attrs": [{"name": "n", "type": "numeric"}]}])
    progress = ray.get_actor(f"{actor_prefix(str(client.layout.root))}-progress", namespace=NAMESPACE)
    ray.kill(progress, no_restart=True)
    seen: list = []
    result = client.create_items("R", "R", ({"n": i} for i in range(20_000)), batch_size=100, callback=seen.append)
    assert result.success and result.items_created == 20_000, result
    assert client.count_items("R") == 20_000
    assert seen and seen[-1]["completed"] == 20_000 and seen[-1]["state"] == "completed", seen[-1:]
    status = client.status(result.transaction_id)
    assert status["state"] == "completed" and status["progress"] is None, status
