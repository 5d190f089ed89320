"""Helper processes for tests/test_ray_faults.py (not a test module itself).

The fault tests keep every Ray connection out of the pytest process (see that module's
docstring); the Ray work runs here, in subprocesses:

``python tests/fault_driver.py cluster``
    Starts a local Ray cluster of its own (``ray.cluster_utils.Cluster``, one head node with 4
    CPUs), prints ``{"address": ...}`` and keeps it up until its stdin closes, then shuts it down.

``python tests/fault_driver.py agent ADDRESS STORE``
    A long-lived driver connected to the cluster. It reads one JSON request per line on stdin
    and answers one JSON line per request on the stdout it was started with (Ray's own output
    goes to stderr). Requests: ``connect``, ``context``, ``start_load``, ``start_batch``, ``join``,
    ``info``, ``lane``, ``settle``, ``values``, ``bank_setup``, ``balances``, ``resolve``, ``open_batches``,
    ``deposit``, ``shutdown`` (see :class:`Agent`).

``python tests/fault_driver.py load ADDRESS STORE CONTEXT N BATCH_SIZE``
    A driver that streams N items into CONTEXT (for the trials that SIGKILL the driver). It
    prints ``{"fed": k}`` after each chunk it hands over, then the result.

``python tests/fault_driver.py bank ADDRESS STORE HISTORY PROCESS SEED CONFIG``
    A client of the bank workload (tests/test_bank_faults.py): transfers between the accounts
    named in CONFIG (JSON) and reads of every balance, each logged to HISTORY (JSON Lines, see
    :mod:`batchray.testing.history`) before and after the call. Prints ``{"ready": true}`` once
    connected, runs until its stdin closes, then prints ``{"ops": n}``.

Both drivers join with ``batchray.connect(store, address=ADDRESS)``; the test gives them
``RAY_AUTH_MODE`` in the environment (token auth when a token exists, as the cluster uses).
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from typing import Any, Callable, Optional

COLLECTIONS = [{"name": "rows", "attrs": [{"name": "label"}, {"name": "n", "type": "numeric"}]}]
BANK = "Bank"
BANK_COLLECTIONS = [{"name": "Accounts", "attrs": [{"name": "owner"}, {"name": "balance", "type": "numeric", "min": 0}]}]
FINAL_STATES = {"completed", "failed", "rolled_back", "cancelled"}


def rows(context: str, n: int, pace: float = 0.0, every: int = 1000, bad_at: Optional[int] = None):
    """The items of one trial, as a generator so the load streams; ``pace`` seconds of sleep
    every ``every`` items stretch the load so that a kill at a random time lands inside it;
    item ``bad_at`` gets an invalid value, so that the (atomic) batch is rolled back."""
    for i in range(n):
        if pace and i and i % every == 0:
            time.sleep(pace)
        yield {"label": f"{context}-{i}", "n": "not a number" if i == bad_at else i}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _retry(call: Callable[[], Any], timeout: float = 90.0) -> Any:
    """Call the coordinator, waiting out its restart (a killed coordinator comes back by itself)."""
    from batchray.errors import InternalError, ParticipantUnavailable

    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except (ParticipantUnavailable, InternalError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _summary(result: Any) -> dict[str, Any]:
    return {"success": result.success, "state": result.state.value, "created": result.items_created,
            "failed": result.items_failed, "txn": result.transaction_id, "error": result.error}


class Agent:
    """Serves the requests of one test; holds one client of one store."""

    def __init__(self, address: str, store: str) -> None:
        self.address = address
        self.store = store
        self.client = None
        self.loads: dict[str, dict[str, Any]] = {}

    # -- requests ------------------------------------------------------------------------------
    def connect(self, workers: int = 2, shards: int = 2, env: Optional[dict[str, str]] = None,
                stall_timeout: float = 120.0) -> dict:
        import batchray

        self.client = batchray.connect(self.store, address=self.address, workers=workers, shards=shards,
                                       progress=False, worker_env=env, coordinator_env=env,
                                       stall_timeout=stall_timeout)
        return self.info()

    def context(self, name: str) -> dict:
        return _summary(self.client.create_data_context(name, COLLECTIONS))

    def start_load(self, tag: str, context: str, n: int, batch_size: int, pace: float = 0.0,
                   bad_at: Optional[int] = None, atomic: bool = True) -> dict:
        entry: dict[str, Any] = {"done": False, "started": time.time()}
        self.loads[tag] = entry

        def run() -> None:
            try:
                result = self.client.create_items(context, "rows", rows(context, n, pace, batch_size, bad_at),
                                                 batch_size=batch_size, atomic=atomic, continue_on_error=not atomic)
                entry["result"] = _summary(result)
            except BaseException as exc:  # noqa: BLE001 - reported to the test, which judges it
                entry["error"] = f"{type(exc).__name__}: {exc}"[:500]
            entry["done"] = True

        threading.Thread(target=run, name=f"load-{tag}", daemon=True).start()
        return {"started": entry["started"]}

    def start_batch(self, tag: str, kind: str, context: str, n: int, batch_size: int) -> dict:
        """One batch of known size in the background: ``create`` (n items, planned whole and
        submitted in one call) or ``update`` (``n = n + 1000`` on every item of the context)."""
        entry: dict[str, Any] = {"done": False, "started": time.time()}
        self.loads[tag] = entry

        def run() -> None:
            try:
                if kind == "create":
                    result = self.client.create_items(context, "rows", list(rows(context, n)), batch_size=batch_size)
                else:
                    ids = [item["id"] for item in self.client.get_items(context)]
                    result = self.client.update_items(
                        context, [{"selector": {"itemId": i}, "values": {"n": "=n + 1000"}} for i in ids],
                        batch_size=batch_size, progress=False)
                entry["result"] = _summary(result)
            except BaseException as exc:  # noqa: BLE001 - reported to the test, which judges it
                entry["error"] = f"{type(exc).__name__}: {exc}"[:500]
            entry["done"] = True

        threading.Thread(target=run, name=f"batch-{tag}", daemon=True).start()
        return {"started": entry["started"]}

    def values(self, context: str) -> list:
        """The ``n`` of every item of a context, in id order."""
        return [item["values"]["n"] for item in _retry(lambda: self.client.get_items(context))]

    # -- the bank ------------------------------------------------------------------------------
    def bank_setup(self, accounts: int, initial: int) -> dict:
        """The bank's data context and its accounts; their ids and shards."""
        assert self.client.create_data_context(BANK, BANK_COLLECTIONS).success
        # a chunk per shard: the accounts spread over the shards, so transfers span them
        per_shard = max(1, -(-accounts // self.client.layout.shards))
        created = self.client.create_items(BANK, "Accounts", [{"owner": f"a{k}", "balance": initial}
                                                              for k in range(accounts)], batch_size=per_shard)
        assert created.success and len(created.item_ids) == accounts, _summary(created)
        return {"ids": created.item_ids, "shards": {str(i): self.client.layout.shard_of(i) for i in created.item_ids}}

    def balances(self) -> dict:
        """Every account's committed balance (after :meth:`settle`: nothing is in doubt)."""
        return {str(item["id"]): item["values"]["balance"]
                for item in _retry(lambda: self.client.get_items(BANK), timeout=60)}

    def resolve(self, keys: list[str], ask: list[str]) -> dict:
        """What the store says of each transfer, by its idempotency key: the batch registered
        for it (none: ``absent``), the state the registry records, and the logged decision
        (``commit`` when every participant committed; for a batch committed in one phase, its
        participant's outcome). For the keys in ``ask`` (the transfers
        whose outcome the client never learnt), the coordinator's ``status`` too."""
        from batchray.core.txn.onephase import one_phase_participant

        log = self.client.runtime.view.log
        out: dict[str, dict[str, Any]] = {}
        for key in keys:
            batch = log.batch_by_key(key)
            if batch is None:
                out[key] = {"txn": None, "state": "absent", "decision": None}
                continue
            outcomes = log.decision(batch["txn"])
            participant = one_phase_participant(batch)
            if participant is not None:
                # a batch sent to commit in one phase: its participant's commit is the decision.
                # The log holds none when it committed so, or, when recovery resolved it, the
                # outcome it found there (and an abort for every other participant, which never
                # saw the batch); after recovery the outcome at the participant is final
                if outcomes is not None and participant in outcomes:
                    decision = outcomes[participant]
                else:
                    ended = self.client.runtime.view.participants[participant].outcome(batch["txn"])
                    decision = {"committed": "commit", "aborted": "abort"}.get(ended)
            else:
                decision = None if outcomes is None else (
                    "commit" if outcomes and all(v == "commit" for v in outcomes.values()) else "abort")
            out[key] = {"txn": batch["txn"], "state": batch["state"], "decision": decision}
        for key in ask:
            if out.get(key, {}).get("txn"):
                out[key]["status"] = _retry(lambda key=key: self.client.status(out[key]["txn"]))["state"]
        return out

    def open_batches(self, limit: int = 500) -> list:
        """The recent batches not in a final state (id, state, submission time)."""
        recent = _retry(lambda: self.client.status(limit=limit))
        return [{"txn": b["batchId"], "state": b["state"], "submittedAt": b["submittedAt"]}
                for b in recent if b["state"] not in FINAL_STATES]

    def deposit(self, amount: int) -> dict:
        """One atomic batch over every account: balance + ``amount`` (is the store writable?)."""
        updates = [{"selector": {"query": "balance >= 0"}, "values": {"balance": f"=balance + {amount}"}}]
        return _summary(_retry(lambda: self.client.update_items(BANK, updates, atomic=True, progress=False)))

    def join(self, tag: str, timeout: float = 120.0) -> dict:
        entry = self.loads[tag]
        deadline = time.monotonic() + timeout
        while not entry["done"] and time.monotonic() < deadline:
            time.sleep(0.02)
        return {k: v for k, v in entry.items()}

    def info(self) -> dict:
        info = _retry(self.client.info)
        return {"coordinator": info["pid"],
                "workers": [{"pid": w["pid"], "shards": sorted(w["epochs"])} for w in info["workers"]]}

    def settle(self, since: float, contexts: list[str], timeout: float = 90.0) -> dict:
        """Reconnect (as a driver would after a crash), wait until every batch submitted since
        ``since`` is finished, run recovery, and report what the store holds: the batches, item
        counts, leftovers (2PC rows and locks of every participant), undecided log rows."""
        import batchray

        self.client.close()
        self.client = _retry(lambda: batchray.connect(self.store, address=self.address, progress=False))
        deadline = time.monotonic() + timeout
        while True:
            recent = _retry(lambda: self.client.status(limit=100))
            mine = [b for b in recent if (b["submittedAt"] or 0) >= since - 0.001]
            if all(b["state"] in FINAL_STATES for b in mine) and self._quiet():
                break
            if time.monotonic() > deadline:
                break  # recovery below finishes what is left, and the checks tell
            time.sleep(0.1)
        recovered = _retry(self.client.recover)
        recent = _retry(lambda: self.client.status(limit=100))
        mine = [b for b in recent if (b["submittedAt"] or 0) >= since - 0.001]
        undecided, decided = self.client.runtime.view.log.unfinished()
        counts = {name: _retry(lambda name=name: self.client.count_items(name)) for name in contexts}
        leftovers = _retry(lambda: _get_leftovers(self.client))
        return {"batches": mine, "recovered": recovered, "counts": counts, "leftovers": leftovers,
                "undecided": [b["txn"] for b in undecided], "decided_not_done": [t for t, _ in decided],
                "contexts": self.client.data_contexts()}

    def _quiet(self) -> bool:
        """No batch between its decision and the end of its phase 2 (a batch's result is
        there at its commit point; phase 2 goes on after it)."""
        return not self.client.runtime.view.log.unfinished()[1]

    def lane(self) -> dict:
        """What this client's direct lane carried: batches sent, and those that committed there."""
        lane = self.client.runtime.lane
        return {"sent": lane.sent, "committed": lane.committed}

    def quiesce(self, timeout: float = 60.0) -> dict:
        """Wait until no batch is in phase 2, so that a crash point armed next is reached by
        the next batch, not by the end of the previous one."""
        deadline = time.monotonic() + timeout
        while not self._quiet() and time.monotonic() < deadline:
            time.sleep(0.01)
        return {"quiet": self._quiet()}

    def diagnose(self) -> dict:
        """For a test that failed: this process's threads (to stderr) and the recent batches."""
        import faulthandler

        faulthandler.dump_traceback(all_threads=True)
        return {"batches": _retry(lambda: self.client.status(limit=10), timeout=20)}

    def shutdown(self) -> dict:
        if self.client is not None:
            self.client.shutdown()
            self.client = None
        return {}


def _get_leftovers(client: Any) -> dict:
    from actors.runtime import ray_get as _get

    return _get(client.runtime.coordinator.leftovers.remote(), timeout=60)


def serve_agent(address: str, store: str) -> int:
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else printed (Ray's log lines) goes to stderr
    agent = Agent(address, store)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        op = request.pop("op")
        try:
            reply = {"ok": True, "value": _jsonable(getattr(agent, op)(**request))}
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-3000:]}
        replies.write(json.dumps(reply) + "\n")
    return 0


def serve_cluster() -> int:
    """The cluster keeps its sessions and its address file in a temporary folder of its own,
    so that a plain ``ray.init()`` elsewhere on this machine (which joins the cluster named in
    the default folder's address file) never joins this one, whose processes get killed. It is
    stopped by removing its node, not ``Cluster.shutdown()``, which also deletes the default
    folder's address file (another session's)."""
    import shutil
    import tempfile

    from ray.cluster_utils import Cluster

    temp_dir = tempfile.mkdtemp(prefix="brf-", dir="/tmp")  # short: Ray's socket paths live in it
    try:
        cluster = Cluster(initialize_head=True, shutdown_at_exit=False, head_node_args={
            "num_cpus": 4, "include_dashboard": False, "temp_dir": temp_dir})
        try:
            print(json.dumps({"address": cluster.address}), flush=True)
            sys.stdin.read()  # until the test closes it (or dies)
        finally:
            cluster.remove_node(cluster.head_node)  # stops every process of the cluster
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    return 0


def run_load(address: str, store: str, context: str, n: int, batch_size: int, pace: float = 0.0) -> int:
    import batchray

    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    client = batchray.connect(store, address=address, progress=False)
    fed = 0

    def counted():
        nonlocal fed
        for i, row in enumerate(rows(context, n, pace, batch_size)):
            if i and i % batch_size == 0:
                fed = i
                replies.write(json.dumps({"fed": fed}) + "\n")
            yield row

    try:
        result = client.create_items(context, "rows", counted(), batch_size=batch_size)
        replies.write(json.dumps({"result": _summary(result)}, default=str) + "\n")
    except Exception as exc:  # noqa: BLE001
        replies.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
    return 0


class _Transfer:
    """One transfer (an atomic batch of two expression updates, with an idempotency key),
    submitted and waited for on a thread of its own, so that the client can stop waiting for it
    at any moment (:attr:`done` not set in time) while the call goes on."""

    def __init__(self, client: Any, updates: list[dict], key: str, options: dict[str, Any]) -> None:
        self.client = client
        self.options = options  # more RunOptions (a batch timeout)
        self.updates = updates
        self.key = key
        self.txn: Optional[str] = None
        self.result: Optional[dict] = None
        self.error: Optional[str] = None
        self.done = threading.Event()
        threading.Thread(target=self._run, name=f"transfer-{key}", daemon=True).start()

    def _run(self) -> None:
        from actors.runtime import ray_get as _get

        try:
            submitted = self.client.update_items(BANK, self.updates, atomic=True, max_retries=2,
                                                 idempotency_key=self.key, progress=False, wait=False,
                                                 **self.options)
            if isinstance(submitted, str):  # the batch id, at once; then wait for the result
                self.txn = submitted
                while self.result is None:
                    try:
                        self.result = _get(self.client.runtime.coordinator.wait.remote(self.txn, 0.5), timeout=10)
                    except Exception:  # noqa: BLE001 - the coordinator is restarting: ask again
                        time.sleep(0.2)
            else:  # Ray re-sent the submit: the result of the batch registered before
                self.txn = submitted.transaction_id
                self.result = submitted.dump()
        except Exception as exc:  # noqa: BLE001 - an error: the outcome is unknown
            self.error = f"{type(exc).__name__}: {exc}"
        self.done.set()


def run_bank(address: str, store: str, history: str, process: str, seed: int, config: dict) -> int:
    """A bank client; see the module docstring. ``config``: ``accounts`` (ids), ``max_amount``,
    ``reads`` (the fraction of operations that read), ``timeout`` (seconds a transfer may take
    before the client gives up on it: its outcome is then unknown), ``impatient`` (the fraction
    of transfers whose client waits only 0.2 to 1.5 s for the result, then logs the outcome as
    unknown and goes on while the batch may still commit), ``batch_timeout_ms`` (optional: each
    transfer's batch timeout)."""
    import random

    import batchray
    from batchray.testing.history import HistoryWriter

    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    stop = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()  # until the test closes it (or dies)
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    rng = random.Random(f"{seed}:{process}")
    accounts = list(config["accounts"])
    client = _retry(lambda: batchray.connect(store, address=address, progress=False))
    writer = HistoryWriter(history, process)
    replies.write(json.dumps({"ready": True}) + "\n")
    ops = 0
    while not stop.is_set():
        ops += 1
        key = f"{process}-{ops}"
        if rng.random() < config.get("reads", 0.3):
            writer.invoke("read", key)
            try:
                items = client.get_items(BANK)
                writer.complete("ok", "read", key, {"balances": {str(i["id"]): i["values"]["balance"] for i in items}})
            except Exception as exc:  # noqa: BLE001 - a read that fails changes nothing
                writer.complete("fail", "read", key, error=f"{type(exc).__name__}: {exc}")
                time.sleep(0.05)  # the store is down or refusing: no busy loop of failures
            continue
        source, target = rng.sample(accounts, 2)
        amount = rng.randint(1, config.get("max_amount", 10))
        writer.invoke("transfer", key, {"deltas": {str(source): -amount, str(target): amount}})
        updates = [{"selector": {"itemId": source}, "values": {"balance": f"=balance - {amount}"}},
                   {"selector": {"itemId": target}, "values": {"balance": f"=balance + {amount}"}}]
        patience = (rng.uniform(0.2, 1.5) if rng.random() < config.get("impatient", 0.0)
                    else config.get("timeout", 45.0))
        options = {"timeout": config["batch_timeout_ms"]} if "batch_timeout_ms" in config else {}
        call = _Transfer(client, updates, key, options)
        if not call.done.wait(patience):
            # the client gives up; the call goes on in its thread, and the batch may commit
            writer.complete("unknown", "transfer", key, txn=call.txn, error=f"no result in {patience:.1f} s")
            continue
        result = call.result
        if call.error is not None:
            writer.complete("unknown", "transfer", key, txn=call.txn, error=call.error)
            time.sleep(0.05)
        elif result.get("success"):
            writer.complete("ok", "transfer", key, txn=call.txn)
        elif result.get("state") == "rolled_back":
            error = result.get("error") or {}
            writer.complete("fail", "transfer", key, txn=call.txn, error=f"{error.get('code')}: {error.get('message')}")
        else:
            writer.complete("unknown", "transfer", key, txn=call.txn, error=f"state {result.get('state')}")
    writer.close()
    replies.write(json.dumps({"ops": ops}) + "\n")
    return 0


def main(argv: list[str]) -> int:
    command = argv[0]
    if command == "cluster":
        return serve_cluster()
    if command == "agent":
        return serve_agent(argv[1], argv[2])
    if command == "load":
        return run_load(argv[1], argv[2], argv[3], int(argv[4]), int(argv[5]), float(argv[6]) if len(argv) > 6 else 0.0)
    if command == "bank":
        return run_bank(argv[1], argv[2], argv[3], argv[4], int(argv[5]), json.loads(argv[6]))
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
