"""The simulated network between the coordinator and the shards: :class:`SimTransport`.

The coordinator reaches the shards through this transport, which decides, with the
seed's own random generator, what happens to each message:

* ``drop_request``: lost before delivery (the coordinator sees ``ParticipantUnavailable``);
* ``drop_reply``: delivered, but the reply is lost;
* ``duplicate``: delivered twice (both replies must agree);
* ``delay``: held back and delivered later, at a random point, possibly long after the
  transaction finished and after the shard was restarted with a newer epoch;
* ``crash_before`` / ``crash_during`` / ``crash_after``: the shard process dies before the step,
  at the step's durable write (a :class:`~batchray.core.txn.crashpoints.SimulatedCrash` from the crash
  points, so the write does not happen), or after it; the shard stays down for a few messages
  and is then restarted: the file is reopened, which runs its recovery, and a newer epoch is
  claimed; ``bystander_crash`` does the same to another shard, idle at that moment (between
  its apply and its vote, say).

Coordinator crashes, restarts of everything and recovery are the run loop's
(:mod:`~batchray.testing.sim.simulation`).

Contract: :class:`SimTransport` is a :class:`~batchray.core.txn.twophase.Transport`; every step
runs at once (handles are ready when submitted), and every fault is drawn from the
simulation's fault generator, so a seed makes the same faults at the same messages. It
delivers through the simulation (``deliver``, ``hold``, ``crash_shard``...), which owns the
shards.
"""
from __future__ import annotations

import random
from typing import Any, Optional

from batchray.core.txn.chunks import TxnRef
from batchray.core.txn.crashpoints import SimulatedCrash
from batchray.errors import ParticipantUnavailable
from batchray.testing.sim.config import Faults


class Handle:
    """A finished step: its value, or the error the coordinator will see."""

    __slots__ = ("ok", "value")

    def __init__(self, ok: bool, value: Any) -> None:
        self.ok = ok
        self.value = value


class SimTransport:
    """A deterministic, faulty :class:`~batchray.core.txn.twophase.Transport` over the simulation's shards.

    Every step runs at once (handles are ready when submitted); faults are drawn from the
    simulation's fault generator, so the same seed makes the same faults at the same messages.
    """

    def __init__(self, sim: Any) -> None:  # a Simulation
        self.sim = sim
        self.enabled = True
        # whether the coordinator may send a participant's last chunk as ``apply+prepare`` (apply
        # and vote in one durable write); drawn per transaction, so both paths are exercised
        self.merges_prepare = False

    def submit(self, participant: str, step: str, ref: TxnRef, chunk: Any = None) -> Handle:
        sim = self.sim
        sim.messages += 1
        when = sim.coordinator_crash_at_message()
        if when == "before":
            sim.event("coordinator-crash", "before-message", participant, step, ref.txn)
            raise SimulatedCrash("coordinator crash before sending a message")
        if not self.enabled:
            return self._plain(participant, step, ref, chunk)
        f = sim.faults
        rng = sim.fault_rng
        if sim.held and rng.random() < f.deliver_late:
            sim.deliver_held(rng.randrange(len(sim.held)))
        if rng.random() < f.bystander_crash:
            other = rng.choice([n for n in sim.names if n != participant])
            if sim.shards[other] is not None:
                sim.count("bystander_crash")
                sim.crash_shard(other, downtime=0)  # back by its next message
        if sim.shards[participant] is None:
            if sim.down[participant] > 0:
                sim.down[participant] -= 1
                sim.event("msg", participant, step, ref.txn, "down")
                return self._unavailable(participant, "is down")
            sim.restart_shard(participant)
        if when == "after":
            handle = self._plain(participant, step, ref, chunk)
            sim.event("coordinator-crash", "after-message", participant, step, ref.txn)
            raise SimulatedCrash("coordinator crash after sending a message")
        fault = self._draw(rng, f)
        if fault is None:
            return self._plain(participant, step, ref, chunk)
        if fault == "drop_request":
            sim.count(fault)
            sim.event("msg", participant, step, ref.txn, fault)
            return self._unavailable(participant, "did not get the request")
        if fault == "delay":
            sim.count(fault)
            sim.event("msg", participant, step, ref.txn, fault)
            sim.hold(participant, step, ref, chunk)
            return self._unavailable(participant, "did not answer in time")
        if fault == "crash_before":
            sim.count(fault)
            sim.event("msg", participant, step, ref.txn, fault)
            sim.crash_shard(participant)
            return self._unavailable(participant, "crashed")
        if fault == "crash_during":
            with sim.participant_crash_armed(participant):
                try:
                    handle = sim.deliver(participant, step, ref, chunk)
                except SimulatedCrash:
                    sim.count(fault)
                    sim.event("msg", participant, step, ref.txn, fault)
                    sim.crash_shard(participant)
                    return self._unavailable(participant, "crashed")
            sim.event("msg", participant, step, ref.txn, "no-write", brief(handle))
            return handle
        handle = sim.deliver(participant, step, ref, chunk)
        sim.count(fault)
        sim.event("msg", participant, step, ref.txn, fault, brief(handle))
        if fault == "crash_after":
            sim.crash_shard(participant)
            return self._unavailable(participant, "crashed")
        if fault == "drop_reply":
            return self._unavailable(participant, "reply lost")
        # duplicate: deliver again; a repeated step must answer as the first did
        again = sim.deliver(participant, step, ref, chunk)
        sim.event("dup", participant, step, ref.txn, brief(again))
        if handle.ok and again.ok and _answer(step, handle.value) != _answer(step, again.value):
            sim.violation(
                f"{ref.txn}: a repeated {step} on {participant} answered {_answer(step, again.value)!r}, "
                f"the first {_answer(step, handle.value)!r}"
            )
        return handle

    def _plain(self, participant: str, step: str, ref: TxnRef, chunk: Any) -> Handle:
        if self.sim.shards[participant] is None:
            self.sim.restart_shard(participant)
        handle = self.sim.deliver(participant, step, ref, chunk)
        self.sim.event("msg", participant, step, ref.txn, brief(handle))
        return handle

    @staticmethod
    def _draw(rng: random.Random, f: Faults) -> Optional[str]:
        r = rng.random()
        for kind, p in (
            ("drop_request", f.drop_request),
            ("drop_reply", f.drop_reply),
            ("duplicate", f.duplicate),
            ("delay", f.delay),
        ):
            if r < p:
                return kind
            r -= p
        if r < f.participant_crash:
            return rng.choice(("crash_before", "crash_during", "crash_after"))
        return None

    @staticmethod
    def _unavailable(participant: str, why: str) -> Handle:
        return Handle(False, ParticipantUnavailable(f"participant {participant} {why}", participant=participant))

    def wait(self, handles: list[Any], timeout: Optional[float] = None) -> tuple[list[Any], list[Any]]:
        return list(handles), []

    def result(self, handle: Handle) -> Any:
        if handle.ok:
            return handle.value
        raise handle.value


def brief(handle: Handle) -> str:
    if not handle.ok:
        return type(handle.value).__name__
    value = handle.value
    if value is None:
        return "ok"
    if isinstance(value, bool):
        return str(value)
    vote = getattr(value, "vote", None)
    return f"images:{getattr(value, 'affected', '?')}/{len(getattr(value, 'errors', ()))}" + (
        "" if vote is None else f"/vote={vote}")


def _answer(step: str, value: Any) -> Any:
    if step.startswith("apply"):
        return (value.affected, sorted(value.items), len(value.errors), getattr(value, "vote", None))
    return value
