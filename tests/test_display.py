"""How the client, a batch result and a batch status show in a notebook (``_repr_html_``) and
a terminal (a short ``repr``): the fields named in batchray.api.display, every value escaped.

The local runtime, no Ray, except the last test (the shared Ray session: workers, the
coordinator's pid)."""
from __future__ import annotations

import json

import orjson
import pytest

from batchray.api.display import FIRST_ERRORS, BatchStatusList, BatchStatusView
from batchray.core.model.batch import BatchResult, BatchState, ItemError
from local_runtime import local_client

HOSTILE = "<script>alert('x')</script>&"
ROWS = [{"name": "Rows", "attrs": [{"name": "label", "type": "categorical"}, {"name": "n", "type": "numeric"}]}]


def _assert_escaped(markup: str) -> None:
    assert "<script>" not in markup
    assert "&lt;script&gt;" in markup


@pytest.fixture
def engine(tmp_path):
    client = local_client(tmp_path / f"store{HOSTILE}")
    client.create_data_context("Rows", ROWS)
    yield client
    client.close()


def test_the_client_shows_its_store_runtime_and_in_process_workers(engine):
    text = repr(engine)
    assert text.startswith("<Client store=") and "runtime=local (in process)>" in text
    assert len(text) < 200 and "0x" not in text
    markup = engine._repr_html_()
    for shown in ("Store", "Runtime", "Coordinator", "Workers", "Shards", "in process", "local"):
        assert shown in markup
    _assert_escaped(markup)  # the store's directory name is the hostile text


def test_a_result_repr_is_short_and_its_html_has_counts_duration_throughput_and_errors(engine):
    items = [{"label": HOSTILE, "n": i} for i in range(20)]
    items += [{"label": "bad", "n": HOSTILE} for _ in range(FIRST_ERRORS + 3)]
    result = engine.create_items("Rows", "Rows", items, atomic=False)
    assert result.items_created == 20 and len(result.errors) == FIRST_ERRORS + 3
    text = repr(result)
    assert text.startswith("BatchResult(success=False, state=completed, created=20, errors=13, ")
    assert text.endswith(" s)") and len(text) < 120
    markup = result._repr_html_()
    for shown in ("Total items", "Created", "Duration", "Throughput", "items/s", "Errors", result.transaction_id):
        assert shown in markup
    assert markup.count("INVALID_VALUE") == FIRST_ERRORS  # the first errors, as a table
    assert "and 3 more" in markup
    _assert_escaped(markup)


def test_a_result_made_by_hand_renders_too():
    result = BatchResult(success=True, transaction_id="create-1", state=BatchState.completed, total_items=1000,
                         items_created=1000, duration=0.8)
    assert repr(result) == "BatchResult(success=True, state=completed, created=1000, 0.8 s)"
    markup = result._repr_html_()
    assert "1,000" in markup and "1,250 items/s" in markup and "Errors" not in markup
    failed = BatchResult(success=False, transaction_id=HOSTILE, state=BatchState.rolled_back,
                         errors=[ItemError(index=0, message=HOSTILE)],
                         error={"code": "ABORTED", "message": HOSTILE})
    _assert_escaped(failed._repr_html_())
    assert "ABORTED" in failed._repr_html_()


def test_a_status_is_a_json_dict_drawn_with_a_progress_bar(engine):
    result = engine.create_items("Rows", "Rows", ({"label": HOSTILE, "n": i} for i in range(500)))
    status = engine.status(result.transaction_id)
    assert isinstance(status, BatchStatusView) and isinstance(status, dict)
    assert json.loads(json.dumps(status)) == dict(status) == orjson.loads(orjson.dumps(status))
    markup = status._repr_html_()
    assert "<progress value='500' max='500'" in markup
    for shown in ("State", "completed", "500 / 500 (100%)", "Throughput", "Duration"):
        assert shown in markup
    recent = engine.status()
    assert isinstance(recent, BatchStatusList) and isinstance(recent, list)
    assert json.loads(json.dumps(recent)) == [dict(row) for row in recent]
    assert result.transaction_id in recent._repr_html_()
    # the tool answers with the same JSON as before
    answer = engine.tool("get_batch_status", {"batchId": result.transaction_id, "includeResults": True})
    assert answer["success"] is True and answer["results"]["totalItems"] == 500
    json.dumps(answer)


def test_a_running_status_shows_throughput_eta_and_memory():
    status = BatchStatusView({
        "batchId": "create-1", "state": "running", "kind": "create_items", "result": None,
        "progress": {"total": 1000, "completed": 250, "failed": 2, "throughput": 125.0, "etaSeconds": 6.0,
                     "state": "running", "currentOperation": HOSTILE},
        "memory": {"limit": 512 << 20, "inUse": 3 << 20},
    })
    markup = status._repr_html_()
    assert "<progress value='250' max='1000'" in markup and "250 / 1,000 (25%)" in markup
    for shown in ("125 items/s", "ETA", "6.0 s", "Memory in flight", "3.0 MiB of 512.0 MiB", "Failed", "running"):
        assert shown in markup


@pytest.mark.ray
def test_a_ray_client_shows_its_workers_and_coordinator(client):
    text = repr(client)
    assert text.startswith("<Client store=") and text.endswith("runtime=ray workers=2>")
    markup = client._repr_html_()
    assert "ray" in markup and f"pid {client.info()['pid']}" in markup
    assert "<td style='text-align:left'>2</td>" in markup  # the workers


@pytest.mark.ray
def test_a_ray_client_whose_worker_does_not_answer_shows_without_hanging(client):
    """A worker stopped (SIGSTOP: alive, answering nothing) used to hang the client's repr and
    its notebook display, which asked every worker with no time limit. The display waits
    DISPLAY_TIMEOUT, then shows the count and how many did not answer; ``info(timeout=)`` lists
    the stopped worker as None."""
    import os
    import signal
    import time

    from batchray.api.display import DISPLAY_TIMEOUT
    from batchray.errors import ValidationError

    stopped = client.info()["workers"][1]["pid"]
    os.kill(stopped, signal.SIGSTOP)
    try:
        started = time.monotonic()
        text = repr(client)
        assert time.monotonic() - started < DISPLAY_TIMEOUT + 20  # a bound against hanging, not a timing
        assert text.endswith("runtime=ray workers=2 (1 not answering)>"), text
        assert "2 (1 not answering)" in client._repr_html_()
        workers = client.info(timeout=1)["workers"]
        assert workers[1] is None and workers[0]["pid"] != stopped
    finally:
        os.kill(stopped, signal.SIGCONT)
    assert repr(client).endswith("runtime=ray workers=2>")
    for bad in (0, -1, True, "1", float("nan")):
        with pytest.raises(ValidationError):
            client.info(timeout=bad)


def test_a_local_client_answers_info_within_any_timeout(engine):
    assert engine.info(timeout=0.5)["runtime"] == "local"
