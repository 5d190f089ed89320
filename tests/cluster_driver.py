"""Helper process for tests/test_cluster_jobs.py (not a test module itself).

``python tests/cluster_driver.py node-removal STORE_URL``

Starts a Ray cluster of three nodes on this machine (``ray.cluster_utils.Cluster``), connects
batchray to a PostgreSQL store (the workers spread over the nodes), streams an atomic batch and
removes, in the middle of it, a node that runs a worker. It then checks and prints one JSON line:

* the batch ended all-or-nothing (every item or none in its data context);
* the worker came back elsewhere under a newer epoch for each of its participants;
* a stale copy of the removed worker — a participant opened before the removal, acting with
  the epoch the removed worker held — cannot apply, vote or decide: StaleEpochError;
* after recovery nothing is left prepared or registered.

It runs in its own process because a process joins one Ray cluster only, and the test process
may already belong to the shared session (tests/conftest.py ``ray_session``).
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from typing import Any

N = 30_000
CHUNK = 1_000


def node_removal(store: str) -> dict[str, Any]:
    import ray
    from ray.cluster_utils import Cluster

    import batchray
    from batchray.core.txn.chunks import TxnRef, UpdateItems, context_range
    from batchray.errors import StaleEpochError
    from batchray.core.storage.postgres.participant import PgParticipant
    from batchray.core.storage.postgres.store import PgStore

    # node deaths noticed in about a second instead of ~15 s
    system = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 300, "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False,
                                                            "_system_config": system})
    out: dict[str, Any] = {}
    try:
        nodes = [cluster.add_node(num_cpus=2) for _ in range(2)]
        cluster.wait_for_nodes()
        client = batchray.connect(store, address=cluster.address, workers=2, shards=2, progress=False,
                                  stall_timeout=30.0)
        assert client.create_data_context("Load", [{"name": "Load", "attrs": [
            {"name": "label"}, {"name": "n", "type": "numeric"}]}]).success
        before = client.info()
        out["workerNodes"] = [w["node"] for w in before["workers"]]
        out["nodes"] = {"head": cluster.head_node.node_id, "others": [n.node_id for n in nodes]}
        head_id = cluster.head_node.node_id
        victim_index = next((i for i, w in enumerate(before["workers"]) if w["node"] != head_id), None)
        assert victim_index is not None, f"no worker outside the head node: {out}"
        victim = before["workers"][victim_index]
        victim_node = next(n for n in nodes if n.node_id == victim["node"])
        out["victimEpochs"] = victim["epochs"]
        out["victimNode"] = victim["node"]

        # a stale copy of the victim: its own connection to the store, acting with its epochs
        stale_store = PgStore(store)
        stale = {name: PgParticipant(stale_store, name, recover=False) for name in victim["epochs"]}

        fed = threading.Event()
        outcome: dict[str, Any] = {}

        def rows():
            for i in range(N):
                if i == N // 3:
                    fed.set()  # a third of the batch is in flight: time to remove the node
                if i % CHUNK == 0:
                    time.sleep(0.05)
                yield {"label": f"row-{i}", "n": i}

        def load():
            from batchray.errors import NotFoundError

            try:
                outcome["result"] = client.create_items("Load", "Load", rows(), batch_size=CHUNK)
            except NotFoundError as exc:
                # the batch ended (rolled back) while its input was still being fed; its
                # result is in the log
                outcome["feedRefused"] = exc.message
                batch_id = exc.details["batchId"]
                outcome["result"] = _retry(lambda: client.wait(batch_id))
            except BaseException as exc:  # noqa: BLE001 - reported
                outcome["error"] = f"{type(exc).__name__}: {exc}"

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        assert fed.wait(120), "the load never got going"
        cluster.remove_node(victim_node, allow_graceful=False)
        out["removedAt"] = time.time()
        loader.join(240)
        assert not loader.is_alive(), "the batch did not end"
        if "error" in outcome:
            out["loadError"] = outcome["error"]
        if "feedRefused" in outcome:
            out["feedRefused"] = outcome["feedRefused"]
        result = outcome.get("result")
        out["state"] = result.state.value if result is not None else None
        out["count"] = _retry(lambda: client.count_items("Load"))
        out["recovered"] = _retry(client.recover)
        after = _retry(client.info)
        replaced = after["workers"][victim_index]
        out["replacement"] = {"node": replaced["node"], "epochs": replaced["epochs"]}

        refused = []
        lo, _ = context_range(1)
        for name, epoch in victim["epochs"].items():
            late = TxnRef("stale-step", 1, epoch=epoch)
            for step in ("apply", "prepare", "commit", "abort"):
                try:
                    if step == "apply":
                        stale[name].apply(late, UpdateItems(1, 1, ids=[lo + 1], patch={"n": -1}))
                    else:
                        getattr(stale[name], step)(late)
                    refused.append([name, step, "ACCEPTED"])
                except StaleEpochError:
                    refused.append([name, step, "StaleEpochError"])
        out["staleSteps"] = refused
        for participant in stale.values():
            participant.close()
        stale_store.close()
        out["leftovers"] = _retry(lambda: ray.get(client.runtime.coordinator.leftovers.remote()))
        import psycopg
        from batchray.core.storage.postgres.url import parse_pg_url

        dsn, schema = parse_pg_url(store)
        with psycopg.connect(dsn, autocommit=True) as conn:
            out["prepared"] = [g for (g,) in conn.execute(
                "SELECT gid FROM pg_prepared_xacts WHERE starts_with(gid, %s)", (f"batchray:{schema}:",))]
        client.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()
    return out


def _retry(call, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except Exception:  # noqa: BLE001 - the coordinator or a worker is restarting
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def main(argv: list[str]) -> int:
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # Ray's own output goes to stderr
    try:
        if argv[0] == "node-removal":
            reply = {"ok": True, "value": node_removal(argv[1])}
        else:
            raise SystemExit(f"unknown command {argv[0]!r}")
    except BaseException as exc:  # noqa: BLE001 - the test reports it
        reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-4000:]}
    replies.write(json.dumps(reply, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
