"""The public client's arguments are checked before anything runs: a bad batch size, limit,
offset or list of requests is a ValidationError naming it, and changes nothing."""
from __future__ import annotations

import pytest

from batchray.errors import ValidationError
from tests.local_runtime import local_client

SCHEMA = [{"name": "Cities", "attrs": [{"name": "city"}]},
          {"name": "People", "attrs": [{"name": "name"}, {"name": "age", "type": "numeric", "min": 0}]}]
BAD_SIZES = [-1, 0, 1.5, "3", True, 10**30, 1_000_001]


@pytest.fixture
def client(tmp_path):
    c = local_client(tmp_path / "store", shards=2)
    c.create_data_context("P", collections=SCHEMA)
    c.create_items("P", "People", [{"city": "Lyon", "name": "a", "age": 1}, {"city": "Paris", "name": "b", "age": 2}])
    yield c
    c.close()


def _refused(call, field):
    with pytest.raises(ValidationError) as info:
        call()
    assert info.value.details["field"] == field, info.value.details
    return info.value


def _state(client):
    return client.get_items("P"), len(client.status(limit=1000))


@pytest.mark.parametrize("size", BAD_SIZES)
@pytest.mark.parametrize("dry_run", [False, True])
def test_a_bad_batch_size_is_refused_by_every_batch_method(client, size, dry_run):
    before = _state(client)
    one = client.get_items("P")[0]["id"]
    _refused(lambda: client.create_items("P", "People", [{"name": "x"}], batch_size=size, dry_run=dry_run), "batchSize")
    _refused(lambda: client.create_items("P", "People", ({"name": "x"} for _ in range(2)), batch_size=size,
                                         dry_run=dry_run), "batchSize")
    _refused(lambda: client.update_items("P", [{"selector": {"itemId": one}, "values": {"age": 5}}], batch_size=size,
                                         dry_run=dry_run), "batchSize")
    _refused(lambda: client.delete_items("P", [{"itemId": one}], batch_size=size, dry_run=dry_run), "batchSize")
    assert _state(client) == before


@pytest.mark.parametrize("size", BAD_SIZES)
def test_the_planner_and_the_importer_refuse_a_bad_batch_size(client, tmp_path, size):
    from batchray.io import import_file

    _refused(lambda: client.planner.create_items("P", "People", [{"name": "x"}], batch_size=size), "batchSize")
    _refused(lambda: client.planner.update_items("P", [], batch_size=size), "batchSize")
    _refused(lambda: client.planner.delete_items("P", [], batch_size=size), "batchSize")
    path = tmp_path / "in.csv"
    path.write_text("name,age\nz,3\n")
    _refused(lambda: import_file(client, "P", "People", path, batch_size=size), "batchSize")
    assert client.count_items("P") == 2


@pytest.mark.parametrize("timeout", [0, -5, 1.5, "60", True, 86_400_001])
def test_an_import_refuses_a_bad_timeout_before_it_reads_anything(client, tmp_path, timeout):
    path = tmp_path / "in.csv"
    path.write_text("name,age\nz,3\n")
    _refused(lambda: client.import_file("P", "People", path, timeout=timeout), "timeout")
    _refused(lambda: client.import_file("New", None, path, timeout=timeout), "timeout")
    assert client.count_items("P") == 2 and "New" not in client.data_contexts()


@pytest.mark.parametrize("bad, field", [
    ({"block_size": 0}, "blockSize"), ({"block_size": -5}, "blockSize"), ({"block_size": "64k"}, "blockSize"),
    ({"block_size": True}, "blockSize"), ({"block_size": 1 << 31}, "blockSize"),
    ({"max_record_bytes": 1 << 31}, "max_record_bytes"), ({"atomic": "false"}, "atomic"), ({"atomic": None}, "atomic"),
    ({"create": "no"}, "create"), ({"columnar": 0}, "columnar"), ({"quote_content": "no"}, "quoteContent"),
    ({"format": 5}, "format")])
@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_an_import_refuses_a_bad_block_size_flag_or_format_before_it_reads_anything(client, tmp_path, bad, field, suffix):
    """A block size that is not an int from 1 to 2**30, a flag that is not a bool, or a format
    that is not a text is a ValidationError naming it, nothing read: ``atomic="false"`` ran an
    atomic import, a negative block size was a DocumentError blaming the file (and made the
    JSON Lines reader take the whole file at once), a text one a TypeError, one past 32 bits an
    OverflowError, ``format=5`` an AttributeError."""
    path = tmp_path / f"in.{suffix}"
    path.write_text("name,age\nz,3\n" if suffix == "csv" else '{"name": "z", "age": 3}\n')
    _refused(lambda: client.import_file("P", "People", path, **bad), field)
    _refused(lambda: client.import_file("New", None, path, **bad), field)
    assert client.count_items("P") == 2 and "New" not in client.data_contexts()


@pytest.mark.parametrize("overwrite", ["no", 1, None])
def test_an_export_refuses_a_flag_that_is_not_a_bool_and_keeps_the_file(client, tmp_path, overwrite):
    """``overwrite="no"`` replaced an existing file (any truthy value did), and ``format=5`` was
    an AttributeError: each is a ValidationError naming it, and nothing is written."""
    out = tmp_path / "out.csv"
    out.write_text("mine\n")
    _refused(lambda: client.export_file("P", out, overwrite=overwrite), "overwrite")
    assert out.read_text() == "mine\n"
    _refused(lambda: client.export_file("P", tmp_path / "new.csv", format=5), "format")
    assert not (tmp_path / "new.csv").exists()
    assert client.export_file("P", out, overwrite=True).items_written == 2


def test_an_import_takes_a_priority_and_a_queue_and_refuses_an_option_it_does_not_take(client, tmp_path):
    """An import's batch waits for a slot under the priority and queue it is given (the
    client's and the batch_import tool's), as a create's does; an option no import takes, or
    no export, is a ValidationError naming it (it was a TypeError), and nothing is read."""
    path = tmp_path / "in.csv"
    path.write_text("name,age\nz,3\n")
    result = client.import_file("P", "People", path, priority=5, queue="etl")
    assert result.success
    assert (client.status(result.transaction_id)["priority"], client.status(result.transaction_id)["queue"]) == (5, "etl")
    for bad, field in (({"priority": "high"}, "priority"), ({"queue": ""}, "queue"), ({"idempotency_key": ""},
                                                                                         "idempotency_key")):
        _refused(lambda: client.import_file("P", "People", path, **bad), field)
    _refused(lambda: client.export_file("P", tmp_path / "out.csv", pagesize=3), "pagesize")
    assert client.count_items("P") == 3 and not (tmp_path / "out.csv").exists()
    client.io_root = tmp_path
    answer = client.tool("batch_import", {"dataContextName": "P", "collectionName": "People", "path": "in.csv",
                                          "options": {"priority": 7, "queue": "q2"}})
    assert answer["success"]
    assert (client.status(answer["transactionId"])["priority"], client.status(answer["transactionId"])["queue"]) == (
        7, "q2")


def test_the_largest_batch_size_is_honoured(client):
    result = client.create_items("P", "People", [{"name": f"n{i}"} for i in range(3)], batch_size=1)
    assert result.success and result.items_created == 3 and result.batches_processed == 3
    assert client.create_items("P", "People", [{"name": "y"}], batch_size=1_000_000).items_created == 1


def test_requests_that_are_not_lists_are_refused(client):
    before = _state(client)
    _refused(lambda: client.create_items("P", "People", None), "items")
    _refused(lambda: client.create_items("P", "People", {"name": "x"}), "items")
    _refused(lambda: client.update_items("P", None), "updates")
    _refused(lambda: client.delete_items("P", None), "selectors")
    _refused(lambda: client.delete_items("P", None, dry_run=True), "selectors")
    _refused(lambda: client.schema_operations("P", None), "operations")
    _refused(lambda: client.component_operations(None), "operations")
    _refused(lambda: client.execute_transaction(None), "operations")
    assert _state(client) == before


@pytest.mark.parametrize("value", ["2", 1.5, -1, True, 10**30])
def test_bad_limits_and_offsets_are_refused(client, value):
    _refused(lambda: client.get_items("P", limit=value), "limit")
    _refused(lambda: client.get_items("P", offset=value), "offset")
    _refused(lambda: client.get_cases("P", "Cities", limit=value), "limit")
    _refused(lambda: client.get_cases("P", "Cities", offset=value), "offset")
    _refused(lambda: client.status(limit=value), "limit")


def test_good_limits_are_honoured(client):
    assert len(client.get_items("P", limit=1)) == 1 and client.get_items("P", limit=0) == []
    assert len(client.get_cases("P", "Cities", offset=1)) == 1
    assert len(client.status(limit=1)) == 1


@pytest.mark.parametrize("workers", [0, -1, 257, "2", 2.5, True])
def test_a_bad_worker_count_is_refused_before_anything_starts(tmp_path, workers):
    import batchray

    with pytest.raises(ValidationError) as refused:
        batchray.connect(tmp_path / "store", workers=workers, progress=False)
    assert refused.value.details["field"] == "workers"
    assert not (tmp_path / "store").exists()  # nothing opened, no Ray started


@pytest.mark.parametrize("setting, value", [
    ("max_running", 0), ("max_running", -1), ("max_running", 2.5), ("max_running", True),
    ("memory_budget", 0), ("memory_budget", -(1 << 20)), ("memory_budget", "64MB"),
    ("memory_threshold", 0), ("memory_threshold", 1.5), ("memory_threshold", float("nan")),
    ("stall_timeout", 0), ("stall_timeout", -5), ("stall_timeout", float("inf")), ("stall_timeout", "60"),
    # these reached the actors: a worker_env of a number killed the coordinator as it started
    # (UNAVAILABLE, "restarting", whatever a retry did), a coordinator_env of one was Ray's
    # TypeError, and a shard_apply_delay of a text started workers that failed every batch
    ("worker_env", {"BATCHRAY_X": 1}), ("worker_env", ["BATCHRAY_X=1"]), ("worker_env", {"": "1"}),
    ("coordinator_env", {"BATCHRAY_X": None}), ("coordinator_env", {1: "x"}), ("coordinator_env", "X=1"),
    ("shard_apply_delay", "0.1"), ("shard_apply_delay", -0.1), ("shard_apply_delay", float("nan")),
    ("shard_apply_delay", True), ("quiet", "false"), ("quiet", None),
])
def test_a_bad_coordinator_setting_is_refused_before_anything_starts(tmp_path, monkeypatch, setting, value):
    import batchray
    from actors.runtime import RayRuntime

    def no_ray(self, address):
        raise AssertionError("Ray was joined with a bad setting")

    monkeypatch.setattr(RayRuntime, "_connect", no_ray)
    with pytest.raises(ValidationError) as refused:
        batchray.connect(tmp_path / "store", progress=False, **{setting: value})
    assert refused.value.details["field"] == setting
    assert not (tmp_path / "store").exists()  # nothing opened, no Ray started


@pytest.mark.parametrize("value", ["x", float("nan"), float("inf"), -1, 0, True, None])
def test_a_bad_lock_timeout_of_the_local_runtime_is_refused_before_the_store_is_opened(tmp_path, value):
    """It was taken as given: a text or a negative number made every lock wait fail later, a
    NaN or infinity never time out."""
    import batchray

    with pytest.raises(ValidationError) as refused:
        batchray.connect(tmp_path / "store", runtime="local", progress=False, lock_timeout=value)
    assert refused.value.details["field"] == "lock_timeout"
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("bad_id", [None, "", 123, ["a"]])
def test_batch_calls_refuse_a_bad_batch_id_or_flag(client, bad_id):
    done = client.status(limit=1)[0]["batchId"]
    _refused(lambda: client.cancel(bad_id), "batchId")
    _refused(lambda: client.wait(bad_id), "batchId")
    if bad_id is not None:  # None: the recent batches
        _refused(lambda: client.status(bad_id), "batchId")
    for bad in ("false", 0, None):
        _refused(lambda: client.cancel(done, rollback=bad), "rollback")
        _refused(lambda: client.cancel(done, graceful=bad), "graceful")
    assert not client.cancel(done, rollback=False, graceful=False)["success"]  # finished: nothing to cancel



def test_an_undo_refuses_a_bad_batch_id_or_force_and_changes_nothing(client):
    """``rollback_batch``'s ``force`` is a bool: a text such as ``"false"`` was read as true and
    undid a batch over the later update of one of its items, losing that update."""
    created = client.create_items("P", "People", [{"name": "u", "age": 3}, {"name": "v", "age": 4}],
                                  create_backups=True)
    assert created.success
    later = client.update_items("P", [{"selector": {"itemId": created.item_ids[0]}, "values": {"age": 50}}])
    assert later.success
    before = _state(client)
    for bad_id in (None, "", 123, ["a"]):
        _refused(lambda: client.rollback_batch(bad_id), "batchId")
    for bad in ("false", "", 0, 1, None):
        _refused(lambda: client.rollback_batch(created.transaction_id, force=bad), "force")
    assert _state(client) == before
    refused = client.rollback_batch(created.transaction_id, force=False)
    assert not refused.success and refused.errors[0].code == "CONFLICT", refused.errors
    assert client.get_items("P") == before[0]  # the refused undo ran as a batch of its own, writing nothing


def test_a_batch_not_waited_for_refuses_a_rejects_file_or_a_callback_and_runs_nothing(client, tmp_path):
    """``rejects`` and ``callback`` are served while the caller waits: with ``wait=False`` the
    rejects file was never written and the callback never got the batch's final counts (on Ray,
    no call at all). Refused now, as are ``wait`` and ``dry_run`` that are not bools (a text
    ``"false"`` was read as true: a dry run that wrote nothing)."""
    rejects = tmp_path / "rejects.jsonl"
    one = client.get_items("P")[0]["id"]
    rows = [{"name": "ok", "age": 1}, {"name": "bad", "age": -1}]
    before = _state(client)
    _refused(lambda: client.create_items("P", "People", rows, atomic=False, continue_on_error=True,
                                         rejects=rejects, wait=False), "rejects")
    _refused(lambda: client.create_items("P", "People", rows, callback=print, wait=False), "callback")
    update = [{"selector": {"itemId": one}, "values": {"age": -1}}]
    _refused(lambda: client.update_items("P", update, rejects=rejects, wait=False), "rejects")
    _refused(lambda: client.update_items("P", update, callback=print, wait=False), "callback")
    _refused(lambda: client.delete_items("P", [{"itemId": one}], callback=print, wait=False), "callback")
    for bad in ("false", 0, None):
        _refused(lambda: client.create_items("P", "People", rows[:1], wait=bad), "wait")
        _refused(lambda: client.create_items("P", "People", rows[:1], dry_run=bad), "dryRun")
        _refused(lambda: client.update_items("P", update, dry_run=bad), "dryRun")
        _refused(lambda: client.delete_items("P", [{"itemId": one}], wait=bad), "wait")
    assert _state(client) == before and not rejects.exists()
    # a dry run does not wait either way; what it takes is unchanged
    assert client.create_items("P", "People", rows[:1], dry_run=True, wait=False).success
    batch = client.create_items("P", "People", rows[:1], wait=False)
    assert client.wait(batch).items_created == 1


def test_progress_that_is_not_a_bool_is_refused_and_runs_nothing(client):
    """``progress`` shows a bar or not: a function given there (meant as ``callback``) was read
    as true and drew a bar, its calls never made. Refused, naming it, before anything runs."""
    before = _state(client)
    rows = [{"name": "ok", "age": 1}]
    one = client.get_items("P")[0]["id"]
    for bad in (print, "false", 1):
        _refused(lambda: client.create_items("P", "People", rows, progress=bad), "progress")
        _refused(lambda: client.delete_items("P", [{"itemId": one}], progress=bad), "progress")
    assert _state(client) == before
    assert client.create_items("P", "People", rows, progress=False).items_created == 1


@pytest.mark.parametrize("option, value", [("timeout", True), ("timeout", "60"), ("timeout", 1.5), ("priority", True),
                                           ("priority", "5"), ("max_retries", "3"), ("atomic", "false"),
                                           ("create_backups", "false"), ("continue_on_error", 1)])
def test_a_run_option_of_another_type_is_refused_not_read_as_one(client, option, value):
    """A batch's options are taken as they are typed, as an import's and a cancellation's are:
    ``timeout=True`` ran the batch with a timeout of 1 ms, ``atomic="false"`` read a text as a bool."""
    before = _state(client)
    one = client.get_items("P")[0]["id"]
    _refused(lambda: client.create_items("P", "People", [{"name": "x"}], **{option: value}), option)
    _refused(lambda: client.update_items("P", [{"selector": {"itemId": one}, "values": {"age": 9}}],
                                         **{option: value}), option)
    _refused(lambda: client.delete_items("P", [{"itemId": one}], **{option: value}), option)
    assert _state(client) == before
    _refused(lambda: client.execute_transaction([], {option: value}), option)


@pytest.mark.parametrize("how", ["address", "RAY_ADDRESS"])
def test_an_address_where_no_ray_cluster_answers_is_refused_at_once(tmp_path, monkeypatch, how):
    """``ray.init`` tries a ``host:port`` where nothing listens for about five minutes, then ends
    the process (``SystemExit``, which even the CLI's error handling let through): a mistyped
    ``address=`` or a stale ``RAY_ADDRESS`` is refused at once, retryable (UNAVAILABLE), before
    Ray is asked."""
    import socket
    import time

    import batchray
    import actors.runtime as runtime_module
    from batchray.errors import ParticipantUnavailable

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{free.getsockname()[1]}"  # closed again: nothing listens there

    def no_init(**settings):
        raise AssertionError(f"ray.init was asked to join {settings.get('address')}")

    monkeypatch.setattr(runtime_module.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(runtime_module.ray, "init", no_init)
    options = {"address": address}
    if how == "RAY_ADDRESS":
        monkeypatch.setenv("RAY_ADDRESS", address)
        options = {}
    started = time.monotonic()
    with pytest.raises(ParticipantUnavailable) as refused:
        batchray.connect(tmp_path / "store", progress=False, **options)
    assert refused.value.details == {"address": address} and address in str(refused.value)
    assert time.monotonic() - started < 10
