"""A batch load as a Ray job, safe to resubmit.

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python cluster/load_job.py --store "$BATCHRAY_STORE" --context People \\
            --generate 1000000 --idempotency-key people-2026-06-01

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python cluster/load_job.py --store "$BATCHRAY_STORE" --context Trips \\
            --file /data/trips.jsonl --idempotency-key trips-v3

The load is one atomic batch (all items or none) under an **idempotency key**: a job
resubmitted with the same key — because it failed, was stopped, or its driver's node died —
gets the first batch's result back and applies nothing again. The first batch may still be
running then (a resubmission waits for it); a batch that was rolled back stays rolled back under
its key, so load again under a new key.

``--generate N`` streams N synthetic people rows; ``--file PATH`` streams a JSON Lines file
(one object of values per line; the data context is created from the first row when missing).
The data flows in bounded memory whatever the size. The job prints one JSON line::

    {"success": true, "transactionId": "...", "state": "completed", "itemsCreated": 1000000,
     "replayed": false, "seconds": 12.3}

and exits 0 when the batch committed, 1 otherwise; a load refused before or while it runs (a
line of the file that is not a JSON object, a collection that does not exist, a bad setting)
or one that finds no Ray cluster prints ``{"success": false, "error": {"code", "message",
"details"}}`` and exits 1 too. ``--store`` is a PostgreSQL URL for a
cluster (``postgresql://user@host/db?schema=NAME``; the password from ``PGPASSWORD`` or
``~/.pgpass`` on every node, or in the URL) or, on a single node, a directory.

``--address`` defaults to ``auto``: the Ray cluster the job was submitted to (any one running
on the machine, run by hand). Run by hand on a machine with no cluster, it finds none and
says so; ``--address local`` starts a Ray of its own for the load instead.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from typing import Any, Iterable, Iterator, Optional

from batchray.errors import (  # imports nothing of Ray (see actors.auth)
    BatchrayError,
    DocumentError,
    ParticipantUnavailable,
    ValidationError,
)

PEOPLE = [{"name": "name"}, {"name": "age", "type": "numeric"}, {"name": "city"},
          {"name": "score", "type": "numeric"}, {"name": "active", "type": "checkbox"}]
CITIES = ["Lisbon", "Nairobi", "Osaka", "Quito", "Tromso", "Austin", "Pune", "Lyon"]


def generated(count: int) -> Iterator[dict[str, Any]]:
    for i in range(count):
        yield {"name": f"person-{i}", "age": i % 97, "city": CITIES[i % 8], "score": (i % 1000) / 10.0,
               "active": i % 3 != 0}


def json_lines(path: str) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise DocumentError(f"{path}:{number}: not JSON ({exc})", path=path, line=number) from None
                if not isinstance(row, dict):
                    raise DocumentError(f"{path}:{number}: each line must be a JSON object of values", path=path,
                                        line=number)
                yield row


def attributes_of(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Attributes for a new data context, typed from a first row."""
    attrs = []
    for name, value in row.items():
        if isinstance(value, bool):
            attrs.append({"name": name, "type": "checkbox"})
        elif isinstance(value, (int, float)):
            attrs.append({"name": name, "type": "numeric"})
        else:
            attrs.append({"name": name})
    return attrs


def run(args: argparse.Namespace) -> dict[str, Any]:
    import batchray

    started = time.perf_counter()
    rows: Iterable[dict[str, Any]]
    total: Optional[int] = None
    if args.generate is not None:
        rows, total, attrs = generated(args.generate), args.generate, PEOPLE
    else:
        stream = json_lines(args.file)
        first = next(stream, None)
        if first is None:
            raise DocumentError(f"{args.file} holds no rows", path=args.file)
        rows, attrs = itertools.chain([first], stream), attributes_of(first)
    if args.attrs:
        try:
            attrs = json.loads(args.attrs)
        except ValueError as exc:
            raise ValidationError(f"--attrs is not JSON ({exc})", field="attrs") from None
    collection = args.collection or args.context
    with batchray.connect(args.store, address=args.address, workers=args.workers, shards=args.shards,
                          progress=False) as client:
        replayed = client.runtime.view.log.batch_by_key(args.idempotency_key) is not None
        if not replayed and args.context not in client.data_contexts():
            made = client.create_data_context(args.context, [{"name": collection, "attrs": attrs}])
            if not made.success and args.context not in client.data_contexts():
                return {"success": False, "error": made.error}
        result = client.create_items(args.context, collection, rows, idempotency_key=args.idempotency_key,
                                     total=total, batch_size=args.batch_size)
    return {"success": result.success, "transactionId": result.transaction_id, "state": result.state.value,
            "itemsCreated": result.items_created, "replayed": replayed, "error": result.error,
            "seconds": round(time.perf_counter() - started, 3)}


def _count(text: str) -> int:
    """An argument that counts rows: a whole number from 0."""
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def no_cluster(exc: ConnectionError, address: str) -> dict[str, Any]:
    """The structured error of a load that found no Ray cluster at ``address`` (Ray's ``exc``)."""
    return ParticipantUnavailable(f"no Ray cluster to join at --address {address}: {exc} (submit the job to a "
                                  "cluster with `ray job submit`, or pass --address local to start a Ray of its "
                                  "own on this machine)", address=address).to_dict()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default=os.environ.get("BATCHRAY_STORE"), required="BATCHRAY_STORE" not in os.environ,
                        help="postgresql://... (clusters) or a directory (one node); default $BATCHRAY_STORE")
    parser.add_argument("--address", default=os.environ.get("BATCHRAY_ADDRESS", "auto"),
                        help="Ray cluster to join (default: auto, the job's cluster; local: start a Ray of its own)")
    parser.add_argument("--context", required=True, help="data context (created when missing)")
    parser.add_argument("--collection", help="collection (default: the context's name)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--generate", type=_count, help="stream this many synthetic rows")
    source.add_argument("--file", help="stream a JSON Lines file")
    parser.add_argument("--attrs", help="attributes of a new context, as JSON (default: from the rows)")
    parser.add_argument("--idempotency-key", required=True, help="the batch's key: a resubmission returns its result")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shards", type=int, default=None, help="shards of a new store")
    parser.add_argument("--batch-size", type=int, default=None, help="items per chunk")
    args = parser.parse_args(argv)
    try:
        summary = run(args)
    except BatchrayError as exc:  # refused: still the one line that says so
        summary = {"success": False, "error": exc.to_dict()}
    except ConnectionError as exc:  # ray.init found no cluster at --address
        summary = {"success": False, "error": no_cluster(exc, args.address)}
    sys.stdout.write(json.dumps(summary, default=str) + "\n")
    sys.stdout.flush()
    return 0 if summary["success"] else 1


if __name__ == "__main__":
    sys.exit(main())
