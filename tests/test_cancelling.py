"""The stop a running batch looks for (:class:`batchray.core.run.cancelling.StopCheck`), with
the interleavings a driver thread and a cancelling thread can take made deterministic (no
store, no Ray; fast).

What these tests show: a cancellation that lands while the driver is reading its deadline is
kept (the look writes only a timeout, never the ``None`` it read before); a timeout is kept once
it passed; the last look before the decision notes the attempt decided.
"""
from __future__ import annotations

import threading
from types import SimpleNamespace

from batchray.core.run.cancelling import StopCheck
from batchray.errors import BatchTimeout, CancelledError


def _run():
    return SimpleNamespace(stop=None, decided_in=None)


def test_a_cancellation_that_lands_while_the_deadline_is_read_is_kept():
    run = _run()
    cancelled = CancelledError("batch b was cancelled", rollback=True, graceful=True)

    def deadline_read_meanwhile():  # the cancelling thread sets the stop between the look and its write
        run.stop = cancelled
        return None

    check = StopCheck(run, deadline_read_meanwhile, threading.Lock(), lambda: "b")
    assert check() is cancelled and run.stop is cancelled
    assert check.close() is cancelled and run.decided_in == "b"


def test_a_timeout_is_the_stop_once_it_passed_and_stays_it():
    run, now = _run(), {"late": False}
    timeout = BatchTimeout("batch b ran past its timeout")
    check = StopCheck(run, lambda: timeout if now["late"] else None, threading.Lock(), lambda: "b.r2")
    assert check() is None and run.stop is None
    now["late"] = True
    assert check() is timeout
    now["late"] = False  # read once: a timeout stays the stop
    assert check.close() is timeout and run.decided_in == "b.r2"
