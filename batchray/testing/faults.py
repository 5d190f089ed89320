"""A participant wrapper that fails or crashes at the step you name.

``FaultyParticipant(shard, fail_at="prepare")`` raises :class:`InjectedFault` (a retryable-free
:class:`~batchray.errors.StoreError`) the first ``times`` times that step is called;
``crash_at="commit"`` raises :class:`~batchray.core.txn.crashpoints.SimulatedCrash` instead, which
models the process dying there: the caller must reopen the shard (a restart) to go on.
``when="after"`` lets the step's own durable effect happen before the fault (a crash after
the write, before the reply).

A :class:`FaultyParticipant` is itself a :class:`~batchray.core.txn.participant.Participant`:
the steps are its own, everything else is the wrapped participant's.
"""
from __future__ import annotations

from typing import Any, Optional

from batchray.core.storage.participant_base import vote_with_apply
from batchray.core.txn.chunks import BeforeImages, Chunk, TxnRef
from batchray.core.txn.crashpoints import SimulatedCrash
from batchray.core.txn.participant import Participant, Step
from batchray.errors import StoreError

STEPS = (Step.APPLY, Step.PREPARE, Step.COMMIT, Step.ABORT)
"""The steps a fault can be armed at (given as a :class:`Step` or its value)."""


class InjectedFault(StoreError):
    """The failure a :class:`FaultyParticipant` injects."""


class FaultyParticipant:
    """Delegates to ``inner`` except at the armed step; see the module docstring."""

    def __init__(
        self,
        inner: Participant,
        *,
        fail_at: Optional[str | Step] = None,
        crash_at: Optional[str | Step] = None,
        when: str = "before",
        times: int = 1,
        on_call: int = 1,
    ) -> None:
        for step in (fail_at, crash_at):
            if step is not None and step not in STEPS:
                raise ValueError(f"unknown step {step!r}; one of {STEPS}")
        if when not in ("before", "after"):
            raise ValueError("when must be 'before' or 'after'")
        self.inner = inner
        self.fail_at = Step(fail_at) if fail_at is not None else None
        self.crash_at = Step(crash_at) if crash_at is not None else None
        self.when = when
        self.times = times
        self.on_call = on_call
        self.calls: dict[Step, int] = {step: 0 for step in STEPS}
        self.injected = 0

    @property
    def name(self) -> str:
        return self.inner.name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)

    def _step(self, step: Step, *args: Any) -> Any:
        armed = self._armed(step)
        if armed and self.when == "before":
            self._inject(step)
        value = getattr(self.inner, step)(*args)
        if armed and self.when == "after":
            self._inject(step)
        return value

    def _armed(self, step: Step) -> bool:
        """Count a call of ``step``; whether a fault is due at it."""
        self.calls[step] += 1
        return step in (self.fail_at, self.crash_at) and self.calls[step] >= self.on_call and self.injected < self.times

    def _inject(self, step: Step) -> None:
        self.injected += 1
        if step == self.crash_at:
            raise SimulatedCrash(f"injected crash at {step} of {self.name}")
        raise InjectedFault(f"injected failure at {step} of {self.name}", shard=self.name, step=step.value)

    def apply(self, ref: TxnRef, chunk: Chunk, prepare: bool = False, commit: bool = False) -> BeforeImages:
        if commit:
            # a one-phase commit is one durable write: a fault armed at apply comes before it
            # (nothing of the batch is written), one armed at commit after it (it committed)
            if self._armed(Step.APPLY):
                self._inject(Step.APPLY)
            images = self.inner.apply(ref, chunk, commit=True)
            if images.vote and self._armed(Step.COMMIT):
                self._inject(Step.COMMIT)
            return images
        images = self._step(Step.APPLY, ref, chunk)
        if prepare:  # keep the two steps apart, so a fault can be injected at either
            vote_with_apply(images, lambda: self.inner.ready_to_prepare(ref), lambda: self._step(Step.PREPARE, ref))
        return images

    def prepare(self, ref: TxnRef) -> bool:
        return self._step(Step.PREPARE, ref)

    def commit(self, ref: TxnRef) -> None:
        self._step(Step.COMMIT, ref)

    def abort(self, ref: TxnRef) -> None:
        self._step(Step.ABORT, ref)
