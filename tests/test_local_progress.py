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
