"""The mixed soak: every kind of fault at once, on Ray, against a PostgreSQL store, for
``seconds`` (the runner behind ``test_mixed_soak``; also run by hand)::

    python -m tests.mixed_soak --seconds 600 --seed 20261205 --record record.json

What one run does:

1. **A server of its own** (``tests/pg_server.py``: ``.ci/postgres.sh start``), whose role's
   tables live on a small tmpfs tablespace when this process may mount one (root), so that the
   disk can be filled; a Ray cluster of its own (``tests/fault_rig.py``).
2. **The bank** of ``tests/bank_soak.py`` on a 2-shard PostgreSQL store served by 2 worker
   actors and the coordinator: several client processes run transfers (each an atomic batch with
   a 30 s batch timeout and an idempotency key) and reads, and log every operation for the
   history checker (:mod:`batchray.testing.history`).
3. **The faults**, one at a time, 1 to 3 s apart, each kind chosen by :class:`FaultScheduler`
   (a seeded RNG: the first round takes every kind once, in a shuffled order, then kinds are drawn
   by weight), see :data:`KINDS`:

   * kills: SIGKILL of a worker, of the coordinator, of a client (replaced); ``os._exit`` of the
     process that reaches an armed point of two-phase commit;
   * pauses: a worker or the coordinator frozen with SIGSTOP for 11 to 14 s (past the 10 s lock
     and reply timeouts; every other one held at a protocol point first), then SIGCONT;
   * the server crashed (``pg_ctl stop -m immediate``), every other time while a process is
     held at a 2PC point (a shard's apply, its prepare, the decision written, a shard's commit),
     and started again 0.5 to 3 s later;
   * refusals for 1 to 3 s: the role's connection limit reached (its sessions ended),
     ``max_prepared_transactions`` used up by other sessions, the server read-only, the
     tablespace's disk full;
   * slow commits for 1 to 4 s: ``synchronous_standby_names`` names a standby that does not
     exist, so every commit (``COMMIT``, ``PREPARE TRANSACTION``, ``COMMIT PREPARED``) of the
     server waits until the setting is lifted (the server's own way of not acknowledging a
     commit before it is durable elsewhere).

   A kind this machine cannot inject (disk full without root) is left out, with its reason in
   the record.
4. **The checks.** A patient client waits 75 s for a transfer's result (the 30 s batch timeout
   and a 45 s grace for a pause or a restart): a transfer still without one is a batch hung past
   its timeout. Clients stopped, every batch must reach a final state within that time too; then
   every store process is SIGKILLed, a driver
   recovers, and the history checker, the registry and decision log (:meth:`Bank.finish`) judge
   every transfer; ``pg_prepared_xacts`` must be empty; a deposit over every account must commit
   and show (the store writable after). Each failure is an anomaly (target 0), collected rather
   than raised, so that the record counts them all.
5. **The record** (:func:`make_record`): seed, faults injected per kind, faults armed but not
   reached, kinds left out and why, batches committed / rolled back, operations, anomalies;
   printed as JSON and written where ``record`` says.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the rig's modules, when run with python -m

from bank_soak import Bank  # noqa: E402
from batchray.testing.history import load  # noqa: E402
from fault_rig import ray_cluster  # noqa: E402
from pg_server import OwnServer, PreparedSlots, Unavailable, fill, small_tablespace  # noqa: E402

KINDS: dict[str, float] = {  # kind: weight of the draws after the first round
    "worker SIGKILL": 2.0,
    "coordinator SIGKILL": 1.0,
    "crash-point exit": 2.0,
    "client SIGKILL": 0.5,
    "worker SIGSTOP": 0.6,
    "coordinator SIGSTOP": 0.6,
    "server crash": 1.5,
    "connection limit reached": 0.7,
    "max_prepared_transactions used up": 0.7,
    "read-only server": 0.5,
    "disk full": 0.6,
    "slow commits": 1.0,
}
HANDLERS = {  # kind: the method of MixedBank that injects it
    "worker SIGKILL": "sigkill_worker",
    "coordinator SIGKILL": "sigkill_coordinator",
    "crash-point exit": "exit_at_crash_point",
    "client SIGKILL": "kill_client",
    "worker SIGSTOP": "pause_worker",
    "coordinator SIGSTOP": "pause_coordinator",
    "server crash": "crash_server",
    "connection limit reached": "limit_connections",
    "max_prepared_transactions used up": "use_up_prepared",
    "read-only server": "read_only",
    "disk full": "fill_disk",
    "slow commits": "slow_commits",
}
INTERVAL = (1.0, 3.0)  # seconds between two faults
WINDOW = (1.0, 3.0)  # seconds a refusal lasts
SLOW = (1.0, 4.0)  # seconds commits wait
RESTART = (0.5, 3.0)  # seconds a crashed server stays down
SERVER_CRASH_POINTS = ["shard-0000:apply", "shard-0001:prepare", "log:decide", "shard-0000:committed"]
BATCH_TIMEOUT_MS = 30_000
GRACE = 45.0  # seconds past a batch's timeout (a pause of 14 s, a restart) before it counts as hung
PATIENCE = BATCH_TIMEOUT_MS / 1000 + GRACE  # a patient client's wait for a transfer's result
ABSENT_STANDBY = "batchray_soak_absent_standby"
TABLESPACE_MB = 64
DEFAULT_SEED = 20261205


class FaultScheduler:
    """The soak's choice of faults: ``next()`` gives (seconds to wait, kind). Seeded and
    deterministic: the same seed and kinds give the same sequence. The first ``len(kinds)``
    draws are every kind once, shuffled; later ones are drawn by weight."""

    def __init__(self, seed: int, kinds: dict[str, float], interval: tuple[float, float] = INTERVAL) -> None:
        if not kinds:
            raise ValueError("no fault kind to schedule")
        self.rng = random.Random(f"{seed}:faults")
        self.kinds = dict(kinds)
        self.interval = interval
        self.first_round = sorted(self.kinds)
        self.rng.shuffle(self.first_round)

    def next(self) -> tuple[float, str]:
        delay = self.rng.uniform(*self.interval)
        if self.first_round:
            return delay, self.first_round.pop(0)
        names = sorted(self.kinds)
        return delay, self.rng.choices(names, weights=[self.kinds[n] for n in names])[0]


class MixedBank(Bank):
    """The bank of :mod:`bank_soak` on a PostgreSQL store, with the server's faults besides the
    kills and pauses; :meth:`inject` runs one fault of a kind, :meth:`finish` collects anomalies."""

    def __init__(self, address: str, root: Path, server: OwnServer, *, seed: int, disk: Optional[Path],
                 say: Callable[[str], None] = print) -> None:
        super().__init__(address, root, seed=seed, say=say, store=server.url("mixed_soak"),
                         client_config={"batch_timeout_ms": BATCH_TIMEOUT_MS, "timeout": PATIENCE})
        self.server = server
        self.disk = disk  # the small tablespace's mount point, or None
        self.slots = PreparedSlots(server)
        self.anomalies = []  # collected, not raised
        self.injected: Counter = Counter()
        self.not_reached: Counter = Counter()

    # -- faults ---------------------------------------------------------------------------------
    def inject(self, kind: str) -> str:
        """One fault of ``kind``; what it did. Counted in :attr:`injected` when it happened."""
        missed = self.missed
        what = getattr(self, HANDLERS[kind])()
        if self.missed > missed or what.endswith("already gone"):
            self.not_reached[kind] += 1
        else:
            self.injected[kind] += 1
        return what

    def sigkill_worker(self) -> str:
        return self.kill_worker(self.rig.pids())

    def sigkill_coordinator(self) -> str:
        return self.kill_coordinator(self.rig.pids())

    def pause_worker(self) -> str:
        return self.pause(self.rig.pids(), "worker")

    def pause_coordinator(self) -> str:
        return self.pause(self.rig.pids(), "coordinator")

    def crash_server(self) -> str:
        """``pg_ctl stop -m immediate``, every other time with a process held at a 2PC point
        (let go once the server is down; if none reaches it in 3 s, the crash comes anyway),
        then a start 0.5 to 3 s later."""
        held, note = None, ""
        if self.injected["server crash"] % 2 == 0:
            label = self.rng.choice(SERVER_CRASH_POINTS)
            held = self.reach(f"s{self.injected['server crash']}-{self.rng.randrange(10**6)}", label, "hold")
            note = f" at {held['label']}" if held else f" ({label} not reached in 3 s: wherever batches were)"
        down = self.rng.uniform(*RESTART)
        try:
            self.server.crash()
        finally:
            if held is not None:
                self.rig.release()
        time.sleep(down)
        self.server.start()
        return f"server crashed{note}, down {down:.1f} s"

    def refuse(self, start: Callable[[], None], lift: Callable[[], None],
               window: tuple[float, float] = WINDOW) -> str:
        """``start()``, a window of ``window`` seconds, ``lift()``."""
        seconds = self.rng.uniform(*window)
        try:
            start()
            time.sleep(seconds)
        finally:
            lift()
        return f"for {seconds:.1f} s"

    def limit_connections(self) -> str:
        return self.refuse(self.server.limit_connections, self.server.unlimit_connections)

    def use_up_prepared(self) -> str:
        return self.refuse(self.slots.take, self.slots.give_back)

    def read_only(self) -> str:
        return self.refuse(lambda: self.server.set_system("default_transaction_read_only", "on"),
                           lambda: self.server.set_system("default_transaction_read_only", None))

    def fill_disk(self) -> str:
        assert self.disk is not None, "disk full is scheduled only with a small tablespace"
        seconds = self.rng.uniform(*WINDOW)
        filler = fill(self.disk)
        try:
            time.sleep(seconds)
        finally:
            filler.unlink()
        return f"tablespace disk full for {seconds:.1f} s"

    def slow_commits(self) -> str:
        return self.refuse(lambda: self.server.set_system("synchronous_standby_names", ABSENT_STANDBY),
                           lambda: self.server.set_system("synchronous_standby_names", None), SLOW)

    # -- the end --------------------------------------------------------------------------------
    def after_clients_stopped(self) -> None:
        """Every batch must reach a final state within its timeout (and a grace)."""
        deadline = time.monotonic() + BATCH_TIMEOUT_MS / 1000 + GRACE
        while True:
            still = self.rig.call("open_batches", timeout=120)
            if not still or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self.expect(not still, f"batches hung past their timeout: {still}")

    def check_store(self, where: str) -> None:
        prepared = self.server.prepared()
        self.expect(prepared == [], f"prepared transactions left {where}: {prepared}")

    def finish(self) -> dict[str, Any]:
        figures = super().finish()
        deposit = self.rig.call("deposit", amount=1, timeout=180)
        found = deposit_anomalies(deposit, figures["final balances"], self.rig.call("balances"))
        mark = len(self.anomalies)
        self.check_store("after the final deposit")
        figures["anomalies"] = figures["anomalies"] + found + self.anomalies[mark:]
        entries = load(sorted(self.histories.glob("*.jsonl")))
        figures["anomalies"] += hung_transfers(entries, PATIENCE)
        figures["errors"] = error_kinds(entries)
        return figures


def hung_transfers(entries: list[dict[str, Any]], patience: float) -> list[str]:
    """Transfers whose patient client got no result in ``patience`` seconds (the batch timeout
    and a grace): batches that hung past their timeout. (An impatient client gives up sooner;
    its transfers are not judged here.)"""
    return [f"{e['key']}: no result in {patience:.0f} s, past its batch timeout ({e.get('txn')})"
            for e in entries if e["f"] == "transfer" and e["type"] == "unknown"
            and (e.get("error") or "").startswith(f"no result in {patience:.1f} s")]


def error_kinds(entries: list[dict[str, Any]], top: int = 10) -> dict[str, int]:
    """The errors the clients saw (transfers rolled back or unknown, reads failed), by their
    first words (the exception or code): the ``top`` most frequent."""
    kinds: Counter = Counter()
    for entry in entries:
        if entry["type"] in ("fail", "unknown") and entry.get("error"):
            text = re.sub(r"\x1b\[[0-9;]*m|\^+|\S*ray::\S*|\(pid=[^)]*\)|[0-9a-f]{8,}|\d+(\.\d+)?", "", entry["error"])
            kinds[f"{entry['f']} {entry['type']}: {' '.join(text.split()[:4])[:80]}"] += 1
    return dict(kinds.most_common(top))


def deposit_anomalies(deposit: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Is the store writable after the soak? A deposit of 1 over every account must commit and
    show in every balance (``before``: the balances after recovery, ``after``: after the deposit)."""
    found = []
    if not deposit.get("success"):
        found.append(f"the store is not writable after the soak: {deposit}")
    elif after != {k: v + 1 for k, v in before.items()}:
        found.append(f"a deposit of 1 committed but the balances went from {before} to {after}")
    return found


def make_record(figures: dict[str, Any], *, seed: int, seconds: float, command: str,
                injected: Counter, not_reached: Counter, left_out: dict[str, str]) -> dict[str, Any]:
    """The soak's JSON record; ``valid`` when it found no anomaly."""
    anomalies = list(figures.get("anomalies", []))
    batches = figures.get("batches in the store", {})
    return {
        "seed": seed,
        "seconds of faults requested": seconds,
        "seconds of faults": figures.get("fault seconds"),
        "command": command,
        "faults injected": sum(injected.values()),
        "faults by kind": dict(sorted(injected.items())),
        "faults armed but not reached": dict(sorted(not_reached.items())),
        "fault kinds left out": left_out,
        "batches committed": batches.get("completed", 0),
        "batches rolled back": batches.get("rolled_back", 0),
        "transfers never registered": batches.get("absent", 0),
        "transfers": figures.get("transfers", {}),
        "unknown transfers committed": figures.get("unknown transfers committed", 0),
        "unknown transfers not committed": figures.get("unknown transfers not committed", 0),
        "reads": figures.get("reads", {}),
        "clients started": figures.get("clients started"),
        "errors seen by the clients": figures.get("errors", {}),
        "anomaly count": len(anomalies),
        "anomalies": anomalies,
        "valid": not anomalies,
    }


def run_mixed(root: Path, *, seconds: float, seed: int, command: str, record: Optional[str] = None,
              say: Callable[[str], None] = print) -> dict[str, Any]:
    """One soak; its record (also printed, and written to ``record`` when given)."""
    say(f"mixed soak: seed {seed}, {seconds:.0f} s of faults")
    server = OwnServer()
    try:
        with contextlib.ExitStack() as stack:
            kinds, left_out = dict(KINDS), {}
            try:
                disk: Optional[Path] = stack.enter_context(small_tablespace(server, TABLESPACE_MB))
            except Unavailable as exc:
                disk = None
                left_out["disk full"] = str(exc)
                kinds.pop("disk full")
                say(f"  disk full left out: {exc}")
            address = stack.enter_context(ray_cluster(root / "cluster"))
            bank = MixedBank(address, root / "run", server, seed=seed, disk=disk, say=say)
            stack.callback(bank.close)
            bank.start()
            scheduler = FaultScheduler(seed, kinds)
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                delay, kind = scheduler.next()
                time.sleep(delay)
                at = time.monotonic() - started
                what = bank.inject(kind)
                say(f"  {at:6.1f} s  {kind:34s} {what}")
            fault_seconds = time.monotonic() - started
            figures = bank.finish()
            figures["fault seconds"] = round(fault_seconds, 1)
            result = make_record(figures, seed=seed, seconds=seconds, command=command, injected=bank.injected,
                                 not_reached=bank.not_reached, left_out=left_out)
    finally:
        server.stop()
    text = json.dumps(result, indent=2)
    say(text)
    if record:
        Path(record).write_text(text + "\n")
    return result


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mixed_soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("BATCHRAY_SOAK_SECONDS", "600")))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("BATCHRAY_SOAK_SEED", DEFAULT_SEED)))
    parser.add_argument("--record", default=os.environ.get("BATCHRAY_SOAK_RECORD"), help="write the record here")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="batchray-mixed-soak-"))
    command = f"python -m tests.mixed_soak --seconds {args.seconds:g} --seed {args.seed}"
    result = run_mixed(root, seconds=args.seconds, seed=args.seed, command=command, record=args.record)
    return 0 if result["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
