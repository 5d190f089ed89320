"""``cluster/load_job.py``'s one line of output: a load that is refused still prints it.

The job's documented output is one JSON line (``success``, ...) and exit status 1 when nothing
committed; a file line that was not JSON, a missing collection or a bad setting used to end the
job with a Python traceback and no line to read (``json.loads``'s ``JSONDecodeError``, the
client's ``SchemaError``), and a line that was JSON but not an object with a bare message. Here
the job runs in this process; where it reaches a store, on the in-process runtime instead of
Ray (what is checked is the job's own handling of what the client raises, the same on both).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.local_runtime import local_client

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def load_job():
    spec = importlib.util.spec_from_file_location("load_job", REPO / "cluster" / "load_job.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def on_local_runtime(monkeypatch):
    """``batchray.connect`` as the job calls it, on the in-process runtime (Ray's settings dropped)."""
    import batchray

    def connect(store, *, address=None, workers=None, shards=None, progress=False):
        return local_client(store, shards=shards)

    monkeypatch.setattr(batchray, "connect", connect)


def _job(load_job, capsys, *argv: str) -> tuple[int, dict]:
    status = load_job.main(list(argv))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, lines
    return status, json.loads(lines[0])


@pytest.mark.parametrize("content, line, says", [
    ("not json\n", 1, "not JSON"),
    ('\n{"name": \n', 2, "not JSON"),
    ('["a", 1]\n', 1, "a JSON object"),
])
def test_a_first_line_that_is_not_a_json_object_is_reported_on_the_jobs_line(load_job, capsys, tmp_path,
                                                                              content, line, says):
    path = tmp_path / "rows.jsonl"
    path.write_text(content)
    store = tmp_path / "store"
    status, summary = _job(load_job, capsys, "--store", str(store), "--context", "P", "--file", str(path),
                           "--idempotency-key", "k1")
    assert status == 1 and summary["success"] is False, summary
    assert summary["error"]["code"] == "DOCUMENT" and says in summary["error"]["message"], summary
    assert summary["error"]["details"] == {"path": str(path), "line": line}
    assert not store.exists()  # refused before the store is opened


def test_an_empty_file_is_reported_on_the_jobs_line(load_job, capsys, tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n")
    status, summary = _job(load_job, capsys, "--store", str(tmp_path / "store"), "--context", "P",
                           "--file", str(path), "--idempotency-key", "k1")
    assert status == 1 and summary["error"]["code"] == "DOCUMENT" and "holds no rows" in summary["error"]["message"]


def test_a_streamed_line_that_is_not_json_loads_nothing(load_job, capsys, tmp_path, on_local_runtime):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"name": f"p{i}", "age": i}) + "\n" for i in range(50)) + '{"name": \n')
    store = tmp_path / "store"
    status, summary = _job(load_job, capsys, "--store", str(store), "--context", "P", "--file", str(path),
                           "--idempotency-key", "k1", "--batch-size", "10")
    assert status == 1 and summary["error"]["code"] == "DOCUMENT", summary
    assert summary["error"]["details"] == {"path": str(path), "line": 51}
    client = local_client(store)
    try:
        assert client.count_items("P") == 0  # the load is one atomic batch: none of its rows
    finally:
        client.close()


@pytest.mark.parametrize("argv, code, field", [
    (["--collection", "Nope"], "SCHEMA", "collectionName"),  # the context exists, without that collection
    (["--batch-size", "0"], "VALIDATION", "batchSize"),
    (["--attrs", "[{name}]"], "VALIDATION", "attrs"),
])
def test_a_refused_load_is_reported_on_the_jobs_line(load_job, capsys, tmp_path, on_local_runtime, argv, code,
                                                     field):
    store = tmp_path / "store"
    client = local_client(store)
    try:
        assert client.create_data_context("Q", [{"name": "Q", "attrs": [{"name": "name"}]}]).success
    finally:
        client.close()
    context = "P" if "--attrs" in argv else "Q"
    status, summary = _job(load_job, capsys, "--store", str(store), "--context", context, "--generate", "5",
                           "--idempotency-key", "k1", *argv)
    assert status == 1 and summary["success"] is False and summary["error"]["code"] == code, summary
    assert summary["error"]["details"].get("field") == field, summary


def test_a_negative_row_count_is_a_usage_error_that_opens_nothing(load_job, capsys, tmp_path):
    """``--generate -3`` made the data context and reported a committed load of nothing."""
    store = tmp_path / "store"
    with pytest.raises(SystemExit) as usage:
        load_job.main(["--store", str(store), "--context", "P", "--generate", "-3", "--idempotency-key", "k1"])
    assert usage.value.code == 2 and "--generate" in capsys.readouterr().err
    assert not store.exists()


def test_a_job_run_by_hand_with_no_cluster_answers_its_json_line(load_job, capsys, tmp_path, monkeypatch):
    """``--address`` defaults to ``auto``: run by hand on a machine with no Ray cluster, Ray's
    ConnectionError came out as a traceback, with no JSON line for the job's caller to read."""
    import ray

    def no_cluster(*args, **kwargs):  # what ray.init(address="auto") raises when none runs
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to "
                              "by setting `--address` flag or `RAY_ADDRESS` environment variable.")

    monkeypatch.setattr(ray, "init", no_cluster)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("BATCHRAY_ADDRESS", raising=False)
    code = load_job.main(["--store", str(tmp_path / "store"), "--context", "People", "--generate", "10",
                          "--idempotency-key", "by-hand"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 1 and summary["success"] is False, summary
    assert summary["error"]["code"] == "UNAVAILABLE" and "--address local" in summary["error"]["message"], summary
