"""A batch's progress on the in-process runtime (``runtime="local"``): ``status`` and the
``get_batch_status`` tool show its counts while another thread runs it and once it ended, as
the coordinator's status does (batchray.core.run.progress)."""
from __future__ import annotations

import threading
import time

from local_runtime import local_client

PEOPLE = [{"name": "People", "attrs": [{"name": "name"}]}]


def test_status_shows_a_batchs_progress_while_it_runs_and_once_it_ended(tmp_path, monkeypatch):
    with local_client(tmp_path / "store", shards=2) as client:
        assert client.create_data_context("People", PEOPLE).success
        applied, release, seen = threading.Event(), threading.Event(), []
        for participant in client.runtime.participants.values():
            apply = participant.apply

            def second_waits(ref, chunk, prepare=False, commit=False, _apply=apply):
                if seen:  # every chunk after the first waits until the status is read
                    applied.set()
                    assert release.wait(20)
                seen.append(chunk)
                return _apply(ref, chunk, prepare=prepare, commit=commit)

            monkeypatch.setattr(participant, "apply", second_waits)
        out: dict = {}
        rows = [{"name": f"p{i}"} for i in range(30)]
        thread = threading.Thread(target=lambda: out.setdefault(
            "result", client.create_items("People", None, rows, batch_size=10, atomic=True)))
        thread.start()
        assert applied.wait(20)
        batch_id = next(b["batchId"] for b in client.status() if b["state"] == "running")
        running = client.tool("get_batch_status", {"batchId": batch_id})
        release.set()
        thread.join(20)
        assert out["result"].success
        progress = running["progress"]
        assert (progress["state"], progress["total"], progress["completed"], progress["failed"]) == (
            "running", 30, 10, 0)
        done = client.status(batch_id)["progress"]
        assert (done["state"], done["completed"], done["kind"]) == ("completed", 30, "create_items")
        assert "progress" not in client.tool("get_batch_status", {"batchId": batch_id, "includeProgress": False})


def test_a_batch_cancelled_part_way_shows_no_eta(tmp_path, monkeypatch):
    """A batch that ended before its total (cancelled here) has nothing left to come: its
    progress kept an ETA worked out from the items it never got to (35 of 50 at its last rate)."""
    with local_client(tmp_path / "store", shards=2) as client:
        assert client.create_data_context("People", PEOPLE).success
        applied, reached, release = [], threading.Event(), threading.Event()
        for participant in client.runtime.participants.values():
            apply = participant.apply

            def third_waits(ref, chunk, prepare=False, commit=False, _apply=apply):
                applied.append(chunk)
                if len(applied) == 3:  # two chunks applied, the third held until the cancel
                    reached.set()
                    assert release.wait(20)
                return _apply(ref, chunk, prepare=prepare, commit=commit)

            monkeypatch.setattr(participant, "apply", third_waits)
        out: dict = {}
        rows = [{"name": f"p{i}"} for i in range(50)]
        thread = threading.Thread(target=lambda: out.setdefault(
            "result", client.create_items("People", None, rows, batch_size=5)))
        thread.start()
        assert reached.wait(20)
        batch_id = next(b["batchId"] for b in client.status() if b["state"] == "running")
        assert client.cancel(batch_id)["success"]
        time.sleep(0.1)  # a rate is read over 50 ms at least: the held chunk's report gives one
        release.set()
        thread.join(20)
        assert out["result"].state.value == "cancelled"
        progress = client.status(batch_id)["progress"]
        assert progress["state"] == "cancelled" and progress["total"] == 50, progress
        assert 0 < progress["completed"] < 50 and progress["throughput"] > 0, progress
        assert progress["etaSeconds"] is None, progress


def test_a_batch_run_again_after_a_lost_lock_race_reports_the_throughput_of_its_new_attempt(tmp_path, monkeypatch):
    """An atomic batch that lost a lock race runs again and its counts start over; its
    throughput was still worked out from the batch's start, the time of the rolled-back attempt
    included, so that it read too low and its ETA too long (the coordinator's progress starts
    its rate over with the attempt)."""
    from batchray.core.txn.attempts import MARK

    with local_client(tmp_path / "store", shards=2) as client:
        assert client.create_data_context("Bank", [{"name": "Accounts", "attrs": [
            {"name": "balance", "type": "numeric"}]}]).success
        ids = client.create_items("Bank", "Accounts", [{"balance": 1} for _ in range(6)], batch_size=3).item_ids
        last = max(client.layout.shard_names)
        held = next(i for i in ids if client.layout.shard_of(i) == last)
        first = next(i for i in ids if client.layout.shard_of(i) != last)
        client.runtime.participants[last].locks.acquire("batch-holding-it", 1, [held])  # an older batch
        calls: list = []
        for participant in client.runtime.participants.values():
            def slow_first_attempt(ref, chunk, prepare=False, commit=False, _apply=participant.apply):
                calls.append(ref.txn)
                if len(calls) == 1:
                    time.sleep(3.0)  # the first attempt takes 3 s at least
                if MARK in ref.txn:  # the batch runs again: the older one has let go
                    client.runtime.participants[last].locks.release_all("batch-holding-it")
                return _apply(ref, chunk, prepare=prepare, commit=commit)

            monkeypatch.setattr(participant, "apply", slow_first_attempt)
        seen: list = []
        started = time.monotonic()
        result = client.update_items("Bank", [
            {"selector": {"itemId": first}, "values": {"balance": 7}},
            {"selector": {"query": "balance > 0"}, "values": {"balance": "=balance + 1"}},
        ], callback=lambda progress: seen.append((time.monotonic(), progress)))
        assert result.success and any(MARK in txn for txn in calls), (result, calls)
        at, last_running = [(t, p) for t, p in seen if p["state"] == "running"][-1]
        assert last_running["completed"] == 7, seen  # reported by the second attempt
        # the second attempt began 3 s after the start at least: over the batch's whole time
        # the rate is below what this bound allows, over the attempt's own it is above it
        assert last_running["throughput"] > 7 / (at - started - 1.5), (at - started, last_running)
