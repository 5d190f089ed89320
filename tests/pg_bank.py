"""The bank workload on a PostgreSQL store, in process: the runner behind tests/test_pg_faults.py.

A store of 2 shards on the in-process runtime holds a data context ``Bank`` of 8 accounts of
20 (``balance`` numeric, ``min: 0``). Client threads share one :class:`~batchray.api.client.Client`
and run transfers (one atomic batch of two expression updates, with an idempotency key) and
reads, logging each operation before and after the call for the history checker
(:mod:`batchray.testing.history`). A transfer that returns success is ``ok``; one rolled back
is ``fail``; one that raised is ``unknown`` and settled afterwards from the store.

:meth:`PgBank.finish` stops the clients, closes the client, opens a new one (whose recovery
finishes every batch in doubt, as a restarted engine would), and checks the history against the
final balances and each transfer's state in the store (the batch registered under its key),
that nothing is unfinished in the decision log and that ``pg_prepared_xacts`` is empty.
"""
from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from local_runtime import local_client

from batchray.errors import BatchrayError
from batchray.testing.history import HistoryWriter, check, load

BANK = "Bank"
COLLECTIONS = [{"name": "Accounts", "attrs": [{"name": "owner"}, {"name": "balance", "type": "numeric", "min": 0}]}]
ACCOUNTS = 8
INITIAL = 20


class PgBank:
    """One workload on one store; see the module docstring."""

    def __init__(self, url: str, root: Path, *, seed: int, clients: int = 2, timeout_ms: int = 30_000) -> None:
        self.url = url
        self.root = root
        self.seed = seed
        self.timeout_ms = timeout_ms
        self.client = local_client(url, shards=2)
        assert self.client.create_data_context(BANK, COLLECTIONS).success
        # a chunk per shard: the accounts spread over both shards, so transfers span them
        created = self.client.create_items(BANK, "Accounts", [{"owner": f"a{k}", "balance": INITIAL}
                                                              for k in range(ACCOUNTS)], batch_size=ACCOUNTS // 2)
        assert created.success, created
        self.accounts = list(created.item_ids)
        self.initial = {str(i): INITIAL for i in self.accounts}
        self.stop = threading.Event()
        self.paths: list[Path] = []
        self.counts: Counter = Counter()
        self.unexpected: list[str] = []  # exceptions that are not batchray's structured errors
        self.threads = [threading.Thread(target=self._client, args=(f"c{k}",), daemon=True) for k in range(clients)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _client(self, process: str) -> None:
        rng = random.Random(f"{self.seed}:{process}")
        path = self.root / f"history-{process}.jsonl"
        self.paths.append(path)
        ops = 0
        with HistoryWriter(path, process) as writer:
            while not self.stop.is_set():
                ops += 1
                key = f"{self.seed}-{process}-{ops}"
                try:
                    if rng.random() < 0.25:
                        self._read(writer, key)
                    else:
                        self._transfer(writer, key, rng)
                except Exception as exc:  # noqa: BLE001 - no completion logged: unknown; judged below
                    self.unexpected.append(f"{key}: {type(exc).__name__}: {exc}"[:300])

    def _read(self, writer: HistoryWriter, key: str) -> None:
        writer.invoke("read", key)
        try:
            items = self.client.get_items(BANK)
        except BatchrayError as exc:  # a failed read changes nothing; not judged
            writer.complete("fail", "read", key, error=f"{type(exc).__name__}: {exc}"[:300])
            self.counts["read failed"] += 1
            time.sleep(0.05)
            return
        writer.complete("ok", "read", key, {"balances": {str(i["id"]): i["values"]["balance"] for i in items}})
        self.counts["read ok"] += 1

    def _transfer(self, writer: HistoryWriter, key: str, rng: random.Random) -> None:
        source, target = rng.sample(self.accounts, 2)
        amount = rng.randint(1, 10)
        writer.invoke("transfer", key, {"deltas": {str(source): -amount, str(target): amount}})
        updates = [{"selector": {"itemId": source}, "values": {"balance": f"=balance - {amount}"}},
                   {"selector": {"itemId": target}, "values": {"balance": f"=balance + {amount}"}}]
        started = time.monotonic()
        try:
            result = self.client.update_items(BANK, updates, atomic=True, idempotency_key=key, progress=False,
                                              timeout=self.timeout_ms)
        except BatchrayError as exc:
            writer.complete("unknown", "transfer", key, error=f"{exc.code}: {exc.message}"[:300])
            self.counts[f"transfer raised {exc.code}"] += 1
            time.sleep(0.05)
            return
        finally:
            self.longest = max(getattr(self, "longest", 0.0), time.monotonic() - started)
        if result.success:
            writer.complete("ok", "transfer", key, txn=result.transaction_id)
            self.counts["transfer ok"] += 1
        elif result.state == "rolled_back":
            writer.complete("fail", "transfer", key, txn=result.transaction_id, error=str(result.error)[:300])
            self.counts["transfer rolled back"] += 1
        else:
            writer.complete("unknown", "transfer", key, txn=result.transaction_id, error=f"state {result.state}")
            self.counts[f"transfer {result.state}"] += 1

    def finish(self, join_timeout: float = 90.0) -> dict[str, Any]:
        """Stop the clients; recover in a new client; check everything (AssertionError if not)."""
        self.stop.set()
        for thread in self.threads:
            thread.join(join_timeout)
            assert not thread.is_alive(), "a client hung past its batch timeout"
        assert self.unexpected == [], f"errors that are not batchray's structured ones: {self.unexpected}"
        self.client.close()
        with local_client(self.url) as fresh:  # recovery runs when the store opens
            fresh.recover()
            log = fresh.runtime.log
            assert log.unfinished() == ([], []), log.unfinished()
            final = {str(item["id"]): item["values"]["balance"] for item in fresh.get_items(BANK)}
            history = load(self.paths)
            outcomes = {}
            for entry in history:
                if entry.get("f") == "transfer" and entry.get("type") == "invoke":
                    batch = log.batch_by_key(entry["key"])
                    outcomes[entry["key"]] = "absent" if batch is None else batch["state"]
        result = check(history, initial=self.initial, final=final, outcomes=outcomes)
        assert result.valid, result.summary()
        return {"operations": dict(self.counts), "transfers checked": sum(1 for e in history if e.get("f") == "transfer"
                                                                          and e.get("type") == "invoke"),
                "longest transfer s": round(getattr(self, "longest", 0.0), 2)}
