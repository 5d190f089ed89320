"""A one-phase batch whose caller waits runs on the ``submit`` call's own thread
(:meth:`CoordinatorService.submit`), and that path stores, records and reports exactly what the
same batch run on a batch thread does: the same items, results, errors, decision-log records
(history) and progress events. No Ray; fast.

The comparison runs the same requests through a coordinator service over two fresh in-process
stores, each submitted with ``wait``: once as it runs now (on the submitting thread) and once
with that path closed (``SUBMIT_THREAD_RUNS`` 0: on a thread of the service's pool, as before),
and checks on which thread each batch ran, so that it cannot pass with both on one path.
"""
from __future__ import annotations

import threading
from typing import Any

import orjson

from batchray.core.model.batch import RunOptions
from batchray.core.run.service import CoordinatorService
from batchray.core.txn.memory import MemoryBudget
from local_runtime import local_client

SCHEMA = [{"name": "People", "attrs": [{"name": "name", "type": "categorical"},
                                        {"name": "age", "type": "numeric", "min": 0}]}]
# (rows as (name, age), atomic): a clean batch, an atomic one rolled back by a bad item, a
# non-atomic one that keeps its good items and reports the bad one (one-phase where it can)
REQUESTS = [
    ([(f"a{i}", i) for i in range(10)], True),
    ([(f"b{i}", -1 if i == 3 else i) for i in range(10)], True),
    ([(f"c{i}", -5 if i == 7 else i) for i in range(10)], False),
    ([(f"d{i}", 20 + i) for i in range(3)], True),
]
VOLATILE = ("transactionId", "duration")


class _Progress:
    """The service's progress hook: each event with the thread that sent it."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, tuple]] = []

    def __getattr__(self, name: str):
        if name not in ("start", "set_total", "report", "memory", "restart", "finish"):
            raise AttributeError(name)
        return lambda *args: self.events.append((threading.current_thread().name, name, args))


def _without(result: dict[str, Any], txn: str) -> dict[str, Any]:
    """``result`` less what differs from run to run: its id (in messages too) and duration."""
    return orjson.loads(orjson.dumps({k: v for k, v in result.items() if k not in VOLATILE}).replace(
        txn.encode(), b"TXN"))


def _run_all(store, here: bool) -> dict[str, Any]:
    """Run ``REQUESTS``, each submitted with ``wait``; ``here=False``: none may run on the
    submitting thread (``SUBMIT_THREAD_RUNS`` 0), as before that path existed."""
    budget = MemoryBudget(64 << 20, pressure=lambda: False)
    engine = local_client(store, shards=2, budget=budget)
    progress = _Progress()
    service = CoordinatorService(engine.runtime.executor, budget=budget, progress=progress)
    if not here:
        service.SUBMIT_THREAD_RUNS = 0
    try:
        assert engine.create_data_context("P", SCHEMA).success
        results, records, threads, events = [], [], [], []
        for rows, atomic in REQUESTS:
            plan = engine.planner.create_items("P", "People", [{"name": n, "age": a} for n, a in rows])
            planned = list(plan.chunks)
            assert engine.runtime.executor.one_phase_of(planned, RunOptions(atomic=atomic)) is not None
            progress.events.clear()
            reply = service.submit("create_items", RunOptions(atomic=atomic), planned, plan.total, 5.0)
            result, txn = reply["result"], reply["txn"]
            assert result is not None
            assert service.runs[txn].ended.wait(5.0)
            record = engine.runtime.log.batch(txn)
            results.append(_without(result, txn))
            records.append(_without({"state": record["state"], "kind": record["kind"], "request": record["request"],
                                     **record["result"]}, txn))
            threads.append({name for name, _, _ in progress.events})
            events.append([(event, tuple(a for a in args if a != txn)) for _, event, args in progress.events])
        items = sorted((item["id"], item["values"]) for item in engine.get_items("P"))
        return {"results": results, "records": records, "threads": threads, "events": events, "items": items}
    finally:
        service.close()
        engine.close()


def test_a_waited_one_phase_batch_runs_on_the_submitting_thread_and_gives_what_a_batch_thread_gives(tmp_path):
    here = _run_all(tmp_path / "here", here=True)
    pooled = _run_all(tmp_path / "pooled", here=False)
    me = threading.current_thread().name
    assert all(threads == {me} for threads in here["threads"]), here["threads"]
    assert all(all(name.startswith("batchray-batch") for name in threads) for threads in pooled["threads"])
    assert [(r["state"], r["success"]) for r in here["results"]] == [
        ("completed", True), ("rolled_back", False), ("completed", False), ("completed", True)]
    assert [len(r["errors"]) for r in here["results"]] == [0, 1, 1, 0]
    assert here["results"] == pooled["results"]
    assert here["records"] == pooled["records"]
    assert here["events"] == pooled["events"]
    assert here["items"] == pooled["items"] and len(here["items"]) == 10 + 9 + 3
