"""The settler: finishes, in the background, batches whose run ended before their outcome
reached every participant.

A store that fails at the decision or in phase 2 (a PostgreSQL server that crashed, a
participant that stopped answering past the phase-2 deadline) leaves a batch decided but not
delivered, or undecided with prepared state: its participants hold the batch's locks and undo
data. Recovery finishes such a batch, but it runs when a coordinator starts (or on
``batchray recover``); until then the items stay locked. The 2PC driver names these batches
(:attr:`~batchray.core.txn.twophase.TwoPhaseCommit.on_unsettled`) and the settler retries
:func:`~batchray.core.txn.twophase.settle` on each, with backoff (``first_delay`` doubling up
to ``max_delay`` seconds), until it reports the batch finished or the settler is closed.

Contract: ``finish(txn) -> bool`` is only given batches no driver runs any more; it is
idempotent (delivering an outcome twice is harmless), so a batch also finished by recovery
meanwhile is settled again without effect.
"""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Callable

from batchray.core.txn.twophase import settle
from batchray.errors import BatchrayError

if TYPE_CHECKING:
    from batchray.core.run.executor import Executor


class Settler:
    """One daemon thread, started when a batch is added and ended when none is left."""

    def __init__(self, finish: Callable[[str], bool], *, first_delay: float = 0.5, max_delay: float = 10.0) -> None:
        self._finish = finish
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._pending: set[str] = set()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.settled: list[str] = []
        """Batches finished here, oldest first (for status and tests)."""

    def add(self, txn: str) -> None:
        """Finish ``txn`` in the background (a batch its driver gave up on)."""
        with self._wake:
            if self._closed:
                return
            self._pending.add(txn)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="batchray-settler", daemon=True)
                self._thread.start()

    @property
    def pending(self) -> list[str]:
        with self._wake:
            return sorted(self._pending)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify_all()

    def _loop(self) -> None:
        delay = self.first_delay
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._closed, timeout=delay)
                if self._closed or not self._pending:
                    self._thread = None
                    return
                batch = sorted(self._pending)
            progressed = False
            for txn in batch:
                try:
                    done = self._finish(txn)
                except BatchrayError as exc:  # the store is still away: try again later
                    logging.getLogger("batchray").info("batch %s not settled yet: %s", txn, exc.message)
                    done = False
                except Exception as exc:  # noqa: BLE001 - a store bug must not end the settler
                    logging.getLogger("batchray").warning("settling batch %s failed: %r", txn, exc)
                    done = False
                if done:
                    progressed = True
                    with self._wake:
                        self._pending.discard(txn)
                        self.settled.append(txn)
            delay = self.first_delay if progressed else min(self.max_delay, delay * 2)


def attach_settler(executor: "Executor") -> Settler:
    """A settler for the batches ``executor``'s driver gives up on (every runtime wires one:
    the Ray coordinator's service and the in-process runtime)."""
    participants = executor.layout.participant_names
    settler = Settler(lambda txn: settle(executor.log, executor.driver, txn, participants))
    executor.driver.on_unsettled = settler.add
    return settler
