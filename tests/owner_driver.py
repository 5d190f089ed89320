"""Helper process for tests/test_store_owner.py (not a test module itself).

``python tests/owner_driver.py STORE [WAIT]``

A driver as a user starts one: ``batchray.connect(STORE)`` with no address. While the store's
live owner cannot be joined (STORE_IN_USE) it tries again, for up to WAIT seconds (default 0).
It then prints one JSON line ``{connected, seconds, gcs, owner}`` and answers JSON lines on stdin:

* ``{"op": "create", "n": N, "tag": T}``: an atomic batch of N items tagged T into ``Own/Rows``
  (the context is created by the first driver); answers ``{success, created}`` once committed;
* ``{"op": "count"}``: ``{count, tags}`` (items per tag), read through this driver;

End of stdin closes the client (the actors keep running) and exits.
"""
from __future__ import annotations

import faulthandler
import json
import sys
import time


def main() -> int:
    store = sys.argv[1]
    wait = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    import batchray  # before Ray, as a user's script: connect() sets Ray's token mode up
    from batchray.errors import StoreInUse

    started = time.monotonic()
    while True:
        try:
            client = batchray.connect(store, progress=False, quiet=True)
            break
        except StoreInUse as exc:
            if time.monotonic() - started > wait:
                print(json.dumps({"connected": False, "error": exc.to_dict()}), flush=True)
                return 1
            time.sleep(0.5)
    import ray

    if "Own" not in client.data_contexts():
        client.create_data_context("Own", [{"name": "Rows", "attrs": [{"name": "tag"}, {"name": "n", "type": "numeric"}]}])
    print(json.dumps({"connected": True, "seconds": time.monotonic() - started,
                      "gcs": ray.get_runtime_context().gcs_address, "owner": client.info()["owner"]}), flush=True)
    for line in sys.stdin:
        message = json.loads(line)
        # a request that hangs shows where, in this driver's log, before the test gives up
        faulthandler.dump_traceback_later(40, exit=False)
        if message["op"] == "create":
            rows = [{"tag": message["tag"], "n": i} for i in range(message["n"])]
            result = client.create_items("Own", "Rows", rows)
            print(json.dumps({"success": result.success, "created": result.items_created}), flush=True)
        elif message["op"] == "count":
            tags: dict[str, int] = {}
            for item in client.get_items("Own", limit=100_000):
                tags[item["values"]["tag"]] = tags.get(item["values"]["tag"], 0) + 1
            print(json.dumps({"count": client.count_items("Own"), "tags": tags}), flush=True)
        faulthandler.cancel_dump_traceback_later()
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
