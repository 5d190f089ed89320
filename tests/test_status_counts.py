"""A finished batch's status carries its true counts: ``result.totalItems`` of a streamed
create (a generator: its length is known only when the input ends) is the number of items,
on the local runtime and on Ray (the coordinator records the result in the decision log,
which ``status`` reads)."""
from __future__ import annotations

import pytest

from local_runtime import fail_nth_apply, local_client

COUNT = 20_000
ROWS = [{"name": "Rows", "attrs": [{"name": "n", "type": "numeric"}]}]


def _stream(count: int):
    return ({"n": i} for i in range(count))


def _assert_true_counts(client) -> None:
    client.create_data_context("Rows", ROWS)
    result = client.create_items("Rows", "Rows", _stream(COUNT))
    assert result.success and result.items_created == COUNT and result.total_items == COUNT
    status = client.status(result.transaction_id)
    assert status["state"] == "completed"
    assert status["result"]["totalItems"] == COUNT
    assert status["result"]["itemsCreated"] == COUNT
    assert client.wait(result.transaction_id).total_items == COUNT


def test_a_streamed_create_reports_its_total_in_status_on_the_local_runtime(tmp_path):
    with local_client(tmp_path / "store") as client:
        _assert_true_counts(client)


@pytest.mark.ray
def test_a_streamed_create_reports_its_total_in_status_on_ray(client):
    _assert_true_counts(client)


def test_an_import_that_creates_its_context_counts_its_rows_not_the_contexts_document(tmp_path):
    """A CSV's row count is known only once it is read: the batch's total is what it wrote and
    rejected, and the new context's catalog document, written in the same batch, is no item."""
    path = tmp_path / "rows.csv"
    path.write_text("n\n" + "".join(f"{i if i != 7 else 'x'}\n" for i in range(100)))
    with local_client(tmp_path / "store") as client:
        seen: list[dict] = []
        imported = client.import_file("Imported", None, path, types={"n": "numeric"}, atomic=False,
                                      progress=seen.append)
        assert imported.rows_read == 100 and imported.items_created == 99 and len(imported.errors) == 1
        assert imported.batch.total_items == 100
        assert client.status(imported.transaction_id)["result"]["totalItems"] == 100
        assert seen[-1]["phase"] == "writing" and seen[-1]["total"] == 100, seen[-1]


def test_a_batch_finished_by_recovery_has_the_same_result_in_status_as_in_wait(tmp_path):
    """Recovery records only ``{"recovered", "committed"}``; ``wait`` made the usual result of
    it (a rolled-back one with an ABORTED error), while ``status`` showed the raw record: no
    success, no state, no error (the get_batch_status tool reported no error at all)."""
    with local_client(tmp_path / "store") as client:
        # a batch registered running by a process that died before it decided anything
        client.runtime.log.add_batch("create-crashed-1", kind="create_items", ts=1, state="running")
        assert client.recover()["aborted"] == ["create-crashed-1"]
        status = client.status("create-crashed-1")
        assert status["state"] == "rolled_back"
        waited = client.wait("create-crashed-1").dump()
        assert {key: status["result"].get(key) for key in waited if key in ("success", "state", "error")} == {
            "success": False, "state": "rolled_back", "error": waited["error"]}
        assert waited["error"]["code"] == "ABORTED"
        tool = client.tool("get_batch_status", {"batchId": "create-crashed-1"})
        assert tool["error"]["code"] == "ABORTED", tool


def test_no_item_id_of_a_chunk_that_failed_whole_is_listed_as_created(tmp_path, monkeypatch):
    """A chunk that fails whole leaves one error, at one index, while its rows are a shard's
    share spread over the input: the result listed the ids of all its other rows as created
    (199 ids for 150 items). Every id listed is an item in the store."""
    with local_client(tmp_path / "store", shards=2) as client:
        client.create_data_context("Rows", ROWS)
        fail_nth_apply(client, monkeypatch, 2)
        result = client.create_items("Rows", "Rows", [{"n": i} for i in range(200)], batch_size=50, atomic=False,
                                     continue_on_error=True)
        assert result.items_created == 150 and result.errors[0].code == "INTERNAL"
        stored = {item["id"] for item in client.get_items("Rows")}
        assert len(stored) == 150 and set(result.item_ids) <= stored, len(set(result.item_ids) - stored)


def test_get_batch_status_gives_an_ended_batch_s_counts_after_the_process_that_ran_it_closed(tmp_path):
    """A batch's live progress is kept in memory by the process that ran it (the local runtime,
    the Ray progress actor): once that process closed or restarted, ``get_batch_status`` (whose
    ``includeProgress`` is on by default, ``includeResults`` off) answered ``progress: null`` for
    a batch that had ended, with no count of what it did at all. It now gives the counts the
    batch ended with, from its recorded result."""
    from batchray.api.tools import call_tool

    store = tmp_path / "store"
    with local_client(store) as client:
        client.create_data_context("Rows", [{"name": "Rows", "attrs": [{"name": "n", "type": "numeric", "min": 0}]}])
        made = client.create_items("Rows", "Rows", [{"n": 1}, {"n": -1}, {"n": 2}], atomic=False,
                                   continue_on_error=True)
        assert made.items_created == 2 and made.items_failed == 1
    with local_client(store) as reopened:
        status = call_tool(reopened, "get_batch_status", {"batchId": made.transaction_id})
    assert status["success"] is True and status["state"] == "completed", status
    progress = status["progress"]
    assert progress is not None, status
    assert (progress["batchId"], progress["total"], progress["completed"], progress["failed"], progress["state"]) == (
        made.transaction_id, 3, 2, 1, "completed")


def test_get_batch_status_of_a_batch_cancelled_part_way_counts_what_it_kept(tmp_path):
    """An atomic batch cancelled part-way keeps nothing, but ``get_batch_status`` showed the
    live counts it had reached (``completed`` of the items it had applied before the rollback,
    with an ETA), where the final progress report of the same batch says 0: an agent read
    that those items were there. An ended batch that did not complete now shows the counts it
    ended with, and no ETA."""
    from batchray.api.tools import call_tool

    with local_client(tmp_path / "store") as client:
        client.create_data_context("Rows", ROWS)
        replies: list[dict] = []

        def cancel_part_way(progress: dict) -> None:
            if not replies and progress.get("batchId") and progress.get("completed", 0) >= 3:
                replies.append(client.cancel(progress["batchId"]))

        result = client.create_items("Rows", "Rows", [{"n": i} for i in range(200)], batch_size=1,
                                     callback=cancel_part_way)
        assert replies and result.state.value == "cancelled" and client.count_items("Rows") == 0
        status = call_tool(client, "get_batch_status", {"batchId": result.transaction_id})
    progress = status["progress"]
    assert (progress["state"], progress["total"], progress["completed"], progress["etaSeconds"]) == (
        "cancelled", 200, 0, None), progress
