"""Hot-bank drivers as OS processes (used by tests/test_concurrency.py; not a test module).

``python tests/hot_bank_driver.py STORE N`` is driver ``N`` of :class:`DriverProcesses`: it
imports batchray and Ray, then answers JSON lines on stdin: ``{"op": "connect"}`` runs
``batchray.connect(store=STORE)`` as a new user's script does (it joins the store's live
owner: same Ray cluster, same coordinator) and answers ``{connected, seconds}``;
``{"op": "run", accounts, batches, transfers, maxAmount, seed, historyDir}`` runs the driver's
hot-bank batches (:func:`batchray.testing.hot_bank.drive`) and answers its figures. End of
stdin closes the client and exits.
"""
from __future__ import annotations

import importlib
import json
import os
import select
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence

from batchray.testing.hot_bank import HotBankRun, drive, merge_runs

SCRIPT = Path(__file__).resolve()


class DriverProcesses:
    """Hot-bank drivers as OS processes, each started as a new user starts one:
    ``hot_bank_driver.py STORE N`` runs ``batchray.connect(store=STORE)``,
    which joins the store's live owner (its Ray cluster and coordinator).

    Made early, a child imports batchray and Ray and then waits (:meth:`start` waits for
    that); it connects on :meth:`connect` (once the store has its owner; :meth:`connected`
    waits for it) and runs its batches on :meth:`run`, so the start-up of the processes
    overlaps the caller's own set-up. :meth:`close` ends the children: each exits at once, as
    a user's script that ends. Each child speaks JSON
    lines: stdin ``{"op": "connect"}`` then ``{"op": "run", ...}``; stdout ``{"imported"}``,
    ``{"connected", "seconds"}``, then the driver's figures. Its stderr goes to
    ``<history_dir>/d<N>.log``."""

    def __init__(self, store: str, drivers: int, history_dir: Path, env: Optional[dict[str, str]] = None) -> None:
        self.store = str(store)
        self.history_dir = history_dir
        history_dir.mkdir(parents=True, exist_ok=True)
        self.children: list[subprocess.Popen] = []
        for d in range(drivers):
            with open(history_dir / f"d{d}.log", "w") as log:
                self.children.append(subprocess.Popen(
                    [sys.executable, str(SCRIPT), self.store, str(d)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1, env=env))

    def _ask(self, message: Optional[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
        """Send ``message`` to every child (None: nothing), then read one answer of each."""
        if message is not None:
            self._send(message)
        answers = []
        deadline = time.monotonic() + timeout
        for d, child in enumerate(self.children):
            ready, _, _ = select.select([child.stdout], [], [], max(0.0, deadline - time.monotonic()))
            line = child.stdout.readline() if ready else ""
            if not line:
                log = (self.history_dir / f"d{d}.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"hot-bank driver process {d} gave no answer (exit {child.poll()}):\n{log}")
            answers.append(json.loads(line))
        return answers

    def _send(self, message: dict[str, Any]) -> None:
        for child in self.children:
            child.stdin.write(json.dumps(message) + "\n")
            child.stdin.flush()

    def start(self, timeout: float = 120.0) -> None:
        """Wait until every child has imported batchray and Ray."""
        self._ask(None, timeout)

    def connect(self) -> None:
        """Every child connects to the store (joining its owner), in the background."""
        self._send({"op": "connect"})

    def connected(self, timeout: float = 120.0) -> list[float]:
        """Wait until every child has connected; the seconds each took."""
        return [answer["seconds"] for answer in self._ask(None, timeout)]

    def run(self, accounts: Sequence[int], *, batches: int, transfers: int = 4, max_amount: int = 10,
            seed: int = 0, timeout: float = 600.0) -> HotBankRun:
        """Every child runs its batches at once; their figures merged."""
        run = HotBankRun(histories=[self.history_dir / f"d{d}.jsonl" for d in range(len(self.children))])
        started = time.perf_counter()
        answers = self._ask({"op": "run", "accounts": list(accounts), "batches": batches, "transfers": transfers,
                             "maxAmount": max_amount, "seed": seed, "historyDir": str(self.history_dir)}, timeout)
        run.seconds = time.perf_counter() - started
        for answer in answers:
            merge_runs(run, HotBankRun(answer["committed"], answer["failed"], Counter(answer["codes"]),
                                   answer["firstErrors"]))
        return run

    def close(self, timeout: float = 60.0) -> None:
        """End every child (stdin closed: it closes its client and exits; killed if it does not)."""
        for child in self.children:
            if child.stdin and not child.stdin.closed:
                child.stdin.close()
        for child in self.children:
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            child.stdout.close()


def _child(store: str, number: int) -> int:
    """A driver process of :class:`DriverProcesses` (see there)."""
    import batchray  # before Ray, as a user's script: connect() sets Ray's token mode up
    importlib.import_module("ray")  # imported while the caller still sets up, not once asked to connect

    print(json.dumps({"imported": True}), flush=True)
    client = None
    for line in sys.stdin:
        message = json.loads(line)
        if message["op"] == "connect":
            started = time.monotonic()
            client = batchray.connect(store=store, progress=False, quiet=True)
            print(json.dumps({"connected": True, "seconds": time.monotonic() - started}), flush=True)
        elif message["op"] == "run":
            part = drive(client, number, message["accounts"], batches=message["batches"],
                         history=Path(message["historyDir"]) / f"d{number}.jsonl", transfers=message["transfers"],
                         max_amount=message["maxAmount"], seed=message["seed"])
            print(json.dumps({"committed": part.committed, "failed": part.failed, "codes": dict(part.codes),
                              "firstErrors": part.first_errors, "seconds": part.seconds}, default=str), flush=True)
    # the end of the user's script: the process exits without a goodbye to Ray (the owner's
    # cluster sees its driver gone), which spares the test seconds of teardown per driver
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], int(sys.argv[2])))
