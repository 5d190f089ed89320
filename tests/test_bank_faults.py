"""The bank workload on Ray under kills: money is conserved, never overdrawn, every acknowledged
transfer is durable and every transfer whose outcome its client never learnt is all-or-nothing.

The run itself (clients, faults, final checks) is :func:`bank_soak.run_bank`; its docstring
says what is killed and what is checked. Here:

* ``test_bank_under_faults`` (CI): 3 client processes for at least 12 s, a fault every 0.2 to
  0.6 s after the last one's end (the soak's 0.5 to 1.5 s: the same seeded faults, in less
  time), at least 12 kills (SIGKILLs of workers, of the coordinator and of clients, and exits at
  crash points in the middle of two-phase commit), then a SIGKILL of every store process at
  once, recovery and the history check.
* ``test_bank_under_pauses`` (soak; the suite pauses a replaced owner in ``test_pauses``): the same workload with two pauses only: a worker
  or the coordinator frozen with SIGSTOP for 11 to 14 s, past the 10 s lock timeout and the
  clients' 10 s wait for a reply (anywhere, or held at a point of two-phase commit), then
  woken; other clients' batches go on meanwhile, none hangs past its client's timeout.
* ``test_bank_soak``: kills and pauses (a fifth of the faults) for ``BATCHRAY_SOAK_MINUTES``
  minutes (default 10), by hand: ``pytest -m soak tests/test_bank_faults.py`` (or
  ``python -m tests.bank_soak --minutes 10``).

Seeded by ``BATCHRAY_FAULT_SEED``: the choice of faults and of transfers is reproducible; the
timing of a kill against the workload is not (real processes).
"""
from __future__ import annotations

import json
import os

import pytest

from bank_soak import describe, run_bank
from fault_rig import SEED

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]


def _report(figures: dict, tmp_path) -> None:
    print("\n" + describe(figures))
    (tmp_path / "figures.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps({k: v for k, v in figures.items() if k != "final balances"}, indent=2))


def test_bank_under_faults(cluster, tmp_path):
    figures = run_bank(cluster, tmp_path, seconds=12, min_kills=12, seed=SEED, interval=(0.2, 0.6))
    _report(figures, tmp_path)
    assert figures["kills"] >= 12
    assert figures["anomalies"] == []
    transfers = figures["transfers"]
    assert transfers.get("ok", 0) > 0 and figures["reads"].get("ok", 0) > 0
    assert figures["kills by kind"].get("crash-point exit", 0) > 0


@pytest.mark.soak
def test_bank_under_pauses(cluster, tmp_path):
    figures = run_bank(cluster, tmp_path, seconds=0, min_kills=0, min_pauses=2, seed=SEED, pauses=1.0,
                       interval=(0.3, 0.6))
    _report(figures, tmp_path)
    assert sum(figures["pauses"].values()) >= 2 and figures["anomalies"] == []
    assert figures["transfers"].get("ok", 0) > 0


@pytest.mark.soak
def test_bank_soak(cluster, tmp_path, request):
    """``BATCHRAY_SOAK_MINUTES`` (default 10) minutes of faults; by hand: ``pytest -m soak``."""
    expression = request.config.getoption("-m") or ""
    if "soak" not in expression or "not soak" in expression:
        pytest.skip("a soak run: select it with pytest -m soak")
    minutes = float(os.environ.get("BATCHRAY_SOAK_MINUTES", "10"))
    figures = run_bank(cluster, tmp_path, seconds=60 * minutes, min_kills=0, seed=SEED, pauses=0.2)
    _report(figures, tmp_path)
    assert figures["anomalies"] == []
