"""What a batch's progress callback hears, on the in-process runtime (no Ray): the last call
is always the batch's final counts and state, even when those are below what it reported while
it ran (a rolled-back batch), and a tool's ``progressCallback`` snapshots end with it."""
from __future__ import annotations

from local_runtime import fail_nth_apply, local_client

ROWS = [{"name": "Rows", "attrs": [{"name": "n", "type": "numeric"}]}]


def _rows(count: int, bad: int) -> list[dict]:
    return [{"n": i if i != bad else "not a number"} for i in range(count)]


def test_the_callback_of_a_rolled_back_batch_ends_with_its_final_state(tmp_path):
    with local_client(tmp_path / "store", shards=2) as client:
        assert client.create_data_context("C", ROWS).success
        seen: list[dict] = []
        result = client.create_items("C", "Rows", _rows(1000, bad=900), batch_size=100, callback=seen.append)
        assert result.state.value == "rolled_back" and client.count_items("C") == 0
        assert any(p["completed"] > 0 for p in seen[:-1]), seen  # chunks applied before the bad one
        assert seen[-1]["state"] == "rolled_back", seen[-1]
        assert seen[-1]["completed"] == 0 and seen[-1]["failed"] == 1, seen[-1]
        assert all(p["state"] == "running" for p in seen[:-1])


def test_a_tools_progress_snapshots_end_with_the_rolled_back_state(tmp_path):
    with local_client(tmp_path / "store", shards=2) as client:
        assert client.create_data_context("C", ROWS).success
        items = [{"values": row} for row in _rows(1000, bad=900)]
        payload = client.tool("batch_create_items", {"dataContextName": "C", "collectionName": "Rows", "items": items,
                                                     "options": {"progressCallback": True, "batchSize": 100,
                                                                 "validateAll": False}})
        assert payload["success"] is False
        last = payload["progress"][-1]
        assert last["state"] == "rolled_back" and last["completed"] == 0, payload["progress"]


def test_an_update_by_query_reports_no_eta_and_its_bar_no_total_past_the_selectors(tmp_path):
    """An update's plan counts its selectors (here one query, selecting 1000 items): its
    progress gives no ETA once the count passes that total (it was negative), and its bar
    counts without a total (it showed 1000 of 1)."""
    from batchray.api.progress import ProgressDisplay

    with local_client(tmp_path / "store", shards=2) as client:
        assert client.create_data_context("C", ROWS).success
        assert client.create_items("C", "Rows", [{"n": i} for i in range(1000)]).success
        seen: list[dict] = []
        result = client.update_items("C", [{"selector": {"query": "n >= 0"}, "values": {"n": 1}}],
                                     callback=seen.append)
        assert result.items_updated == 1000
        running = [p for p in seen if p["state"] == "running"]
        assert running and running[-1]["completed"] == 1000 and running[-1]["total"] == 1
        assert all(p["etaSeconds"] is None for p in running if p["completed"] + p["failed"] > p["total"]), running
        display = ProgressDisplay(1, "update_items", bar=True)
        assert display.bar.total is None  # from the start: it showed 0/1 before the first report
        totals = []
        for p in running:
            display.update(p)
            totals.append(display.bar.total)
        assert totals == [None] * len(running) and display.bar.n == 1000  # never the selectors' count
        display.close(result)
        created = ProgressDisplay(10, "create_items", bar=True)
        created.update({"completed": 4, "failed": 0, "total": 10})
        assert created.bar.total == 10
        created.update({"completed": 12, "failed": 0, "total": 10})  # past its total: counted without one
        created.update({"completed": 14, "failed": 0, "total": 10})
        assert created.bar.total is None and created.bar.n == 14
        created.bar.close()


def test_the_final_counts_tell_every_failed_item_past_the_errors_listed(tmp_path, monkeypatch):
    """A result lists at most 1000 errors, and one error for a chunk that failed whole: the
    callback's final ``failed`` was the length of that list (1000 after 1500 rejected items, 1
    for a failed chunk of 50), below what it reported while the batch ran, and a stream's
    ``totalItems`` counted a failed chunk as one item. ``itemsFailed`` counts them all."""
    with local_client(tmp_path / "store", shards=2) as client:
        assert client.create_data_context("C", ROWS).success
        seen: list[dict] = []
        rows = [{"n": i if i % 2 == 0 else "x"} for i in range(3000)]
        result = client.create_items("C", "Rows", rows, batch_size=500, atomic=False, continue_on_error=True,
                                     callback=seen.append)
        assert (result.items_created, result.items_failed, len(result.errors)) == (1500, 1500, 1000)
        assert seen[-2]["failed"] == seen[-1]["failed"] == 1500, seen[-2:]
        assert "Failed" in result._repr_html_()

        fail_nth_apply(client, monkeypatch, 2)
        seen.clear()
        stream = client.create_items("C", "Rows", ({"n": i} for i in range(200)), batch_size=50, atomic=False,
                                     continue_on_error=True, callback=seen.append)
        assert (stream.items_created, stream.items_failed, len(stream.errors)) == (150, 50, 1), stream
        assert stream.total_items == 200
        assert seen[-1]["failed"] == 50 and seen[-1]["completed"] == 150, seen[-1]


def test_a_finished_bar_shows_no_eta(tmp_path):
    """The bar kept the last ETA a running batch reported: a finished batch's bar read
    ``100% ... eta=2s``."""
    from batchray.api.progress import ProgressDisplay

    with local_client(tmp_path / "store", shards=2) as client:
        assert client.create_data_context("C", ROWS).success
        result = client.create_items("C", "Rows", [{"n": i} for i in range(10)])
        display = ProgressDisplay(10, "create_items", bar=True)
        display.update({"completed": 4, "failed": 0, "total": 10, "etaSeconds": 2.4})
        assert "eta=2s" in str(display.bar)
        display.close(result)
        assert display.bar.n == 10 and "eta" not in str(display.bar), str(display.bar)
