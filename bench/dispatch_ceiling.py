"""What scenario 7 (CPU-bound scaling, 2 workers / 1) would measure if chunks went from the driver
straight to the workers, without the coordinator's work per chunk: the redesign the scenario's
profile points at, measured before it is built.

    python -m bench.dispatch_ceiling [--items 200000] [--repeats 2]

Each turn loads the scenario's rows (unique names checked against a pattern on the workers,
2,000-row chunks, 4 shards) into a fresh store with 1 and then 2 workers, two ways, taking
turns:

* ``batchray``: ``create_items`` as users call it (the coordinator takes each feed call's chunks
  and dispatches them to the workers);
* ``direct``: the same planned and packed chunks sent by the driver itself as the workers'
  ``apply_many`` calls (the transport's call sizes: 1, 2, 4... up to 16 applies a call, six calls
  in flight), each participant then prepared and committed. The coordinator only started the
  store: no feed call, no dispatch, no decision logged. A prototype for measuring, not a
  runtime path: it keeps none of a batch's guarantees across a crash.
* ``inline``: as ``direct``, but each chunk pickled by the driver into its own ``apply_many``
  call (Ray carries an argument of up to 100 KiB inside the call: no object store, no raylet).

For each it prints the rate with 1 and 2 workers, their ratio (the target is 1.7), and the CPU
per 100,000 items of the workers and of everything else (``bench.cpu_profile``'s accounting):
on two cores the ratio is about ``2 W / (W + X)``, ``W`` the workers' CPU and ``X`` the rest's,
so ``X`` is what a dispatch design can change. Rates are the best of the turns; CPU figures the
turns' mean. Run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from typing import Any

from .common import make_rows, report, warm_up
from .cpu_profile import cpu_times
from .suite import PATTERN_COLLECTIONS

CHUNK = 2_000
MAX_APPLIES = 16  # applies per apply_many call at most, as actors.transport.RayTransport's group
IN_FLIGHT = 6  # apply_many calls unanswered at most


class DriverDispatch:
    """A batch of ``rows`` planned as ``create_items`` plans it, whose applies this process
    sends to the workers itself, then prepares and commits at every participant."""

    def __init__(self, client: Any, rows: list[dict[str, Any]]) -> None:
        import ray

        from batchray.core.run.executor import new_txn_id
        from batchray.core.txn.chunks import TxnRef

        self.runtime = client.runtime
        self.workers = ray.get(self.runtime.coordinator.lane.remote())["workers"]  # participant -> actor
        self.plan = client.planner.create_items("Cpu", "People", rows, batch_size=CHUNK, atomic=True,
                                                validate_all=False, max_bytes=64 << 20)
        self.ref = TxnRef(*new_txn_id("create"))
        self.numbers: dict[str, int] = defaultdict(int)  # each participant's applies, in order
        self.in_flight: list[Any] = []  # apply_many calls' summaries

    def entry(self, participant: str, chunk: Any, part: Any = None) -> tuple:
        """An ``apply_many`` entry for the participant's next apply."""
        number = self.numbers[participant]
        self.numbers[participant] = number + 1
        return (participant, self.ref, chunk, False, part, False, number)

    def call(self, worker: Any, applies: Any) -> None:
        """Send one ``apply_many`` call; wait for the oldest while more than ``IN_FLIGHT`` are out."""
        import ray

        summaries, _images = worker.apply_many.remote(applies)
        self.in_flight.append(summaries)
        while len(self.in_flight) > IN_FLIGHT:
            done, _ = ray.wait(self.in_flight, num_returns=1)
            self.in_flight.remove(done[0])
            self._settle(done)

    def _settle(self, refs: list[Any]) -> None:
        import ray

        for summaries in ray.get(refs):
            for summary in summaries:
                if isinstance(summary, BaseException):
                    raise summary

    def finish(self) -> None:
        """Wait for every apply, then prepare and commit each participant that got one."""
        import ray

        self._settle(self.in_flight)
        touched = [p for p, n in self.numbers.items() if n]
        assert all(ray.get([self.workers[p].prepare.remote(p, self.ref) for p in touched])), "a participant voted no"
        ray.get([self.workers[p].commit.remote(p, self.ref) for p in touched])


def direct_load(client: Any, rows: list[dict[str, Any]]) -> None:
    """Pack the chunks as the driver packs a feed call's (groups of 1, 2, 4... up to
    ``FEED_GROUP``), and send their refs to the workers, several applies a call."""
    from actors.runtime import FEED_GROUP, encode_creates, pack_chunks
    from actors.transport import ChunkPart

    batch = DriverDispatch(client, rows)
    queued: dict[str, list[tuple]] = defaultdict(list)  # by worker (its actor id)
    calls: dict[str, int] = defaultdict(int)
    by_id: dict[str, Any] = {}

    def send(worker_id: str, force: bool = False) -> None:
        queue = queued[worker_id]
        if queue and (force or len(queue) >= min(MAX_APPLIES, 1 << calls[worker_id])):
            queued[worker_id] = []
            calls[worker_id] += 1
            batch.call(by_id[worker_id], queue)

    def dispatch(group: list[Any]) -> None:
        if batch.runtime.encode_on_sender is not None:
            encode_creates(group, batch.runtime.encode_on_sender)
        pack_chunks(group)
        for pc in group:
            worker = batch.workers[pc.participant]
            worker_id = worker._actor_id.hex()
            by_id[worker_id] = worker
            chunk = pc.chunk
            sent, part = (chunk.bundle, chunk.index) if isinstance(chunk, ChunkPart) else (chunk, None)
            queued[worker_id].append(batch.entry(pc.participant, sent, part))
            send(worker_id)

    group: list[Any] = []
    group_max = 1
    for pc in batch.plan.chunks:
        group.append(pc)
        if len(group) >= group_max:
            dispatch(group)
            group, group_max = [], min(FEED_GROUP, 2 * group_max)
    if group:
        dispatch(group)
    for worker_id in list(queued):
        send(worker_id, force=True)
    batch.finish()


def inline_load(client: Any, rows: list[dict[str, Any]]) -> None:
    """Each chunk pickled here and sent inside an ``apply_many`` call of its own."""
    from actors.transport import plain_pickled

    batch = DriverDispatch(client, rows)
    for pc in batch.plan.chunks:
        batch.call(batch.workers[pc.participant], plain_pickled([batch.entry(pc.participant, pc.chunk)]))
    batch.finish()


def batchray_load(client: Any, rows: list[dict[str, Any]]) -> None:
    assert client.create_items("Cpu", "People", rows, batch_size=CHUNK).success


def measure(items: int, repeats: int) -> dict[str, Any]:
    import ray

    import batchray

    os.environ.setdefault("RAY_worker_niceness", "0")  # as bench.suite
    ray.init(include_dashboard=False, namespace="batchray", log_to_driver=False, address="local")
    root = tempfile.mkdtemp(prefix="batchray-dispatch-")
    rows = make_rows(items)
    loads = {"batchray": batchray_load, "direct": direct_load, "inline": inline_load}
    rates: dict[str, dict[int, float]] = {mode: {} for mode in loads}
    cpu: dict[str, dict[int, list[tuple[float, float]]]] = {mode: defaultdict(list) for mode in loads}
    try:
        for turn in range(repeats):
            for workers in (1, 2):
                for mode, load in loads.items():
                    path = os.path.join(root, f"{mode}-{workers}-{turn}")
                    client = batchray.connect(path, progress=False, workers=workers, shards=4)
                    try:
                        assert client.create_data_context("Cpu", PATTERN_COLLECTIONS).success
                        warm_up(client, "Cpu", "People", rows[: 4 * CHUNK], batch_size=CHUNK)
                        before = cpu_times()
                        started = time.perf_counter()
                        load(client, rows)
                        seconds = time.perf_counter() - started
                        after = cpu_times()
                        assert client.count_items("Cpu") == items + 4 * CHUNK
                    finally:
                        client.shutdown()
                        shutil.rmtree(path, ignore_errors=True)
                    rates[mode][workers] = max(rates[mode].get(workers, 0.0), items / seconds)
                    used = {pid: after[pid][1] - before.get(pid, (cmd, 0.0))[1] for pid, (cmd, _) in after.items()}
                    on_workers = sum(s for pid, s in used.items() if "WorkerActor" in after[pid][0])
                    per = 100_000 / items * 1000  # seconds for all items -> ms per 100,000
                    cpu[mode][workers].append((on_workers * per, (sum(used.values()) - on_workers) * per))
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    return {"rates": rates, "cpu": {m: {w: v for w, v in c.items()} for m, c in cpu.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    figures = measure(args.items, args.repeats)
    rows = []
    for mode, rates in figures["rates"].items():
        ratio = rates[2] / rates[1]
        two = figures["cpu"][mode][2]
        workers_ms = statistics.mean(w for w, _ in two)
        rest_ms = statistics.mean(r for _, r in two)
        rows += [
            {"metric": f"{mode}: rows/s with 1 / 2 workers", "value": f"{rates[1]:,.0f} / {rates[2]:,.0f}"},
            {"metric": f"{mode}: 2 workers / 1", "value": round(ratio, 3), "target": ">= 1.7", "ok": ratio >= 1.7},
            {"metric": f"{mode}, 2 workers: CPU ms per 100,000 items, workers / the rest",
             "value": f"{workers_ms:.0f} / {rest_ms:.0f}"},
            {"metric": f"{mode}: 2 W / (W + X) from that CPU", "value": round(2 * workers_ms / (workers_ms + rest_ms), 3)},
        ]
    report("scenario 7 with and without the coordinator's dispatch", rows,
           {"items": args.items, "chunkRows": CHUNK, "shards": 4, **figures})


if __name__ == "__main__":
    main()
