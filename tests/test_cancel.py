"""Cancellation and batch timeouts on Ray, with batches caught mid-flight.

Batches are made slow by the store's ``shard_apply_delay`` (each applied chunk takes DELAY
seconds at its worker, one at a time per worker) and by generators that sleep, and are started
with ``wait=False`` (the batch id comes back at once; the input streams from a thread).

What these tests show:

* ``graceful=True, rollback=False`` on a non-atomic stream: the chunks already at the workers
  finish, nothing more is dispatched, and what was applied is kept: whole chunks only, every
  one counted in the result (state ``cancelled``, error ``CANCELLED``);
* ``graceful=True`` waits for every chunk in flight (each one sent is applied, then rolled
  back); ``graceful=False`` does not: the abort goes out at once, the workers refuse the chunks
  still queued, and the batch ends many times sooner. Both stop dispatching at the cancel, and
  both leave every item exactly as it was (compared value by value);
* ``rollback=True`` restores everything a non-atomic batch wrote; an atomic batch is rolled
  back even when ``rollback=False`` is asked;
* a queued batch (``max_running=1`` with a long batch ahead) is taken out of its queue and
  never runs, whether it came whole or as a stream; the batch ahead is untouched;
* cancelling a finished batch says so and changes nothing;
* a batch ``timeout`` (ms, counted from its start): an atomic batch past it is rolled back with
  error ``TIMEOUT``; a non-atomic one keeps the chunks applied before it (state ``failed``).
* No transaction state or lock is left on any shard afterwards.
"""
from __future__ import annotations

import time

import pytest

from polling import until

pytestmark = pytest.mark.ray

DELAY = 0.05
COLLECTIONS = [{"name": "Rows", "attrs": [{"name": "n", "type": "numeric"}, {"name": "label"}]}]


def rows(count: int, start: int = 0) -> list[dict]:
    return [{"n": i, "label": f"row-{i}"} for i in range(start, start + count)]


def slow_rows(count: int, per_row: float, start: int = 0):
    for i in range(start, start + count):
        time.sleep(per_row)
        yield {"n": i, "label": f"row-{i}"}


@pytest.fixture(scope="module")
def slow(open_store):
    return open_store("slow", workers=2, shards=2, shard_apply_delay=DELAY)


@pytest.fixture(scope="module")
def single(open_store):
    return open_store("single", workers=2, shards=2, max_running=1, shard_apply_delay=0.01)


def _context(client, name: str, prefill: int = 0) -> tuple[str, list[dict]]:
    """A data context with ``prefill`` items; returns its name and its items."""
    assert client.create_data_context(name, COLLECTIONS).success
    if prefill:
        assert client.create_items(name, "Rows", rows(prefill, start=10_000)).success
    return name, client.get_items(name)


def _completed(client, txn: str) -> int:
    progress = client.status(txn).get("progress") or {}
    return progress.get("completed", 0)


def _settled_completed(client, txn: str, quiet: float = 0.6) -> int:
    """Progress once workers have stopped reporting for ``quiet`` seconds."""
    last, since = _completed(client, txn), time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.05)
        now = _completed(client, txn)
        if now != last:
            last, since = now, time.monotonic()
    return last


def _assert_clean(client) -> None:
    import ray

    leftovers = until(lambda: (lambda v: v if all(not any(c.values()) for c in v.values()) else None)(
        ray.get(client.runtime.coordinator.leftovers.remote())), timeout=10, what="no leftovers")
    assert all(not any(counts.values()) for counts in leftovers.values()), leftovers


def test_graceful_cancel_keeps_whole_chunks_of_a_non_atomic_batch(slow):
    context, _ = _context(slow, "Graceful")
    txn = slow.create_items(context, "Rows", slow_rows(2000, 0.001), batch_size=20, atomic=False, wait=False)
    assert isinstance(txn, str)
    until(lambda: _completed(slow, txn) >= 100, what="progress")
    reply = slow.cancel(txn, rollback=False, graceful=True)
    assert reply["success"] and reply["state"] == "cancelling" and reply["rollback"] is False, reply
    result = slow.wait(txn)
    assert result.state.value == "cancelled" and not result.success
    assert result.error["code"] == "CANCELLED"
    kept = result.items_created
    assert 100 <= kept < 2000
    assert kept % 20 == 0  # whole chunks only
    assert slow.count_items(context) == kept
    # every chunk that reached a worker was applied and kept: the workers' reports agree
    assert _settled_completed(slow, txn) == kept
    assert result.batches_processed == kept // 20
    _assert_clean(slow)


def test_non_graceful_cancel_stops_at_once_and_rollback_restores_every_item(slow):
    context, before = _context(slow, "Interrupt", prefill=800)
    ids = [item["id"] for item in before]
    updates = [{"selector": {"itemId": i}, "values": {"n": "=n + 1000", "label": "changed"}} for i in ids]
    figures = {}
    for graceful in (True, False):
        # 80 chunks of 10, all dispatched at once: 40 per worker, DELAY each, one at a time
        txn = slow.update_items(context, updates, batch_size=10, atomic=False, wait=False)
        until(lambda: _completed(slow, txn) >= 10, what="progress")
        started = time.perf_counter()
        reply = slow.cancel(txn, rollback=True, graceful=graceful)
        assert reply["success"] and reply["rollback"] is True, reply
        result = slow.wait(txn)
        elapsed = time.perf_counter() - started
        assert result.state.value == "cancelled" and result.items_updated == 0
        assert slow.get_items(context) == before  # as if the batch never ran
        figures[graceful] = (elapsed, _settled_completed(slow, txn), result.batches_processed)
        _assert_clean(slow)
    (graceful_s, graceful_applied, graceful_taken), (abrupt_s, abrupt_applied, abrupt_taken) = figures[True], figures[False]
    print(f"\ngraceful: ended {graceful_s:.2f} s after the cancel, {graceful_applied} of 800 items applied "
          f"({graceful_taken} chunks waited for); non-graceful: {abrupt_s:.2f} s, {abrupt_applied} applied "
          f"({abrupt_taken} chunks waited for)")
    # graceful: every chunk sent to a worker was applied and waited for before the rollback
    # (dispatch stopped at the cancel, so chunks not yet sent then were never sent)
    # (counted, not timed: under load the cancel may come when most chunks are already done)
    assert graceful_applied == graceful_taken * 10 >= 100
    # non-graceful: the batch ended without waiting for them: the workers refused the chunks
    # still queued when the abort came (counted, not timed: a loaded machine stretches both)
    assert abrupt_applied <= graceful_applied / 2, (abrupt_applied, graceful_applied)
    assert abrupt_taken < graceful_taken / 2, (abrupt_taken, graceful_taken)


def test_rollback_restores_a_non_atomic_stream_and_atomic_batches_always_roll_back(slow):
    context, before = _context(slow, "Rollback", prefill=100)
    for atomic, rollback in ((False, True), (True, False)):
        txn = slow.create_items(context, "Rows", slow_rows(2000, 0.001), batch_size=20, atomic=atomic, wait=False)
        until(lambda: _completed(slow, txn) >= 60, what="progress")
        reply = slow.cancel(txn, rollback=rollback, graceful=True)
        assert reply["success"] and reply["rollback"] is True, reply  # atomic: rolled back regardless
        result = slow.wait(txn)
        assert result.state.value == "cancelled" and result.items_created == 0
        assert slow.get_items(context) == before
    _assert_clean(slow)


def test_a_queued_batch_is_removed_and_never_runs(single):
    context, _ = _context(single, "Queued")
    ahead = single.create_items(context, "Rows", slow_rows(400, 0.004), batch_size=20, wait=False)
    until(lambda: single.status(ahead)["state"] == "running", what="the first batch to start")
    whole = single.create_items(context, "Rows", rows(10, start=5000), wait=False)
    stream = single.create_items(context, "Rows", slow_rows(100, 0.0, start=6000), wait=False)
    assert single.status(whole)["state"] == "queued" and single.status(whole)["queuePosition"] == 0
    until(lambda: single.status(stream)["queuePosition"] == 1, what="the stream to queue")
    assert single.status(ahead)["queuePosition"] is None
    for txn, graceful in ((whole, True), (stream, False)):
        reply = single.cancel(txn, graceful=graceful)  # the keys of every other cancellation's reply
        assert reply == {"success": True, "batchId": txn, "state": "cancelled", "graceful": graceful, "rollback": True,
                         "message": "removed from its queue: nothing of it ran"}
        assert single.status(txn)["state"] == "cancelled"
        assert single.status(txn)["result"]["error"]["code"] == "CANCELLED"  # recorded as wait() answers it
        assert single.wait(txn).state.value == "cancelled"
    assert single.status(ahead)["state"] == "running"
    result = single.wait(ahead)
    assert result.success and result.items_created == 400
    assert single.count_items(context) == 400
    assert single.count_items(context, query="n >= 5000") == 0
    assert single.info()["memory"]["inUse"] == 0  # the cancelled stream holds no budget
    _assert_clean(single)


def test_cancelling_a_finished_batch_says_so(slow):
    context, _ = _context(slow, "Finished")
    result = slow.create_items(context, "Rows", rows(5))
    assert result.success
    reply = slow.cancel(result.transaction_id)
    assert reply["success"] is False and reply["state"] == "completed"
    assert "already finished" in reply["message"]
    assert slow.count_items(context) == 5
    assert slow.status(result.transaction_id)["state"] == "completed"


def test_a_batch_past_its_timeout_is_rolled_back(slow):
    context, before = _context(slow, "Timeout", prefill=50)
    started = time.perf_counter()
    result = slow.create_items(context, "Rows", slow_rows(1000, 0.01), batch_size=20, timeout=800)
    elapsed = time.perf_counter() - started
    assert result.state.value == "rolled_back" and not result.success
    assert result.error["code"] == "TIMEOUT" and result.error["retryable"]
    assert elapsed < 5  # the generator alone would take 10 s: the driver stopped feeding
    assert slow.get_items(context) == before
    # non-atomic: what was applied before the deadline is kept, and the batch says it failed
    result = slow.create_items(context, "Rows", slow_rows(1000, 0.01), batch_size=20, timeout=800, atomic=False)
    assert result.state.value == "failed" and not result.success and result.error["code"] == "TIMEOUT"
    assert 0 < result.items_created < 1000 and result.items_created % 20 == 0
    assert slow.count_items(context) == 50 + result.items_created
    _assert_clean(slow)
