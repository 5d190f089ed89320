"""Driver processes of tests/test_raydata_faults.py (not a test module itself): each joins the
test's own Ray cluster by address, does one thing and prints one JSON line per step.

``python tests/raydata_driver.py retry ADDRESS STORE FLAG N``
    Writes N rows (8 blocks, two to a write task); the first write task to pull its second
    block ``os._exit``s then (once: FLAG marks it), its first block fed, and Ray runs it
    again.
    Prints the result, the count of items and the count of distinct labels.

``python tests/raydata_driver.py hang ADDRESS STORE N``
    Starts writing N rows in one write task of two blocks, which sleeps once the first block
    is fed; once some of it is applied the driver prints ``{"fed": txn}``, and the test
    SIGKILLs it mid-write.

``python tests/raydata_driver.py handover ADDRESS STORE``
    Opens a sink's batch (one chunk in flight at a time) and holds every shard's SQLite write
    lock; a Ray task runs the sink's ``write`` on one block of 1,000 rows (two chunks) and
    ``os._exit``s as soon as it returns: its second chunk has not left the coordinator yet.
    The locks are let go once the task is dead, and the write completed. Prints the result
    and the count of items.

``python tests/raydata_driver.py write ADDRESS STORE PREFIX N``
    Waits for the file STORE.go (so that two such drivers start writing together), then
    writes N rows labelled PREFIX-0... with ``batchray.write_dataset`` (4 blocks). Prints the
    result, and when the write began and ended (``time.time()``).

``python tests/raydata_driver.py count ADDRESS STORE``
    Prints the count of items, of distinct labels and of labels starting ``a-`` and ``b-``.

``python tests/raydata_driver.py check ADDRESS STORE TXN``
    Waits until batch TXN is finished (the stall timeout rolls a dead driver's batch back);
    prints its state and the count of committed items.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

CONTEXT = "Rows"
COLLECTIONS = [{"name": "rows", "attrs": [{"name": "label"}, {"name": "n", "type": "numeric"}]}]
STALL_TIMEOUT = 3.0


def say(**message) -> None:
    print(json.dumps(message, default=str), flush=True)


def dataset(n: int, blocks: int = 8):
    import ray

    return ray.data.range(n, override_num_blocks=blocks).map_batches(
        lambda b: {"label": [f"r{i}" for i in b["id"]], "n": b["id"]}, batch_format="numpy")


def main() -> None:
    mode, address, store = sys.argv[1:4]
    import ray

    import batchray
    from batchray.api.raydata import ItemsDatasink

    ray.init(address=address, namespace="batchray", log_to_driver=False)
    client = batchray.connect(store, address=address, progress=False, stall_timeout=STALL_TIMEOUT)
    if mode == "check":
        txn = sys.argv[4]
        end = time.monotonic() + 60
        while client.status(txn)["state"] not in ("completed", "rolled_back", "failed", "cancelled"):
            if time.monotonic() > end:
                break
            time.sleep(0.2)
        say(state=client.status(txn)["state"], count=client.count_items(CONTEXT))
        return
    if mode == "count":
        labels = [row["values"]["label"] for row in client.get_items(CONTEXT)]
        say(count=client.count_items(CONTEXT), labels=len(set(labels)),
            a=sum(label.startswith("a-") for label in labels), b=sum(label.startswith("b-") for label in labels))
        return
    if mode == "write":
        write(client, store, sys.argv[4], int(sys.argv[5]))
        return
    client.create_data_context(CONTEXT, collections=COLLECTIONS)
    if mode == "retry":
        flag, n = Path(sys.argv[4]), int(sys.argv[5])

        class DiesOnce(ItemsDatasink):
            @property
            def min_bytes_per_write(self):
                return 20_000  # two blocks of ~16 KB to a write task

            def write(self, blocks, ctx):
                def pulled():
                    for position, block in enumerate(blocks):
                        if position == 1 and not flag.exists():
                            flag.touch()
                            os._exit(1)  # while pulling the second block: the first was fed
                        yield block
                return super().write(pulled(), ctx)

        sink = DiesOnce(context=CONTEXT, client=client, batch_size=1000)
        dataset(n).write_datasink(sink)
        result = sink.result
        labels = {row["values"]["label"] for row in client.get_items(CONTEXT)}
        say(success=result.success, created=result.items_created, count=client.count_items(CONTEXT),
            labels=len(labels), died=flag.exists(), error=result.error)
    elif mode == "hang":
        import threading

        n = int(sys.argv[4])

        class Hangs(ItemsDatasink):
            @property
            def min_bytes_per_write(self):
                return 1 << 30  # one write task, with both blocks

            def write(self, blocks, ctx):
                def pulled():
                    for position, block in enumerate(blocks):
                        if position == 1:
                            time.sleep(600)  # the first block is fed; the driver gets killed
                        yield block
                return super().write(pulled(), ctx)

        sink = Hangs(context=CONTEXT, client=client, batch_size=1000)
        threading.Thread(target=dataset(n, blocks=2).write_datasink, args=(sink,), daemon=True).start()
        while True:
            time.sleep(0.1)
            if sink.txn is not None and (client.status(sink.txn).get("progress") or {}).get("completed"):
                say(fed=sink.txn)
                time.sleep(600)
    elif mode == "handover":
        handover(client)


def write(client, store: str, prefix: str, n: int) -> None:
    """One of two drivers writing a Dataset to one store at once: each makes the context if
    the other has not (the second creation of the name is refused), then writes its rows."""
    import ray

    import batchray

    from batchray.errors import SchemaError

    try:
        made = client.create_data_context(CONTEXT, collections=COLLECTIONS)
        assert made.success or CONTEXT in client.data_contexts(), made.error
    except SchemaError:  # the other driver made it first
        assert CONTEXT in client.data_contexts()
    say(ready=True)
    go = Path(store + ".go")
    end = time.monotonic() + 120
    while not go.exists() and time.monotonic() < end:
        time.sleep(0.02)
    ds = ray.data.range(n, override_num_blocks=4).map_batches(
        lambda b: {"label": [f"{prefix}-{i}" for i in b["id"]], "n": b["id"]}, batch_format="numpy")
    began = time.time()
    result = batchray.write_dataset(ds, client=client, context=CONTEXT, collection="rows")
    say(success=result.success, created=result.items_created, txn=result.transaction_id, error=result.error,
        began=began, ended=time.time())


def handover(client) -> None:
    import sqlite3
    from types import SimpleNamespace

    import pyarrow as pa
    import ray
    from ray.data.datasource.datasink import WriteResult

    from batchray.api.raydata import ItemsDatasink

    sink = ItemsDatasink(context=CONTEXT, client=client, batch_size=500, parallelism=1)
    sink.on_write_start()
    assert len(client.runtime.info()["workers"]) == 2  # both up, their shards open
    locks = [sqlite3.connect(str(client.layout.participant_path(name)), isolation_level=None, timeout=30)
             for name in client.layout.shard_names]
    for conn in locks:
        conn.execute("BEGIN IMMEDIATE")

    @ray.remote(max_retries=0)
    def write_and_die(sink, block):
        sink.write([block], SimpleNamespace(task_idx=0))
        os._exit(1)  # its chunks fed, the second still waiting at the coordinator

    block = pa.table({"label": [f"r{i}" for i in range(1000)], "n": list(range(1000))})
    try:
        ray.get(write_and_die.remote(sink, block))
        died = False
    except ray.exceptions.RayError:
        died = True
    # time for Ray to learn of the task's death: an object the task itself owned would be lost
    # by then (OwnerDiedError), as it is once its owner has exited
    time.sleep(2)
    for conn in locks:
        conn.execute("ROLLBACK")
        conn.close()
    sink.on_write_complete(WriteResult(1000, 0, [{"task": 0, "rows": 1000, "open": True}]))
    result = sink.result
    say(died=died, success=result.success, created=result.items_created, count=client.count_items(CONTEXT),
        error=result.error)


if __name__ == "__main__":
    main()
