"""A list cut into many small chunks: the time per chunk as the chunks grow, in one run.

    python -m bench.many_chunks [--chunks 2500,5000,10000] [--workers 2]

Creates lists of one-item chunks (``batch_size=1``) of each size in turn on one store and
prints the seconds per chunk of each and the ratio of the largest's to the smallest's: a load
whose per-chunk cost does not grow with the batch's chunks has a ratio near 1 (before packed
objects held at most ``actors.runtime.PACK_CHUNKS`` chunks, every worker call deserialized
the whole feed's index of parts, and 10,000 chunks cost 3.1 times what 2,500 did per chunk).
Target: ratio at most 1.5. Prints a table and the JSON of the result (see bench/common.py).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time

from .common import report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.many_chunks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", default="2500,5000,10000", help="comma-separated chunk counts")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.chunks.split(",")]

    import batchray

    root = tempfile.mkdtemp(prefix="batchray-bench-chunks-")
    client = batchray.connect(f"{root}/store", workers=args.workers, progress=False)
    try:
        client.create_data_context("C", [{"name": "C", "attrs": [{"name": "name"}]}])
        client.create_items("C", "C", [{"name": "warm"}] * 20, batch_size=1)  # every worker and shard open
        per_chunk = {}
        for count in counts:
            rows = [{"name": f"c{i}"} for i in range(count)]
            started = time.perf_counter()
            result = client.create_items("C", "C", rows, batch_size=1)
            seconds = time.perf_counter() - started
            assert result.success and result.items_created == count, result.error
            per_chunk[count] = seconds / count
    finally:
        client.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    rows = [{"metric": f"ms per chunk, {count:,} chunks", "value": round(1000 * per_chunk[count], 3)} for count in counts]
    ratio = per_chunk[counts[-1]] / per_chunk[counts[0]]
    rows.append({"metric": f"per-chunk time, {counts[-1]:,} / {counts[0]:,} chunks", "value": round(ratio, 2),
                 "target": "<= 1.5", "ok": ratio <= 1.5})
    report(f"Many one-item chunks, {args.workers} workers", rows, {"chunks": counts})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
