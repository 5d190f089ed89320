"""An import under an idempotency key (no Ray; the in-process runtime over a SQLite store).

An import is one batch. A ``ray job submit`` job or an agent that retries an import after a
lost answer must not load the file twice: the call made again under the key reads and imports
nothing and answers the first batch's result, as a retried ``create_items`` does. These tests
show it for a CSV file, a CODAP document (whose retry would otherwise be refused: the context
exists), a failed import, the client's rejects file and the ``batch_import`` tool.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from local_runtime import local_client
from batchray.errors import SchemaError, ValidationError

FIXTURES = Path(__file__).parent / "fixtures" / "codap"
PEOPLE = [{"name": "People", "attrs": [{"name": "name"}, {"name": "age", "type": "numeric"}]}]


@pytest.fixture
def client(tmp_path):
    with local_client(tmp_path / "store", shards=2) as client:
        yield client


def _csv(path: Path, rows: int, bad: tuple[int, ...] = ()) -> Path:
    lines = ["name,age"] + [f"n{i},{'old' if i in bad else i}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_csv_import_made_again_under_its_key_imports_nothing(client, tmp_path):
    path = _csv(tmp_path / "people.csv", 50)
    first = client.import_file("P", "People", path, idempotency_key="load-2026-12-07")
    assert first.success and first.items_created == 50 and first.rows_read == 50
    path.unlink()  # the retry needs no file: it reads nothing
    again = client.import_file("P", "People", path, idempotency_key="load-2026-12-07")
    assert again.success and again.state == "completed"
    assert again.transaction_id == first.transaction_id
    assert again.items_created == 50 and again.rows_read == 0
    assert any(first.transaction_id in note and "load-2026-12-07" in note for note in again.notes)
    assert client.count_items("P") == 50
    fresh = client.import_file("P", "People", _csv(tmp_path / "more.csv", 5), idempotency_key="another")
    assert fresh.success and fresh.transaction_id != first.transaction_id
    assert client.count_items("P") == 55


def test_a_codap_document_import_made_again_under_its_key_is_answered_not_refused(client, tmp_path):
    document = tmp_path / "mammals.codap"
    shutil.copy(FIXTURES / "mammals.codap", document)
    first = client.import_file(None, None, document, idempotency_key="mammals")
    assert first.success and first.items_created > 0
    counts = {name: client.count_items(name) for name in client.data_contexts()}
    again = client.import_file(None, None, document, idempotency_key="mammals")
    assert again.success and again.transaction_id == first.transaction_id
    assert {name: client.count_items(name) for name in client.data_contexts()} == counts
    with pytest.raises(SchemaError):  # without the key: the context's name is taken
        client.import_file(None, None, document)


def test_a_failed_import_stays_failed_under_its_key(client, tmp_path):
    path = _csv(tmp_path / "people.csv", 20, bad=(7,))
    assert client.create_data_context("P", PEOPLE).success
    first = client.import_file("P", "People", path, idempotency_key="k")
    assert not first.success and first.items_created == 0
    path.write_text("name,age\nfixed,1\n")
    again = client.import_file("P", "People", path, idempotency_key="k")
    assert not again.success and again.transaction_id == first.transaction_id
    assert [e["index"] for e in again.errors] == [e["index"] for e in first.errors] == [7]
    assert client.count_items("P") == 0
    assert client.import_file("P", "People", path, idempotency_key="k2").items_created == 1


def test_a_retry_keeps_the_rejects_file_the_first_call_wrote(client, tmp_path):
    path = _csv(tmp_path / "people.csv", 1_500, bad=tuple(range(0, 1_500, 2)))
    assert client.create_data_context("P", PEOPLE).success
    rejects = tmp_path / "rejects.jsonl"
    first = client.import_file("P", "People", path, atomic=False, rejects=rejects, idempotency_key="lenient")
    assert first.items_created == 750
    written = rejects.read_bytes()
    assert len(written.splitlines()) == 750
    again = client.import_file("P", "People", path, atomic=False, rejects=rejects, idempotency_key="lenient")
    assert again.transaction_id == first.transaction_id and again.items_created == 750
    assert rejects.read_bytes() == written  # not refused as existing, not rewritten from the record
    assert client.count_items("P") == 750


def test_the_import_tool_takes_an_idempotency_key(client, tmp_path):
    _csv(tmp_path / "people.csv", 30, bad=(3,))
    assert client.create_data_context("T", PEOPLE).success
    client.io_root = tmp_path
    args = {"dataContextName": "T", "collectionName": "People", "path": "people.csv",
            "options": {"atomic": False, "idempotencyKey": "tool-load", "rejectsPath": "rejects.jsonl"}}
    first = client.tool("batch_import", args)
    assert first["itemsCreated"] == 29, first
    written = (tmp_path / "rejects.jsonl").read_bytes()
    again = client.tool("batch_import", args)
    assert again["transactionId"] == first["transactionId"] and again["itemsCreated"] == 29
    assert again["rowsRead"] == 0
    assert (tmp_path / "rejects.jsonl").read_bytes() == written
    assert client.count_items("T") == 29
    refused = client.tool("batch_import", {**args, "options": {"idempotencyKey": ""}})
    assert refused["success"] is False and refused["error"]["code"] == "VALIDATION"


@pytest.mark.parametrize("key", ["", "k" * 201, 7, True])
def test_a_bad_key_is_refused_before_the_file_is_read(client, tmp_path, key):
    path = _csv(tmp_path / "people.csv", 3)
    with pytest.raises(ValidationError) as refused:
        client.import_file("P", "People", path, idempotency_key=key)
    assert refused.value.details["field"] == "idempotency_key"
    assert client.data_contexts() == []
