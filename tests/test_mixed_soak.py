"""The mixed soak (``tests/mixed_soak.py``): every fault kind at once, on Ray, against a
PostgreSQL server of its own, for ``BATCHRAY_SOAK_SECONDS`` (default 600) seconds.

* ``test_mixed_soak`` (``-m soak`` only): the run; the seed is ``BATCHRAY_SOAK_SEED``
  (default 20261205), the JSON record is printed and written to ``BATCHRAY_SOAK_RECORD`` when
  set; it must find no anomaly. By hand::

      BATCHRAY_SOAK_SECONDS=600 BATCHRAY_SOAK_RECORD=record.json python -m pytest -n 0 -m soak tests/test_mixed_soak.py -s

* The default suite checks the soak's own machinery in well under a second, so that a change
  that breaks it fails there: the fault scheduler is seeded and deterministic, takes every kind
  in its first round and never a kind left out; every kind has a handler; the record counts a
  planted anomaly (a lost acknowledged transfer in a history, a store that refuses the final
  deposit) and is valid only without one.
"""
from __future__ import annotations

import os
from collections import Counter

import pytest

from mixed_soak import (DEFAULT_SEED, HANDLERS, KINDS, PATIENCE, FaultScheduler, MixedBank, deposit_anomalies,
                        error_kinds, hung_transfers, make_record, run_mixed)

from batchray.testing.history import check


def _draws(seed: int, kinds: dict[str, float], n: int) -> list[tuple[float, str]]:
    scheduler = FaultScheduler(seed, kinds)
    return [scheduler.next() for _ in range(n)]


def test_the_fault_scheduler_is_seeded_and_deterministic():
    first = _draws(7, KINDS, 200)
    assert first == _draws(7, KINDS, 200)
    assert first != _draws(8, KINDS, 200)
    assert {kind for _, kind in first[:len(KINDS)]} == set(KINDS)  # every kind in the first round
    assert all(1.0 <= delay <= 3.0 for delay, _ in first)
    later = Counter(kind for _, kind in first[len(KINDS):])
    assert later["worker SIGKILL"] > later["client SIGKILL"]  # drawn by weight
    fewer = {k: w for k, w in KINDS.items() if k != "disk full"}
    assert "disk full" not in {kind for _, kind in _draws(7, fewer, 200)}
    with pytest.raises(ValueError):
        FaultScheduler(7, {})


def test_every_fault_kind_has_a_handler():
    assert set(HANDLERS) == set(KINDS)
    assert all(callable(getattr(MixedBank, name)) for name in HANDLERS.values())


def _history(acknowledged_in_store: str) -> tuple[list[dict], dict]:
    invoke = {"process": "c1", "type": "invoke", "f": "transfer", "key": "c1-1", "time": 1.0,
              "value": {"deltas": {"1": -5, "2": 5}}}
    ok = {"process": "c1", "type": "ok", "f": "transfer", "key": "c1-1", "time": 1.2, "txn": "t1", "value": None}
    return [invoke, ok], {"c1-1": acknowledged_in_store}


def _record(anomalies: list[str]) -> dict:
    figures = {"anomalies": anomalies, "batches in the store": {"completed": 3, "rolled_back": 1},
               "fault seconds": 1.0}
    return make_record(figures, seed=1, seconds=1, command="x", injected=Counter({"server crash": 2}),
                       not_reached=Counter(), left_out={})


def test_the_record_counts_a_planted_anomaly():
    initial = {"1": 20, "2": 20}
    entries, outcomes = _history("completed")
    clean = check(entries, initial=initial, final={"1": 15, "2": 25}, outcomes=outcomes)
    record = _record([str(a) for a in clean.anomalies] + deposit_anomalies(
        {"success": True}, {"1": 15, "2": 25}, {"1": 16, "2": 26}))
    assert record["valid"] and record["anomaly count"] == 0, record
    assert (record["batches committed"], record["batches rolled back"], record["faults by kind"]) == (
        3, 1, {"server crash": 2})

    entries, outcomes = _history("absent")  # acknowledged, but the store lost it
    lost = check(entries, initial=initial, final={"1": 20, "2": 20}, outcomes=outcomes)
    refused = deposit_anomalies({"success": False, "error": {"code": "STORE"}}, initial, initial)
    half = deposit_anomalies({"success": True}, initial, {"1": 21, "2": 20})
    record = _record([str(a) for a in lost.anomalies] + refused + half)
    assert not record["valid"] and record["anomaly count"] == len(lost.anomalies) + 2 >= 3, record
    assert "not writable" in record["anomalies"][-2] and "deposit of 1" in record["anomalies"][-1]


def test_a_transfer_past_its_timeout_is_an_anomaly_and_errors_are_grouped():
    def unknown(key: str, error: str) -> dict:
        return {"process": "c1", "type": "unknown", "f": "transfer", "key": key, "time": 2.0, "error": error}

    ray_error = "RayTaskError(StoreError): \x1b[36mray::TransactionCoordinator.submit()\x1b[39m (pid={}, ip=1) ^^^^ "
    entries = [unknown("c1-1", f"no result in {PATIENCE:.1f} s"), unknown("c1-2", "no result in 0.7 s"),
               unknown("c1-3", ray_error.format(12) + "the decision log is unreachable"),
               unknown("c1-4", ray_error.format(34) + "the decision log is unreachable")]
    hung = hung_transfers(entries, PATIENCE)
    assert len(hung) == 1 and hung[0].startswith("c1-1:"), hung  # an impatient client's give-up is not judged
    kinds = error_kinds(entries)
    assert kinds["transfer unknown: RayTaskError(StoreError): the decision log"] == 2, kinds


@pytest.mark.soak
@pytest.mark.postgres
@pytest.mark.faults
@pytest.mark.timeout(0)  # as long as BATCHRAY_SOAK_SECONDS says
def test_mixed_soak(tmp_path):
    pytest.importorskip("ray")
    pytest.importorskip("psycopg")
    from pg_server import server_binaries

    if server_binaries() is None:
        pytest.skip("no PostgreSQL server binaries (install postgresql, or set BATCHRAY_TEST_PG_BIN)")
    seconds = float(os.environ.get("BATCHRAY_SOAK_SECONDS", "600"))
    seed = int(os.environ.get("BATCHRAY_SOAK_SEED", DEFAULT_SEED))
    print(f"mixed soak seed {seed} (BATCHRAY_SOAK_SEED), {seconds:g} s (BATCHRAY_SOAK_SECONDS)")
    command = (f"BATCHRAY_SOAK_SEED={seed} BATCHRAY_SOAK_SECONDS={seconds:g} "
               "python -m pytest -m soak tests/test_mixed_soak.py")
    record = run_mixed(tmp_path, seconds=seconds, seed=seed, command=command,
                       record=os.environ.get("BATCHRAY_SOAK_RECORD"))
    assert record["anomalies"] == [], f"seed {seed}: {record['anomalies']}"
    assert record["faults injected"] > 0 and record["batches committed"] > 0, record
