"""The bank workload on Ray under faults: the runner behind tests/test_bank_faults.py, and a
soak run by hand::

    python -m tests.bank_soak --minutes 10            # from the repository root
    python -m tests.bank_soak --minutes 10 --json report.json

What one run does (on a Ray cluster of its own, see tests/fault_rig.py):

1. **The bank.** A store of 2 shards on 2 worker actors, a data context ``Bank`` whose
   accounts (``balance``: numeric, ``min: 0``) are spread over both shards.
2. **The clients.** Several drivers, each a process of its own (``fault_driver.py bank``), run
   transfers (one atomic batch of two expression updates, ``=balance - x`` and
   ``=balance + x``, with an idempotency key) and reads of every balance, and log each
   operation before and after the call (JSON Lines, :mod:`batchray.testing.history`). A
   transfer that would overdraw is rolled back; one whose result the driver does not get (an
   error, a timeout, the driver killed) is logged as unknown; some clients are impatient on
   purpose (15% of transfers wait at most 0.2 to 1.5 s), so that unknown outcomes are common.
3. **The faults**, one every 1 to 2 s or so while the clients run: SIGKILL of a worker process, SIGKILL
   of the coordinator, an exit (``os._exit``) of whatever process reaches an armed crash point
   in the middle of two-phase commit (the vote, the decision write, just after the decision,
   the commit write at a shard, the rollback write, the end of phase 2, the submission), and now
   and then a SIGKILL of a client, which a new client replaces. With ``pauses``, that
   fraction of the faults are pauses instead: a worker or the coordinator frozen with SIGSTOP
   for 11 to 14 s (past the 10 s lock timeout and the clients' 10 s wait for a reply),
   every other time held at one of the crash points below, then woken with SIGCONT.
4. **The end.** The clients stop; then every worker and the coordinator are SIGKILLed at once
   (what was acknowledged must survive that), a driver reconnects and runs recovery, and:

   * the history checker (:func:`batchray.testing.history.check`) proves that every successful
     read summed to the initial total with no negative balance, that the final balances are
     the initial ones plus the deltas of the committed transfers (acknowledged ones, and unknown
     ones the store shows committed: no lost update, no transfer applied in part or twice), that
     every acknowledged transfer is committed in the store and no rolled-back one is;
   * each transfer's outcome comes from the store after recovery: the batch registered under
     its idempotency key, the registry's state and the logged decision, which must agree (and
     the coordinator's ``status`` for the unknown ones);
   * no prepared record, undo row or lock is left in any participant, no decision is left
     unfinished, every SQLite file passes ``PRAGMA integrity_check``.

:func:`run_bank` returns the figures (kills by kind, operations by outcome) and raises
``AssertionError`` on the first thing that does not hold.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))  # fault_rig, when run with python -m

from fault_rig import Child, Rig, kill, ray_cluster  # noqa: E402

from batchray.testing.history import check, load  # noqa: E402

ACCOUNTS = 8
INITIAL = 20  # a few withdrawals empty an account: overdrafts happen
CLIENTS = 3
PAUSE = (11.0, 14.0)  # seconds a paused process stays stopped
CRASH_POINTS = [  # (label prefix of the crash point, what dies there)
    ("shard-0000:apply", "a worker applying its part and voting"),  # one chunk: the vote rides on it
    ("shard-0001:apply", "a worker applying its part and voting"),
    ("log:decide", "the coordinator writing the decision"),
    ("send:commit", "the coordinator just after the decision is logged"),
    ("shard-0000:committed", "a worker in its commit write"),
    ("shard-0001:committed", "a worker in its commit write"),
    ("shard-0000:aborted", "a worker in its rollback write"),
    ("shard-0001:aborted", "a worker in its rollback write"),
    ("log:done", "the coordinator at the end of phase 2"),
    ("log:add", "the coordinator registering a batch"),
]


class Bank:
    """One run; see the module docstring."""

    def __init__(self, address: str, root: Path, *, seed: int, clients: int = CLIENTS, pauses: float = 0.0,
                 say: Callable[[str], None] = print, store: Optional[str] = None,
                 client_config: Optional[dict[str, Any]] = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.rng = random.Random(seed)
        self.seed = seed
        self.say = say
        self.rig = Rig(address, root, store)
        self.client_config = client_config or {}
        self.anomalies: Optional[list[str]] = None  # a list: :meth:`finish` records what fails there instead of raising
        self.histories = root / "histories"
        self.histories.mkdir(parents=True, exist_ok=True)
        self.clients: dict[str, Child] = {}
        self.client_count = clients
        self.started_clients = 0
        self.kills: Counter = Counter()
        self.crash_points: Counter = Counter()
        self.missed = 0  # crash points armed that no process reached in time
        self.pause_share = pauses  # the fraction of faults that are pauses (SIGSTOP, then SIGCONT)
        self.pauses: Counter = Counter()
        self.paused_seconds = 0.0

    # -- set-up ---------------------------------------------------------------------------------
    def start(self) -> None:
        info = self.rig.connect(workers=2, shards=2)
        assert len(info["workers"]) == 2, info
        bank = self.rig.call("bank_setup", accounts=ACCOUNTS, initial=INITIAL)
        self.accounts = bank["ids"]
        assert set(bank["shards"].values()) == {"shard-0000", "shard-0001"}, bank  # transfers cross shards
        self.initial = {str(a): INITIAL for a in self.accounts}
        for _ in range(self.client_count):
            self.start_client()
        for name in list(self.clients):
            self.ready(name)

    def start_client(self) -> str:
        self.started_clients += 1
        name = f"c{self.started_clients}"
        config = {"accounts": self.accounts, "max_amount": 10, "reads": 0.3, "timeout": 45.0, "impatient": 0.15,
                  **self.client_config}
        self.clients[name] = Child(["bank", self.rig.address, str(self.rig.store), str(self.histories / f"{name}.jsonl"),
                                    name, str(self.seed), json.dumps(config)], self.root / f"{name}.log")
        return name

    def ready(self, name: str) -> None:
        message = self.clients[name].read(timeout=120)
        assert message.get("ready"), message

    # -- faults ---------------------------------------------------------------------------------
    def fault(self) -> str:
        """One fault, chosen at random; returns what it did."""
        info = self.rig.pids()
        if self.pause_share and self.rng.random() < self.pause_share:
            return self.pause(info)
        roll = self.rng.random()
        if roll < 0.3:
            return self.kill_worker(info)
        if roll < 0.5:
            return self.kill_coordinator(info)
        if roll < 0.9:
            return self.exit_at_crash_point()
        return self.kill_client()

    def kill_worker(self, info: dict[str, Any]) -> str:
        victim = self.rng.choice(info["workers"])
        kill(victim["pid"])
        self.kills["worker SIGKILL"] += 1
        return f"SIGKILL worker {victim['pid']} ({', '.join(victim['shards'])})"

    def kill_coordinator(self, info: dict[str, Any]) -> str:
        kill(info["coordinator"])
        self.kills["coordinator SIGKILL"] += 1
        return f"SIGKILL coordinator {info['coordinator']}"

    def reach(self, trial: str, label: str, action: str) -> Optional[dict[str, Any]]:
        """Arm the next crash point whose label starts with ``label`` (``action``: ``exit`` or
        ``hold``) and wait up to 3 s for a process to reach it; the hit, or None (withdrawn)."""
        self.rig.arm(trial, label, 1, action=action)
        deadline = time.monotonic() + 3.0
        while self.rig.hit() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        hit = self.rig.hit()
        if hit is None:
            Path(self.rig.arm_path).unlink(missing_ok=True)  # withdrawn; a process may be taking it now
            time.sleep(0.3)
            hit = self.rig.hit()
        return hit

    def exit_at_crash_point(self) -> str:
        label, what = self.rng.choice(CRASH_POINTS)
        hit = self.reach(f"k{sum(self.kills.values())}-{self.rng.randrange(10**6)}", label, "exit")
        if hit is None:
            self.missed += 1
            return f"crash point {label}: not reached"
        self.kills["crash-point exit"] += 1
        self.crash_points[label] += 1
        return f"exit at {hit['label']} in {hit['pid']} ({what})"

    def kill_client(self) -> str:
        """A client SIGKILLed (its operation in progress stays unknown), and replaced."""
        name = self.rng.choice(sorted(self.clients))
        child = self.clients.pop(name)
        kill(child.proc.pid)
        child.close(timeout=30)
        self.kills["client SIGKILL"] += 1
        self.ready(self.start_client())
        return f"SIGKILL client {name}"

    def pause(self, info: dict[str, Any], who: Optional[str] = None) -> str:
        """A worker or the coordinator frozen with SIGSTOP for PAUSE seconds (longer than the
        10 s lock timeout and the clients' 10 s wait for a reply), then woken with SIGCONT:
        every other pause (the first included) at a protocol point (the process is held at an
        armed crash point, stopped there, and let go, so that it goes on from that point when
        it wakes), the others wherever the process is."""
        seconds = self.rng.uniform(*PAUSE)
        at = None
        if sum(self.pauses.values()) % 2 == 0:
            label, what = self.rng.choice(CRASH_POINTS)
            if who is not None:  # a point that process reaches
                theirs = [p for p in CRASH_POINTS if p[0].startswith("shard-") == (who == "worker")]
                label, what = self.rng.choice(theirs)
            hit = self.reach(f"p{sum(self.pauses.values())}-{self.rng.randrange(10**6)}", label, "hold")
            if hit is not None:
                pid, at = int(hit["pid"]), hit["label"]
                who = "coordinator" if pid == info["coordinator"] else "worker"
        if at is None:
            who = who or self.rng.choice(["worker", "coordinator"])
            pid = info["coordinator"] if who == "coordinator" else self.rng.choice(info["workers"])["pid"]
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            return f"pause of {who} {pid}: already gone"
        if at is not None:
            self.rig.release()  # seen once the process wakes
        try:
            time.sleep(seconds)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.pauses[f"{who} SIGSTOP" + (" at a protocol point" if at else "")] += 1
        self.paused_seconds += seconds
        return f"SIGSTOP {who} {pid} for {seconds:.1f} s" + (f" at {at}" if at else "")

    @property
    def total_kills(self) -> int:
        return sum(self.kills.values())

    # -- the end --------------------------------------------------------------------------------
    def expect(self, holds: bool, message: str) -> None:
        """An AssertionError unless ``holds``; with :attr:`anomalies` a list, an entry there instead."""
        if holds:
            return
        if self.anomalies is None:
            raise AssertionError(message)
        self.anomalies.append(message[:2000])

    def stop_clients(self) -> dict[str, int]:
        ops = {}
        for name, child in self.clients.items():
            child.proc.stdin.close()
        for name, child in self.clients.items():
            try:
                message = child.read(timeout=120)  # a transfer gives up after 45 s: no client hangs
                ops[name] = message["ops"]
            except AssertionError as exc:
                self.expect(False, f"client {name} did not stop: {exc}")
                kill(child.proc.pid)
            child.close(timeout=60)
        return ops

    def after_clients_stopped(self) -> None:
        """Checks of a run whose clients have stopped, before every store process is killed (none here)."""

    def check_store(self, where: str) -> None:
        """The store's own files after recovery (SQLite: see :meth:`Rig.check_files`)."""
        self.rig.check_files(where)

    def finish(self) -> dict[str, Any]:
        """Stop the clients, kill every process of the store at once, recover, check."""
        self.rig.disarm()
        self.stop_clients()
        self.after_clients_stopped()
        info = self.rig.pids()
        for pid in [info["coordinator"], *(w["pid"] for w in info["workers"])]:
            kill(pid)
        self.kills["final SIGKILL of every store process"] += 1
        t0 = time.time()
        settled = self.rig.call("settle", since=t0, contexts=["Bank"], timeout=120)
        self.expect(settled["undecided"] == [] and settled["decided_not_done"] == [],
                    f"batches left unfinished after recovery: {settled}")
        for participant, left in settled["leftovers"].items():
            self.expect(not any(left.values()), f"{participant} kept 2PC state or locks: {left}")
        self.check_store("after the bank run")

        entries = load(sorted(self.histories.glob("*.jsonl")))
        transfers = sorted({e["key"] for e in entries if e["f"] == "transfer"})
        completions = {e["key"]: e["type"] for e in entries if e["f"] == "transfer" and e["type"] != "invoke"}
        unknown = [k for k in transfers if completions.get(k, "unknown") == "unknown"]
        store = self.rig.call("resolve", keys=transfers, ask=unknown, timeout=600)
        outcomes: dict[str, str] = {}
        for key in transfers:
            seen = store[key]
            if seen["state"] == "absent":
                outcomes[key] = "absent"
                continue
            # the registry and the decision log must agree on every batch
            self.expect(seen["decision"] is not None,
                        f"{key}: batch {seen['txn']} has no decision after recovery: {seen}")
            self.expect(seen["state"] == ("completed" if seen["decision"] == "commit" else "rolled_back"),
                        f"{key}: the registry and the decision log disagree: {seen}")
            if "status" in seen:
                self.expect(seen["status"] == seen["state"], f"{key}: status and registry disagree: {seen}")
            outcomes[key] = seen["state"]
        final = self.rig.call("balances")
        result = check(entries, initial=self.initial, final=final, outcomes=outcomes)
        figures = {
            "kills": sum(self.kills.values()),
            "kills by kind": dict(self.kills),
            "pauses": dict(self.pauses),
            "paused seconds": round(self.paused_seconds, 1),
            "crash points fired": dict(self.crash_points),
            "crash points armed but not reached": self.missed,
            "clients started": self.started_clients,
            "transfers": dict(result.transfers),
            "unknown transfers committed": result.unknown_committed,
            "unknown transfers not committed": result.unknown_not_committed,
            "transfers with the client killed": result.killed,
            "committed transfers": result.committed,
            "batches in the store": dict(Counter(outcomes.values())),  # completed / rolled_back / absent
            "reads": dict(result.reads),
            "accounts": result.accounts,
            "total": result.total,
            "final balances": final,
            "anomalies": [str(a) for a in result.anomalies] + (self.anomalies or []),
        }
        if self.anomalies is None:  # collected: the history's anomalies are in the figures already
            assert result.valid, result.summary()
        return figures

    def close(self) -> None:
        for child in self.clients.values():
            kill(child.proc.pid)
            child.close(timeout=30)
        self.clients.clear()
        self.rig.close()


def run_bank(address: str, root: Path, *, seconds: float, min_kills: int, seed: int, clients: int = CLIENTS,
             interval: tuple[float, float] = (0.5, 1.5), pauses: float = 0.0, min_pauses: int = 0,
             say: Callable[[str], None] = print) -> dict[str, Any]:
    """One run of at least ``seconds`` of faults, ``min_kills`` kills and ``min_pauses`` pauses;
    its figures. ``pauses``: the fraction of faults that are pauses instead of kills."""
    bank = Bank(address, root, seed=seed, clients=clients, pauses=pauses, say=say)
    started = time.monotonic()
    try:
        bank.start()
        say(f"bank: {ACCOUNTS} accounts of {INITIAL} on 2 shards, {clients} clients; faults for {seconds:.0f} s")
        faults_from = time.monotonic()
        while True:
            elapsed = time.monotonic() - faults_from
            if elapsed >= seconds and bank.total_kills >= min_kills and sum(bank.pauses.values()) >= min_pauses:
                break
            if elapsed > 3 * seconds + 120:
                raise AssertionError(f"only {bank.total_kills} kills in {elapsed:.0f} s")
            time.sleep(bank.rng.uniform(*interval))
            what = bank.fault()
            say(f"  {time.monotonic() - faults_from:6.1f} s  #{bank.total_kills:3d}  {what}")
        fault_seconds = time.monotonic() - faults_from
        figures = bank.finish()
        figures["fault seconds"] = round(fault_seconds, 1)
        figures["seconds"] = round(time.monotonic() - started, 1)
        figures["seed"] = seed
        return figures
    finally:
        bank.close()


def describe(figures: dict[str, Any]) -> str:
    t, r = figures["transfers"], figures["reads"]
    paused = (f"{sum(figures['pauses'].values())} pauses ({figures['paused seconds']} s: {figures['pauses']}); "
              if figures.get("pauses") else "")
    return (f"{figures['kills']} kills in {figures['fault seconds']} s of faults ({figures['kills by kind']}); {paused}"
            f"{sum(t.values())} transfers checked ({t.get('ok', 0)} ok, {t.get('fail', 0)} rolled back, "
            f"{t.get('unknown', 0)} unknown: {figures['unknown transfers committed']} committed, "
            f"{figures['unknown transfers not committed']} not), {r.get('ok', 0)} reads checked; "
            f"anomalies: {len(figures['anomalies'])}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bank_soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes of faults (default 10)")
    parser.add_argument("--min-kills", type=int, default=0, help="at least this many kills (default: none)")
    parser.add_argument("--pauses", type=float, default=0.2,
                        help="fraction of faults that are pauses (SIGSTOP/SIGCONT) instead of kills (default 0.2)")
    parser.add_argument("--clients", type=int, default=CLIENTS, help=f"client processes (default {CLIENTS})")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("BATCHRAY_FAULT_SEED", "20261129")))
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the store, logs and histories")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="batchray-bank-soak-"))
    with ray_cluster(root / "cluster") as address:
        figures = run_bank(address, root / "run", seconds=args.minutes * 60, min_kills=args.min_kills,
                           seed=args.seed, clients=args.clients, pauses=args.pauses)
    print(describe(figures))
    print(json.dumps({k: v for k, v in figures.items() if k != "final balances"}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    if args.keep:
        print(f"files kept in {root}")
    else:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
