"""The hot bank workload: several drivers at once run atomic transfer batches over few accounts.

Each driver runs ``batches`` batches (:func:`drive`), as a thread of the calling process
(:func:`run_hot_bank`), or as an OS process of its own that connects to the store as a new
user would and joins its owner (the tests' ``hot_bank_driver.py``); a batch is
``transfers`` transfers, each two expression updates selected by ``itemId`` (``=balance - n``
on one account, ``=balance + n`` on another), all in one atomic ``update_items`` call with
the client's default options. Every batch is logged as one ``transfer`` operation of a
:class:`~batchray.testing.history.HistoryWriter` history (its ``deltas`` summed over its
transfers), so :func:`~batchray.testing.history.check` can judge the run: the total
conserved, every balance the initial one plus the committed deltas, every acknowledged batch
in the store.

``clients`` may be one client shared by every driver or one per driver (any object with
``update_items(context, updates)`` returning a result with ``success``, ``batch_id`` and
``error``, and ``status(batch_id)``). :func:`run_hot_bank` returns the figures; the checks are
the caller's. Seeded: driver ``d`` draws from ``random.Random(seed * 1000 + d)``.
"""
from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from batchray.testing.history import HistoryWriter, check, load

CONTEXT = "Bank"
COLLECTION = "Accounts"


def create_bank(client: Any, accounts: int, initial: int) -> list[int]:
    """A data context ``Bank`` of ``accounts`` accounts holding ``initial`` each (``balance``:
    numeric, ``min: 0``); returns their ids."""
    result = client.create_data_context(CONTEXT, [{"name": COLLECTION, "attrs": [
        {"name": "owner"}, {"name": "balance", "type": "numeric", "min": 0}]}])
    assert result.success, result
    per_shard = max(1, -(-accounts // client.layout.shards))  # a chunk per shard: the accounts span them all
    created = client.create_items(CONTEXT, COLLECTION, [{"owner": f"a{k}", "balance": initial} for k in range(accounts)],
                                  batch_size=per_shard)
    assert created.success, created
    return list(created.item_ids)


@dataclass
class HotBankRun:
    """What one run did: batches by outcome, error codes of the failed ones, seconds taken."""

    committed: int = 0
    failed: int = 0
    codes: Counter = field(default_factory=Counter)
    first_errors: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    histories: list[Path] = field(default_factory=list)

    @property
    def batches(self) -> int:
        return self.committed + self.failed

    @property
    def failed_share(self) -> float:
        return self.failed / self.batches if self.batches else 0.0


def transfer_batch(rng: random.Random, accounts: Sequence[int], transfers: int, max_amount: int) -> tuple[list, dict]:
    """One batch's updates and its deltas by account (as strings, summing to zero)."""
    updates: list[dict[str, Any]] = []
    deltas: Counter = Counter()
    for _ in range(transfers):
        source, target = rng.sample(list(accounts), 2)
        amount = rng.randint(1, max_amount)
        updates += [{"selector": {"itemId": source}, "values": {"balance": f"=balance - {amount}"}},
                    {"selector": {"itemId": target}, "values": {"balance": f"=balance + {amount}"}}]
        deltas[str(source)] -= amount
        deltas[str(target)] += amount
    return updates, dict(deltas)


def drive(client: Any, number: int, accounts: Sequence[int], *, batches: int, history: Path, transfers: int = 4,
          max_amount: int = 10, seed: int = 0) -> HotBankRun:
    """Driver ``number``'s batches through ``client``, logged to the history file ``history``."""
    rng = random.Random(seed * 1000 + number)
    run = HotBankRun(histories=[history])
    started = time.perf_counter()
    with HistoryWriter(history, f"d{number}") as log:
        for b in range(batches):
            key = f"s{seed}-d{number}-b{b}"
            updates, deltas = transfer_batch(rng, accounts, transfers, max_amount)
            log.invoke("transfer", key, {"deltas": deltas})
            result = client.update_items(CONTEXT, updates)
            txn = getattr(result, "batch_id", None)
            if result.success:
                run.committed += 1
                log.complete("ok", "transfer", key, txn=txn)
            else:
                run.failed += 1
                run.codes[(result.error or {}).get("code")] += 1
                if len(run.first_errors) < 3:
                    run.first_errors.append(result.error or {})
                log.complete("fail", "transfer", key, txn=txn, error=str(result.error))
    run.seconds = time.perf_counter() - started
    return run


def merge_runs(into: HotBankRun, part: HotBankRun) -> None:
    """Add one driver's figures to ``into``."""
    into.committed += part.committed
    into.failed += part.failed
    into.codes.update(part.codes)
    into.first_errors.extend(part.first_errors[: max(0, 3 - len(into.first_errors))])


def run_hot_bank(clients: Sequence[Any], accounts: Sequence[int], *, drivers: int, batches: int, history_dir: Path,
                 transfers: int = 4, max_amount: int = 10, seed: int = 0, join_timeout: float = 600.0) -> HotBankRun:
    """Run the workload with drivers as threads of this process; driver ``d`` uses
    ``clients[d % len(clients)]``."""
    history_dir.mkdir(parents=True, exist_ok=True)
    run = HotBankRun(histories=[history_dir / f"d{d}.jsonl" for d in range(drivers)])
    lock = threading.Lock()
    crashed: list[BaseException] = []

    def driver(number: int) -> None:
        try:
            part = drive(clients[number % len(clients)], number, accounts, batches=batches,
                         history=run.histories[number], transfers=transfers, max_amount=max_amount, seed=seed)
            with lock:
                merge_runs(run, part)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller's thread
            crashed.append(exc)

    threads = [threading.Thread(target=driver, args=(d,), daemon=True, name=f"hot-bank-{d}") for d in range(drivers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(join_timeout)
    run.seconds = time.perf_counter() - started
    if any(thread.is_alive() for thread in threads):
        raise AssertionError(f"a driver of the hot bank hung (seed {seed})")
    if crashed:
        raise crashed[0]
    return run


def judge(run: HotBankRun, client: Any, accounts: Sequence[int], initial: int):
    """The history checker's verdict on ``run``, given the store's final balances read through ``client``."""
    final = {str(item["id"]): item["values"]["balance"] for item in client.get_items(CONTEXT)}
    return check(load(run.histories), initial={str(a): initial for a in accounts}, final=final)
