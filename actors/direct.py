"""The driver's direct lane on Ray: a small one-phase batch sent straight to its worker.

See :mod:`batchray.core.run.direct` for the protocol and what it gives up. :class:`DirectLane`
is its driver side: it learns from the coordinator each participant's worker (once, when the
driver connects: :meth:`DirectLane.attach`) and whether the lane is open (from every reply that
says so), sends a batch that may take the lane
as one ``WorkerActor.apply_alone`` call, and hands the coordinator the batch's record without
waiting for it. Records not yet answered are waited for before this driver's next call to the
coordinator (:meth:`DirectLane.settle`): the coordinator runs calls on many threads, so a
status query sent after a record could otherwise be served before it.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any, Callable, Optional

import ray
from ray.exceptions import GetTimeoutError, RayError

from actors.transport import plain_pickled
from batchray.core.model.batch import BatchResult, RunOptions
from batchray.core.plan.plan import Plan
from batchray.core.run.direct import DirectBatch, committed_result, lane_refusal
from batchray.core.run.executor import new_txn_id
from batchray.core.txn.chunks import TxnRef
from batchray.errors import BatchrayError

logger = logging.getLogger("batchray")


class DirectLane:
    """One driver's direct lane to a store's workers. ``coordinator``: gives the store's
    coordinator actor (the driver's current one: a driver that serves the store again after its
    owner died has a new one); ``call``: :func:`actors.runtime.ray_get`; ``max_bytes``: the
    largest chunk it takes, estimated; ``recheck``: called before a lost answer is resolved,
    the driver's check that the store's owner lives (which serves the store again, and attaches
    this lane again, when it died)."""

    MAX_PENDING = 64
    """Records in flight at most; past it the oldest is waited for."""

    ANSWER_WAIT = 5.0
    """Seconds (at most: less when the batch's timeout is shorter) the driver waits for the
    worker's answer before it has the batch resolved. A worker's answer takes milliseconds; one
    gone with its whole cluster never comes, and Ray ends a driver whose cluster's GCS stays
    unreachable for 60 s, so the driver must look at the owner before that."""

    def __init__(self, coordinator: Callable[[], Any], call: Any, max_bytes: int,
                 recheck: Callable[[], None] = lambda: None) -> None:
        self.coordinator = coordinator
        self.max_bytes = max_bytes
        self._call = call
        self._recheck = recheck
        self.open = False  # closed until a reply of the coordinator says otherwise
        self._tickets = itertools.count(1)
        self._heard_ticket = 0  # the ticket of the latest call whose answer set ``open``
        self._workers: Optional[dict[str, Any]] = None
        self._records: list[_Record] = []  # sent, not yet taken in
        self._abandoned: list[Any] = []  # refs of answers no longer waited for (:meth:`_abandon`)
        self._lock = threading.Lock()
        self.sent = 0  # batches sent by the lane (committed or not)
        self.committed = 0

    def ticket(self) -> int:
        """A number for a call to the coordinator about to be sent, for :meth:`heard`."""
        return next(self._tickets)

    def heard(self, open_now: Optional[bool], ticket: int) -> None:
        """The coordinator said whether the lane is open (a reply's ``lane``) in answer to the
        call of ``ticket``; an answer to a call sent before the latest one heard is stale."""
        if open_now is not None:
            with self._lock:
                if ticket > self._heard_ticket:
                    self._heard_ticket = ticket
                    self.open = bool(open_now)

    def run(self, plan: Plan, options: RunOptions, *, keyed: bool) -> Optional[BatchResult]:
        """The result of ``plan`` (chunks listed, encoded as the worker takes them) when it
        committed by the lane; None when it did not go (the lane is closed, or the batch may
        not take it: ``keyed``, the caller gave an idempotency key) or did not commit, and
        nothing of it remains: the caller runs it the usual way. Raises what resolving a lost
        answer raises (the participant never answered)."""
        self._collect()
        if not self.open or lane_refusal(plan, options, keyed=keyed, max_bytes=self.max_bytes) is not None:
            return None
        (planned,) = plan.chunks
        worker = self._worker(planned.participant)  # None: not attached, or no such participant
        txn, ts = new_txn_id(plan.kind.split("_")[0])
        # no lock is waited for: a lock held by another batch ends the try at once, and the
        # batch waits for it the usual way
        payload = plain_pickled((planned.participant, TxnRef(txn, ts, lock_deadline=time.time()), planned.chunk))
        if worker is None or payload is None:
            return None
        batch = DirectBatch(txn, ts, plan.kind, planned.participant, options, plan.total or planned.count)
        started = time.perf_counter()
        self.sent += 1
        answer = worker.apply_alone.remote(payload)
        try:
            summary = ray.get(answer, timeout=min(options.timeout / 1000, self.ANSWER_WAIT))
        except RayError as exc:  # GetTimeoutError, RayActorError, RayTaskError among them
            if isinstance(exc, GetTimeoutError):
                self._abandon(answer)
            # the apply raised (a lock held, a failed session) or its answer was lost: the
            # participant says how it ended, and makes that final
            logger.debug("direct batch %s: %s; resolving it at %s", txn, type(exc).__name__, planned.participant)
            self._recheck()
            if self._call(self.coordinator().resolve_direct.remote(batch)) != "committed":
                return None
            affected = planned.count  # a one-phase commit commits the chunk whole
        else:
            if not summary.vote:
                return None  # aborted there: its errors are found again the usual way
            affected = summary.affected
        result = committed_result(plan, batch, affected, time.perf_counter() - started)
        self._send_record(_Record(batch, result.dump()))
        self.committed += 1
        return result

    def _send_record(self, record: "_Record") -> None:
        record.ticket = self.ticket()
        record.ref = self.coordinator().record_direct.remote(record.batch, record.result)
        with self._lock:
            self._records.append(record)

    def attach(self) -> None:
        """Learn each participant's worker and whether the lane is open, now, while the
        coordinator is known to answer (the driver just connected): a worker's handle, the first
        time one is unpickled in this process, loads the worker's class from Ray's GCS, which
        a call made later could find gone with its cluster (an owner killed whole) and wait for
        until Ray ends this process. A lane that could not attach stays closed."""
        with self._lock:  # records sent to a coordinator before this one: sent again (written once)
            unanswered, self._records = self._records, []
        self._workers = None
        self.open = False
        ticket = self.ticket()
        try:
            lane = self._call(self.coordinator().lane.remote())
        except BatchrayError as exc:
            logger.warning("the direct lane is closed: the coordinator did not name the workers (%s)", exc)
            lane = None
        if lane is not None:
            self._workers = lane["workers"]
            self.heard(lane["open"], ticket)
        for record in unanswered:
            try:
                self._send_record(record)
            except Exception as exc:  # noqa: BLE001 - the batch committed; only its record is lost
                logger.warning("a direct batch's record was not written: %s", exc)

    def _abandon(self, answer: Any) -> None:
        """Keep the ref of an answer no longer waited for until it comes, and take it in then
        (:meth:`_collect`): an apply that the resolve overtook ends in an error
        (``TransactionAborted``), which Ray prints as an unhandled error, with its traceback,
        when a ref that holds one is dropped unread."""
        with self._lock:
            self._abandoned.append(answer)

    def _read_abandoned(self) -> None:
        """Read the abandoned answers that have come (their errors are expected: the batch was
        resolved without them); the others are kept."""
        with self._lock:
            refs, self._abandoned = self._abandoned, []
        if not refs:
            return
        done, pending = ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in done:
            try:
                ray.get(ref)
            except RayError:
                pass
        with self._lock:
            self._abandoned[:0] = pending

    def _worker(self, participant: str) -> Any:
        return None if self._workers is None else self._workers.get(participant)

    def _collect(self) -> None:
        """Take in the records answered so far (each says whether the lane is open); past
        ``MAX_PENDING`` in flight, wait for the oldest."""
        self._read_abandoned()
        with self._lock:
            records, self._records = self._records, []
        if not records:
            return
        done, _ = ray.wait([r.ref for r in records], num_returns=len(records), timeout=0)
        answered = set(done)
        ready = [r for r in records if r.ref in answered]
        pending = [r for r in records if r.ref not in answered]
        if len(pending) > self.MAX_PENDING:
            ready += pending[:len(pending) - self.MAX_PENDING]
            pending = pending[len(pending) - self.MAX_PENDING:]
        self._take(ready)
        with self._lock:
            self._records[:0] = pending

    def settle(self) -> None:
        """Wait until every record sent is written (before this driver's next call to the
        coordinator, which must see them)."""
        self._read_abandoned()
        with self._lock:
            records, self._records = self._records, []
        self._take(records)

    def _take(self, records: list["_Record"]) -> None:
        for record in records:
            try:
                self.heard(self._call(record.ref), record.ticket)
            except BatchrayError as exc:  # the batch committed; only its record failed
                logger.warning("a direct batch's record was not written: %s", exc)
                self.open = False


class _Record:
    """A committed direct batch's record as sent to the coordinator: ``ref`` of the call (its
    answer says whether the lane is open), the ``ticket`` it was sent under."""

    __slots__ = ("batch", "result", "ticket", "ref")

    def __init__(self, batch: DirectBatch, result: dict[str, Any]) -> None:
        self.batch = batch
        self.result = result
        self.ticket = 0
        self.ref: Any = None
