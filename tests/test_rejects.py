"""Dead-letter files (rejects=, options.rejectsPath) and reject limits, on the in-process runtime."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from batchray.errors import ValidationError
from tests.local_runtime import fail_nth_apply, local_client

SCHEMA = [{"name": "People", "attrs": [{"name": "name"}, {"name": "age", "type": "numeric", "min": 0}]}]


@pytest.fixture
def client(tmp_path):
    c = local_client(tmp_path / "store", shards=2, io_root=tmp_path)
    c.create_data_context("P", collections=SCHEMA)
    yield c
    c.close()


def _rows(n=20, bad=(3, 11)):
    return [{"name": f"p{i}", "age": -1 if i in bad else i} for i in range(n)]


def test_rejects_round_trip_into_corrected_reload(client, tmp_path):
    out = tmp_path / "bad.jsonl"
    result = client.create_items("P", "People", _rows(), atomic=False, continue_on_error=True, rejects=out)
    assert result.items_created == 18
    frame = pd.read_json(out, lines=True)
    assert list(frame["index"]) == [3, 11]
    assert set(frame.columns) == {"index", "row", "values", "code", "field", "message"}
    assert list(frame["field"]) == ["age", "age"]
    fixed = [{**values, "age": 1} for values in frame["values"]]
    assert client.create_items("P", "People", fixed).success
    assert sorted(i["values"]["name"] for i in client.get_items("P")) == sorted(f"p{i}" for i in range(20))


def test_rejects_of_a_stream_carry_their_values(client, tmp_path):
    out = tmp_path / "bad.parquet"
    result = client.create_items("P", "People", (row for row in _rows()), atomic=False, rejects=out)
    assert result.items_created == 18
    frame = pd.read_parquet(out)
    assert list(frame["index"]) == [3, 11]
    assert [json.loads(v)["name"] for v in frame["values"]] == ["p3", "p11"]


def test_update_rejects_keep_the_whole_update(client, tmp_path):
    client.create_items("P", "People", _rows(5, bad=()))
    out = tmp_path / "upd.jsonl"
    with pytest.raises(Exception):
        client.update_items("P", [{"selector": {"query": "age >= 0"}, "values": {"age": "x"}}], rejects=out)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0]["index"] == 0 and lines[0]["values"]["selector"] == {"query": "age >= 0"}


def test_reject_limit_fails_a_non_atomic_batch(client):
    """Over the limit, a batch that keeps its valid items fails whole, decided before anything
    commits (PostgreSQL's REJECT_LIMIT); at the limit it commits its valid items."""
    result = client.create_items("P", "People", _rows(), atomic=False, reject_limit=1)
    assert not result.success and result.state.value == "failed"
    assert result.error["details"]["reason"] == "reject_limit"
    assert client.count_items("P") == 0 and result.items_created == 0, "nothing of a failed batch stays"
    ok = client.create_items("P", "People", _rows(), atomic=False, reject_limit=2)
    assert ok.error is None and ok.items_created == 18 and client.count_items("P") == 18
    over_ratio = client.create_items("P", "People", _rows(), atomic=False, reject_ratio=0.05)
    assert over_ratio.error["details"]["reason"] == "reject_limit" and client.count_items("P") == 18


def test_a_chunk_that_fails_whole_counts_all_its_items_against_the_reject_limit(client, monkeypatch):
    """A chunk that fails as a whole rejects every item it holds: a batch whose one failed chunk
    of 5 items is past a limit of 2 fails whole. It used to count as one rejected item, and the
    batch committed the rest, ``completed``, with 5 items failed."""
    fail_nth_apply(client, monkeypatch, 2)
    result = client.create_items("P", "People", _rows(20, bad=()), atomic=False, continue_on_error=True,
                                 batch_size=5, reject_limit=2)
    assert result.items_failed == 5
    assert not result.success and result.state.value == "failed", result
    assert result.error["details"]["reason"] == "reject_limit" and result.error["details"]["rejected"] == 5
    assert client.count_items("P") == 0 and result.items_created == 0, "nothing of a failed batch stays"


def test_reject_ratio_on_an_atomic_batch_rolls_back(client, tmp_path):
    out = tmp_path / "bad.jsonl"
    result = client.create_items("P", "People", (r for r in _rows()), atomic=True, reject_ratio=0.05, rejects=out)
    assert not result.success and result.state.value == "rolled_back"
    assert client.count_items("P") == 0
    assert len(out.read_text().splitlines()) == 2


def test_tool_rejects_path_under_io_root(client, tmp_path):
    items = [{"values": r} for r in _rows()]
    args = {"dataContextName": "P", "collectionName": "People", "items": items,
            "options": {"atomic": False, "continueOnError": True, "validateAll": False, "rejectsPath": "dead.jsonl"}}
    payload = client.tool("batch_create_items", args)
    assert payload["itemsCreated"] == 18
    assert len((tmp_path / "dead.jsonl").read_text().splitlines()) == 2
    again = client.tool("batch_create_items", args)  # an existing file is refused before anything runs
    assert again["success"] is False and again["error"]["code"] == "CONFLICT"
    outside = client.tool("batch_create_items", {**args, "options": {**args["options"], "rejectsPath": "../x.jsonl"}})
    assert outside["success"] is False
    limited = client.tool("batch_create_items", {**args, "options": {**args["options"], "rejectsPath": "d2.jsonl",
                                                                     "rejectLimit": 0}})
    assert limited["success"] is False and limited["error"]["details"]["reason"] == "reject_limit"


def test_import_rejects(client, tmp_path):
    src = tmp_path / "people.csv"
    src.write_text("name,age\n" + "\n".join(f"p{i},{-1 if i == 2 else i}" for i in range(6)) + "\n")
    out = tmp_path / "imp.jsonl"
    result = client.import_file("P", "People", src, atomic=False, rejects=out)
    assert result.items_created == 5
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["index"] for line in lines] == [2] and lines[0]["values"]["name"] == "p2"


@pytest.mark.parametrize("source", ["list", "generator"])
def test_a_non_atomic_batch_that_does_not_continue_on_error_sends_no_chunk_after_its_first_rejected_item(
        client, source):
    # 40 rows in chunks of 5, the rejected ones in the second and fifth chunks: the in-process
    # runtime applies one chunk at a time, so the first two chunks are all that is sent
    rows = _rows(40, bad=(7, 22))
    result = client.create_items("P", "People", rows if source == "list" else iter(rows), atomic=False,
                                 batch_size=5, continue_on_error=False)
    assert not result.success and result.state == "failed"
    assert result.error["code"] == "STOPPED_ON_ERROR", result.error
    assert [e.index for e in result.errors] == [7]
    names = sorted(int(i["values"]["name"][1:]) for i in client.get_items("P", limit=None))
    assert names == [i for i in range(10) if i != 7]
    assert result.items_created == 9 and result.item_ids == []
    # the same batch continuing on error keeps every good row and reports both rejected ones
    kept = client.create_items("P", "People", rows, atomic=False, batch_size=5, continue_on_error=True)
    assert not kept.success and kept.error is None and [e.index for e in kept.errors] == [7, 22]
    assert kept.items_created == 38 and client.count_items("P") == 9 + 38


def test_an_update_that_does_not_continue_on_error_stops_too(client):
    created = client.create_items("P", "People", _rows(12, bad=()), batch_size=4)
    ids = created.item_ids
    # the second update's value is computed below the minimum when it is applied
    updates = [{"selector": {"itemId": i}, "values": {"age": "=age - 100" if n == 1 else 100}} for n, i in enumerate(ids)]
    result = client.update_items("P", updates, atomic=False, batch_size=4, continue_on_error=False)
    assert result.error["code"] == "STOPPED_ON_ERROR" and [e.index for e in result.errors] == [1]
    ages = {i["id"]: i["values"]["age"] for i in client.get_items("P", limit=None)}
    changed = [i for i in ids if ages[i] == 100]
    # an update's chunks are cut per shard: the chunk with the rejected item kept its good
    # ones, and the chunks after it were never sent
    assert result.items_updated == len(changed) and 0 < len(changed) < 11


def test_an_import_over_a_reject_limit_fails_whole_before_it_commits(client, tmp_path):
    """``import_file`` and ``batch_import`` take the reject limits into the import's batch, as
    ``create_items`` does: over a limit nothing is stored (the rejects file still lists the
    rejected rows); at the limit the valid rows commit."""
    src = tmp_path / "people.csv"
    src.write_text("name,age\na,1\nb,xx\nc,3\nd,yy\n")
    for options in ({"reject_limit": 0}, {"reject_limit": 1}, {"reject_ratio": 0.25}):
        out = tmp_path / "imp.jsonl"
        result = client.import_file("P", "People", src, atomic=False, create=False, rejects=out, **options)
        assert not result.success and result.state == "failed" and result.items_created == 0, options
        assert result.error["details"]["reason"] == "reject_limit"
        assert client.count_items("P") == 0, f"nothing of a failed import stays ({options})"
        assert [json.loads(line)["values"]["name"] for line in out.read_text().splitlines()] == ["b", "d"]
    args = {"dataContextName": "P", "collectionName": "People", "path": "people.csv",
            "options": {"atomic": False, "create": False, "rejectLimit": 1}}
    payload = client.tool("batch_import", args)
    assert payload["success"] is False and payload["error"]["details"]["reason"] == "reject_limit"
    assert client.count_items("P") == 0
    with pytest.raises(ValidationError):
        client.import_file("P", "People", src, atomic=False, reject_ratio=2)
    ok = client.import_file("P", "People", src, atomic=False, create=False, reject_limit=2)
    assert ok.error is None and ok.items_created == 2 and client.count_items("P") == 2


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_a_malformed_line_of_an_import_is_a_reject_with_its_row_number(client, tmp_path, suffix):
    """A line that cannot be read has no index and no values: its reject names the file's row
    (a CSV's header is row 1), and the rows that were read keep their indexes, read back
    by pandas (JSON Lines: ``lines=True``; Parquet: through pyarrow)."""
    src = tmp_path / "people.csv"
    src.write_text("name,age\np0,0\np1,1,extra\np2,-1\np3,3\n")
    out = tmp_path / f"imp{suffix}"
    result = client.import_file("P", "People", src, atomic=False, rejects=out)
    assert result.items_created == 2
    frame = pd.read_json(out, lines=True) if suffix == ".jsonl" else pd.read_parquet(out)
    assert list(frame.columns) == ["index", "row", "values", "code", "field", "message"]
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    malformed = [r for r in records if r["code"] == "MALFORMED_ROW"]
    invalid = [r for r in records if r["code"] != "MALFORMED_ROW"]
    assert [(r["index"], r["row"], r["values"]) for r in malformed] == [(None, 3, None)]
    assert [r["row"] for r in invalid] == [None] and len(invalid) == 1
    values = invalid[0]["values"]
    assert (json.loads(values) if isinstance(values, str) else values)["name"] == "p2"


@pytest.mark.parametrize("depth", [300, 50_000])
def test_a_value_nested_past_what_json_holds_is_its_rows_reject_alone(client, tmp_path, depth):
    """A rejected row's values travel with its error into the shard's record and the rejects
    file: a list nested deeper than JSON encoders hold (orjson: 254 levels), or than the
    interpreter's stack, failed that write and the rest of its chunk with it (the valid rows
    were not created, the error was INTERNAL). Now the row is rejected alone, its value written
    down to ``MAX_NESTING`` levels and a text beyond, and pandas reads the rejects file."""
    from batchray.errors import MAX_NESTING

    nested = "x"
    for _ in range(depth):
        nested = [nested]
    out = tmp_path / "deep.jsonl"
    rows = [{"name": "a", "age": 1}, {"name": nested, "age": 2}, {"name": "c", "age": 3}]
    result = client.create_items("P", "People", rows, atomic=False, continue_on_error=True, rejects=out)
    assert result.items_created == 2 and [(e.index, e.field, e.code) for e in result.errors] == [(1, "name", "INVALID_VALUE")]
    assert sorted(i["values"]["name"] for i in client.get_items("P")) == ["a", "c"]
    written = pd.read_json(out, lines=True)["values"][0]["name"]
    for _ in range(MAX_NESTING - 2):  # the row's values are level 1, its name's list level 2
        written = written[0]
    assert written == ["<list nested deeper than 64 levels>"]


def test_a_tool_call_retried_under_its_idempotency_key_answers_the_first_result_and_its_rejects(client, tmp_path):
    """An agent retries a call whose answer it lost: under the same idempotency key the retry
    runs nothing and answers the first batch's result, and the rejects file the first call wrote
    stays as it is, every rejected item in it (it was refused as existing, so the retry failed;
    written again from the recorded result, it would keep the first 1,000 of 1,500). A new key is
    still refused an existing file, before anything runs."""
    items = [{"values": r} for r in _rows(3000, bad=range(1, 3000, 2))]
    options = {"atomic": False, "continueOnError": True, "rejectsPath": "dead.jsonl", "idempotencyKey": "load-1"}
    args = {"dataContextName": "P", "collectionName": "People", "items": items, "options": options}
    first = client.tool("batch_create_items", args)
    written = (tmp_path / "dead.jsonl").read_text()
    assert first["itemsCreated"] == 1500 and len(written.splitlines()) == 1500  # rejected ones: success is false
    again = client.tool("batch_create_items", args)
    assert again.get("error", {}).get("code") != "CONFLICT", again
    assert again["transactionId"] == first["transactionId"] and again["itemsCreated"] == 1500, again
    assert (tmp_path / "dead.jsonl").read_text() == written
    assert client.count_items("P") == 1500
    other = client.tool("batch_create_items", {**args, "options": {**options, "idempotencyKey": "load-2"}})
    assert other["success"] is False and other["error"]["code"] == "CONFLICT"
    assert other["error"]["details"]["field"] == "options.rejectsPath" and client.count_items("P") == 1500


def test_a_rejects_file_holds_every_rejected_item_past_the_thousand_a_result_lists(client, tmp_path):
    """A result lists its first 1,000 item errors, and the rejects file was written from that
    list: 1,500 rejected rows, 1,000 lines, the rest lost without a word. With a rejects file
    the batch's result lists them all (``all_errors``) and the file holds each (as pandas reads
    it), for creates, imports and the tools; the tool's answer and the batch's record
    in the log list the first 1,000, and ``itemsFailed`` counts all."""
    rows = [{"name": f"p{i}", "age": -1 if i % 2 else i} for i in range(3000)]
    odd = list(range(1, 3000, 2))
    created = client.create_items("P", "People", rows, atomic=False, continue_on_error=True,
                                  rejects=tmp_path / "create.jsonl", batch_size=500)
    assert created.items_created == 1500 and created.items_failed == 1500 and len(created.errors) == 1500
    assert sorted(pd.read_json(tmp_path / "create.jsonl", lines=True)["index"]) == odd
    assert len(client.status(created.transaction_id)["result"]["errors"]) == 1000

    pd.DataFrame(rows).to_csv(tmp_path / "rows.csv", index=False)
    imported = client.import_file("P", "People", tmp_path / "rows.csv", atomic=False, rejects=tmp_path / "import.jsonl")
    assert imported.items_created == 1500 and len(imported.errors) == 1500
    assert sorted(pd.read_json(tmp_path / "import.jsonl", lines=True)["index"]) == odd

    answer = client.tool("batch_create_items", {
        "dataContextName": "P", "collectionName": "People", "items": [{"values": r} for r in rows],
        "options": {"atomic": False, "continueOnError": True, "batchSize": 500, "rejectsPath": "tool.jsonl"}})
    assert answer["itemsCreated"] == 1500 and answer["itemsFailed"] == 1500 and len(answer["errors"]) == 1000
    assert len(pd.read_json(tmp_path / "tool.jsonl", lines=True)) == 1500


@pytest.mark.parametrize("values, reported", [
    ({"name": "\ud800"}, {"name": "\\ud800"}),
    ({"name": "a", "age": -1, "note": {"k": "\udc00"}}, {"name": "a", "age": -1, "note": {"k": "\\udc00"}}),
    ({"age": 1, "\ud800": 1}, {"age": 1, "\\ud800": 1}),
])
def test_a_rejected_row_holding_an_unpaired_surrogate_is_reported_with_its_values(client, tmp_path, values, reported):
    """A rejected row's values holding an unpaired surrogate (a JSON "\\ud800" escape decodes to
    one) are reported with the surrogate written as its escape: UTF-8 cannot hold it, and the
    worker's record of the row's error failed whole (an INTERNAL error for its chunk), as did
    the dead-letter file."""
    out = tmp_path / "bad.jsonl"
    result = client.create_items("P", "People", [values, {"name": "ok"}], atomic=False, continue_on_error=True,
                                 rejects=out)
    assert result.items_created == 1
    assert {e.code for e in result.errors} <= {"INVALID_VALUE", "UNKNOWN_ATTRIBUTE"}
    assert {e.index for e in result.errors} == {0}
    assert result.errors[0].values == reported
    written = [json.loads(line) for line in out.read_text().splitlines()]  # a record per error
    assert written and all(record["index"] == 0 and record["values"] == reported for record in written)
