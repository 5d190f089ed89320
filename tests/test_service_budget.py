"""The memory budget of the coordinator service (no Ray): the bytes a fed chunk reserved are
given back on every path, whether the chunk was applied or never sent.

What these tests show, over in-process SQLite participants:

* **A chunk taken and not sent.** A streamed batch's driver that takes a fed chunk from its
  input and then stops sending (a non-atomic batch that does not continue on error, after a
  rejected item) gives that chunk's bytes back: the budget is empty once the batch ended.
* **A chunk fed as its batch ends.** A feed that reserved a chunk's bytes and queues it just
  as its batch ends (after the service gave back what was left in the batch's input) gives
  them back itself, and says the batch took nothing.
"""
from __future__ import annotations

import queue
import threading

import pytest

from batchray.core.model.batch import RunOptions
from polling import until
from service_harness import SilentProgress, in_process_services


class _HeldStart(SilentProgress):
    """The service's progress hook; ``start`` holds a batch's driver until ``release`` is set,
    so that its input can be fed whole before it takes any chunk."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def start(self, txn, total, kind):
        assert self.release.wait(20)


@pytest.fixture
def local(tmp_path):
    with in_process_services(tmp_path, "B", _HeldStart) as (engine, make_service):
        engine.create_data_context("M", [{"name": "Rows", "attrs": [{"name": "n", "type": "numeric", "min": 0}]}])
        yield engine, make_service


def test_a_fed_chunk_that_is_never_sent_gives_its_bytes_back(local):
    engine, make_service = local
    service, progress = make_service()
    # three chunks of two rows; the first rejects its second row (below the minimum)
    rows = [{"n": n} for n in (0, -1, 2, 3, 4, 5)]
    chunks = list(engine.planner.create_items("M", "Rows", iter(rows), batch_size=2).chunks)
    assert len(chunks) == 3
    txn = service.submit("create_items", RunOptions(atomic=False, continue_on_error=False))["txn"]
    assert service.feed(txn, chunks)  # all queued before the driver takes the first
    assert service.budget.in_use == sum(pc.nbytes for pc in chunks)
    progress.release.set()
    service.close_input(txn, len(rows))
    result = service.wait(txn, 30)
    assert result["state"] == "failed" and result["error"]["code"] == "STOPPED_ON_ERROR", result
    assert result["batchesProcessed"] < len(chunks), result  # the driver stopped with a chunk taken
    assert service.runs[txn].ended.wait(30)
    assert service.budget.in_use == 0, service.budget.snapshot()


def test_a_chunk_queued_as_its_batch_ends_gives_its_bytes_back(local):
    engine, make_service = local
    service, progress = make_service()
    progress.release.set()
    # an atomic batch whose first chunk rejects an item: it ends without its second chunk
    chunks = list(engine.planner.create_items("M", "Rows", iter([{"n": -1}, {"n": 1}]), batch_size=1).chunks)
    txn = service.submit("create_items", RunOptions())["txn"]
    run = service.runs[txn]
    late = chunks[1]

    class Feed(queue.Queue):
        """The batch's input: the second chunk is queued only once the batch has ended and the
        service has given back what its input held."""

        def put(self, item, block=True, timeout=None):
            if item is late:
                assert run.ended.wait(20)
                until(lambda: txn in service._ended)
            super().put(item, block, timeout)

    run.feed = Feed(maxsize=256)
    reply = service.feed(txn, chunks)
    result = service.wait(txn, 30)
    assert result["state"] == "rolled_back" and engine.count_items("M") == 0, result
    assert not reply  # the batch took the late chunk no more
    assert service.budget.in_use == 0, service.budget.snapshot()


def test_a_chunk_whose_answer_cannot_be_read_gives_its_bytes_back(tmp_path):
    """The transport could fail to read a chunk's answer with an error of its own (on Ray, an
    answer lost with its node): the chunk left flight with its bytes still reserved, for good,
    and the batch was reported failed for bad input. The chunk fails as an internal error, its
    bytes go back, and the atomic batch is rolled back."""
    from batchray.core.txn.memory import MemoryBudget
    from local_runtime import local_client

    budget = MemoryBudget(64 << 20, pressure=lambda: False)
    with local_client(tmp_path / "store", shards=2, budget=budget) as client:
        assert client.create_data_context("B", [{"name": "Rows", "attrs": [{"name": "n", "type": "numeric"}]}]).success
        transport = client.runtime.driver.transport
        result = transport.result
        lost: list = []

        def third_answer_lost(handle):
            if len(lost) < 3:
                lost.append(handle)
                if len(lost) == 3:
                    raise ConnectionResetError("the answer went with its node")
            return result(handle)

        transport.result = third_answer_lost
        outcome = client.create_items("B", "Rows", [{"n": i} for i in range(50)], batch_size=5)
        assert len(lost) == 3 and outcome.state.value == "rolled_back" and not outcome.success, outcome
        assert outcome.error["code"] == "INTERNAL" and "could not be read" in outcome.error["message"], outcome.error
        assert budget.in_use == 0
        transport.result = result
        assert client.create_items("B", "Rows", [{"n": i} for i in range(50)], batch_size=5).success
        assert client.count_items("B") == 50
