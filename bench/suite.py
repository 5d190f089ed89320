"""The scenarios of ``python -m bench``: each measures batchray and its baseline in the same run.

Every scenario returns ``(rows, extra)``: table rows ``{metric, value, target, ok}`` and a dict
of raw figures for the JSON. Ratios are always of figures measured minutes apart on the same
machine, never against a figure remembered from another day; where a baseline is too slow to
run in full (Ray Data, one actor call per item) it runs on a sample and its rate is compared.
"""
from __future__ import annotations

import gc
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .common import COLLECTIONS, make_rows, raw_sqlite_load, raw_sqlite_update, warm_up
from .contention import contention
from .import_throughput import import_throughput
from .peers import duckdb_load, iceberg_rate
from .raydata import raydata
from .ray_create import load_seconds, load_table_seconds, per_call_rate, percentile, small_batch_latencies

UPDATE = {"selector": {"query": "age >= 0"}, "values": {"score": "=score * 1.1"}}

PATTERN_COLLECTIONS = [
    {
        "name": "People",
        "attrs": [
            {"name": "name", "type": "categorical", "pattern": r"person-[0-9]+"},
            {"name": "age", "type": "numeric", "min": 0, "max": 130},
            {"name": "city", "type": "categorical", "pattern": r"[A-Z][a-z]+"},
            {"name": "score", "type": "numeric"},
            {"name": "active", "type": "checkbox"},
        ],
    }
]
"""The bench schema with constraints: each chunk's unique names matched against their pattern one by
one, which the driver leaves to the workers (``SENDER_DISTINCT_SHARE``): CPU-bound work on the workers."""


@dataclass
class Sizes:
    items: int = 1_000_000
    raydata_sample: int = 50_000
    iceberg_sample: int = 500_000  # write_iceberg's rate grows with its blocks: compare at a real size
    per_call_sample: int = 20_000
    latency_runs: int = 200
    latency_items: int = 10_000  # latency-bound scaling: 400 chunks of 25 items
    latency_chunk: int = 25
    cpu_items: int = 200_000  # CPU-bound scaling: 100 chunks of 2,000 items
    cpu_chunk: int = 2_000
    import_budget: int = 16 << 20
    repeats: int = 2
    scaling_repeats: int = 3
    contention_batches: int = 20  # per driver

    @classmethod
    def quick(cls) -> "Sizes":
        return cls(items=100_000, raydata_sample=10_000, iceberg_sample=20_000, per_call_sample=5_000, latency_runs=60,
                   latency_items=5_000, cpu_items=60_000, import_budget=8 << 20, repeats=1, scaling_repeats=2,
                   contention_batches=10)


@dataclass
class Suite:
    """Shared state of one run: the rows, the Ray session, clients by name, figures measured
    once and used by several scenarios (the bulk-create rate)."""

    sizes: Sizes
    root: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="batchray-bench-"))
    figures: dict[str, Any] = field(default_factory=dict)
    scaling: dict[str, dict[int, float]] = field(default_factory=dict)
    _rows: Optional[list[dict[str, Any]]] = None
    _clients: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        if self._rows is None:
            self._rows = make_rows(self.sizes.items)
        return self._rows

    def drop_rows(self) -> None:
        self._rows = None
        gc.collect()

    def ray(self):
        import ray

        if not ray.is_initialized():
            # Ray runs its worker processes (batchray's actors) at niceness 15; the baselines run
            # in this process at 0. On a machine shared with other work that hands the baselines
            # most of the CPU, so the suite runs both at the same priority
            os.environ.setdefault("RAY_worker_niceness", "0")
            ray.init(include_dashboard=False, namespace="batchray", log_to_driver=False, address="local")
        return ray

    def client(self, name: str, **options: Any):
        """A client on its own store (its own coordinator and workers), made once per name."""
        if name not in self._clients:
            import batchray

            self.ray()
            self._clients[name] = batchray.connect(os.path.join(self.root, name), progress=False, **options)
        return self._clients[name]

    def close_client(self, name: str) -> None:
        client = self._clients.pop(name, None)
        if client is not None:
            client.shutdown()

    def close(self) -> None:
        for name in list(self._clients):
            self.close_client(name)
        shutil.rmtree(self.root, ignore_errors=True)

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    # -- figures shared by several scenarios ------------------------------------------------------
    def create_rate(self) -> float:
        """batchray's atomic bulk-create rate with 2 workers (best of ``repeats``), measured once."""
        if "create_rate" not in self.figures:
            self._measure_create()
        return self.figures["create_rate"]

    def _measure_create(self) -> None:
        rows = self.rows()
        client = self.client("main", workers=2, shards=2)
        raw_best = batch_best = float("inf")
        for attempt in range(self.sizes.repeats):  # alternate, keep the best of each
            path = self.path(f"raw-{attempt}.sqlite")
            raw_best = min(raw_best, raw_sqlite_load(path, rows))
            os.remove(path)
            batch_best = min(batch_best, load_seconds(client, "Create", rows))
        self.figures["raw_create_rate"] = len(rows) / raw_best
        self.figures["create_rate"] = len(rows) / batch_best


def _row(metric: str, value: Any, target: Optional[str] = None, ok: Optional[bool] = None) -> dict[str, Any]:
    out: dict[str, Any] = {"metric": metric, "value": value}
    if target is not None:
        out["target"] = target
        out["ok"] = bool(ok)
    return out


def _against_peer(suite: "Suite", peer: str, peer_rate: float, ratio_label: str, digits: int,
                  target: Optional[tuple[str, float]] = None,
                  ours: str = "batchray rows/s (2 workers, atomic; scenario 1)") -> list[dict[str, Any]]:
    """The three rows comparing batchray's bulk-create rate (scenario 1) with a peer's rate:
    the peer's, batchray's, and their ratio, checked against ``target`` (text, minimum) if any."""
    rate = suite.create_rate()
    ratio = rate / peer_rate
    check = (target[0], ratio >= target[1]) if target else (None, None)
    return [_row(peer, round(peer_rate)), _row(ours, round(rate)), _row(ratio_label, round(ratio, digits), *check)]


# -- 1-3: bulk create against raw SQLite, Ray Data and one actor call per item -----------------

def create_vs_sqlite(suite: Suite):
    suite.create_rate()  # measures the raw SQLite baseline beside it, taking turns
    rows = _against_peer(suite, "raw SQLite rows/s (orjson + executemany, 1 transaction, 1 process)",
                         suite.figures["raw_create_rate"], "ratio batchray / raw SQLite", 3, (">= 1.0", 1.0),
                         ours="batchray rows/s (2 workers, 2 shards, atomic, validated)")
    return rows, {"items": suite.sizes.items, "repeats": suite.sizes.repeats}


def ray_data_rate(suite: Suite, rows: list[dict[str, Any]]) -> float:
    """Rows/s of ``ray.data.from_items(rows).write_sql("INSERT ...", factory)`` into SQLite
    (five columns, not atomic), after a small unmeasured write that starts Ray Data's machinery."""
    suite.ray()
    import sqlite3

    import ray.data

    path = suite.path("raydata.sqlite")
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE IF NOT EXISTS items(name TEXT, age INTEGER, city TEXT, score REAL, active INTEGER)")
    setup.close()

    def connect():
        return sqlite3.connect(path, timeout=60)

    sql = "INSERT INTO items(name, age, city, score, active) VALUES(?, ?, ?, ?, ?)"
    ray.data.DataContext.get_current().enable_progress_bars = False
    ray.data.from_items(rows[:1000]).write_sql(sql, connect)
    started = time.perf_counter()
    ray.data.from_items(rows).write_sql(sql, connect)
    seconds = time.perf_counter() - started
    check = sqlite3.connect(path)
    written = check.execute("SELECT count(*) FROM items").fetchone()[0]
    check.close()
    assert written == len(rows) + 1000, written
    return len(rows) / seconds


def create_vs_raydata(suite: Suite):
    sample = suite.rows()[: suite.sizes.raydata_sample]
    rows = _against_peer(suite, f"Ray Data from_items().write_sql() rows/s (sample of {len(sample):,}, not atomic)",
                         ray_data_rate(suite, sample), "speed-up over Ray Data write_sql", 1, (">= 10x", 10))
    return rows, {"sample": len(sample)}


def create_vs_duckdb(suite: Suite):
    """DuckDB (``from_pylist`` + one ``INSERT ... SELECT`` in one transaction) on the full rows."""
    rows_in = suite.rows()
    best = float("inf")
    for attempt in range(max(2, suite.sizes.repeats)):  # the first from_pylist grows Arrow's pools
        path = suite.path(f"duckdb-{attempt}.duckdb")
        best = min(best, duckdb_load(path, rows_in))
        os.remove(path)
    duck_rate = len(rows_in) / best
    rows = _against_peer(suite, "DuckDB rows/s (pyarrow from_pylist + INSERT ... SELECT, 1 transaction, 1 process)",
                         duck_rate, "ratio batchray / DuckDB", 3, (">= 0.5", 0.5))
    # the same rows handed over as an Arrow table (from_pylist timed, as DuckDB's is): the
    # columnar path, chunks carried as record batches
    client = suite.client("main", workers=2, shards=2)
    table_s = min(load_table_seconds(client, "CreateTable", rows_in) for _ in range(suite.sizes.repeats))
    table_rate = len(rows_in) / table_s
    rows += [_row("batchray rows/s, the rows given as a pyarrow Table (from_pylist timed; columnar chunks)", round(table_rate)),
             _row("ratio batchray (Arrow table) / DuckDB", round(table_rate / duck_rate, 3), ">= 0.5", table_rate / duck_rate >= 0.5)]
    return rows, {"items": len(rows_in), "duckdbRate": round(duck_rate), "tableRate": round(table_rate)}


def create_vs_iceberg(suite: Suite):
    """Ray Data ``write_iceberg`` into a local pyiceberg SQL catalog (one atomic snapshot), on a
    sample: rates compared. No target is set; 1.0 means as fast."""
    sample = suite.rows()[: suite.sizes.iceberg_sample]
    suite.ray()
    root = suite.path("iceberg")
    os.makedirs(root, exist_ok=True)
    rows = _against_peer(suite, f"Ray Data write_iceberg rows/s (sample of {len(sample):,}, local SQL catalog, atomic)",
                         iceberg_rate(root, sample), "ratio batchray / Ray Data write_iceberg", 2)
    return rows, {"sample": len(sample)}


def create_vs_per_call(suite: Suite):
    rows_in = suite.rows()
    rows = _against_peer(suite, f"one actor call per item, rows/s (sample of {suite.sizes.per_call_sample:,})",
                         per_call_rate(suite.ray(), rows_in, suite.sizes.per_call_sample),
                         "speed-up over one call per item", 1, (">= 100x", 100))
    return rows, {"sample": suite.sizes.per_call_sample}


# -- 4: bulk expression update ------------------------------------------------------------------

def update_vs_sql(suite: Suite):
    rows_in = suite.rows()
    client = suite.client("main", workers=2, shards=2)
    if "Update" not in client.data_contexts():
        load_seconds(client, "Update", rows_in[:-1000])  # with its 1,000 warm-up items: as many as the file
    n = client.count_items("Update")
    assert n == len(rows_in), n
    raw_path = suite.path("raw-update.sqlite")
    raw_sqlite_load(raw_path, rows_in)
    raw_best = best_result = best_visible = float("inf")
    for _ in range(suite.sizes.repeats):
        raw_best = min(raw_best, raw_sqlite_update(raw_path))
        started = time.perf_counter()
        result = client.update_items("Update", [UPDATE], progress=False)
        result_at = time.perf_counter()
        assert result.success and result.items_updated == n, (result.error, result.items_updated)
        client.count_items("Update")  # waits at the commit gate until phase 2 is done everywhere
        visible_at = time.perf_counter()
        best_result = min(best_result, result_at - started)
        best_visible = min(best_visible, visible_at - started)
    os.remove(raw_path)
    ratio = raw_best / best_result
    ratio_visible = raw_best / best_visible
    rows = [
        _row("SQL UPDATE json_set rows/s (1 statement, 1 transaction, 1 process)", round(n / raw_best)),
        _row("batchray query update rows/s (2 workers, atomic, to the result)", round(n / best_result)),
        _row("ratio batchray / SQL (to the result: committed and durable)", round(ratio, 3), ">= 0.5", ratio >= 0.5),
        _row("batchray rows/s until a read sees it (phase 2 done)", round(n / best_visible)),
        _row("ratio batchray / SQL (until a read sees it)", round(ratio_visible, 3)),
    ]
    return rows, {"items": n, "sqlSeconds": raw_best, "resultSeconds": best_result, "visibleSeconds": best_visible}


# -- 5: rollback of an aborted batch ------------------------------------------------------------

def rollback(suite: Suite):
    rows_in = suite.rows()
    bad = rows_in[:-1] + [dict(rows_in[-1], age="not a number")]  # one bad item, at the very end
    client = suite.client("main", workers=2, shards=2)
    if "Rollback" not in client.data_contexts():
        assert client.create_data_context("Rollback", COLLECTIONS).success
    before = client.count_items("Rollback")
    best_apply = best_rollback = float("inf")
    ratios = []
    for _ in range(suite.sizes.repeats):
        started = time.perf_counter()
        result = client.create_items("Rollback", "People", bad, batch_size=25_000, progress=False)
        decided = time.perf_counter()
        assert not result.success and result.state.value == "rolled_back", result.state
        assert result.errors and result.errors[0].index == len(bad) - 1, result.errors[:1]
        count = client.count_items("Rollback")  # waits at the commit gate until every shard rolled back
        done = time.perf_counter()
        assert count == before, count
        apply_s, rollback_s = decided - started, done - decided
        ratios.append(rollback_s / apply_s)
        best_apply, best_rollback = min(best_apply, apply_s), min(best_rollback, rollback_s)
    ratio = min(ratios)
    rows = [
        _row(f"apply of {len(bad):,} items until the abort decision, s", round(best_apply, 3)),
        _row("rollback (phase 2 abort on every shard), s", round(best_rollback, 3)),
        _row("ratio rollback / apply", round(ratio, 3), "<= 1.0", ratio <= 1.0),
    ]
    return rows, {"items": len(bad), "ratios": [round(r, 4) for r in ratios]}


# -- 6-7: parallel scaling ----------------------------------------------------------------------

def _scaling(suite: Suite, key: str, workers_list: tuple[int, ...], load: Callable[[Any], float], **options: Any):
    """Best rate per worker count; the counts take turns (1, 2, 4, 1, 2, 4, ...) so that a
    change in the machine's other load falls on all of them alike.

    Each turn runs on a store and client of its own, started for it and shut down after it, so
    that only the measured count's actors are alive while it is measured. An idle store's
    actors are not free: each coordinator, progress actor and worker process uses about 6 ms
    of CPU a second on Ray's own timers, doing nothing. With every count's store alive, the
    2-worker runs shared the two cores with the 9 idle processes of the 1- and 4-worker stores
    (about 3 % of the machine), while the 1-worker run, which leaves a core spare, paid
    nothing for them: the speed-ups were measured low. ``load(client)`` creates its data on
    the new store (and warms its actors) before it times anything."""
    rates: dict[int, float] = {workers: 0.0 for workers in workers_list}
    for turn in range(suite.sizes.scaling_repeats):
        for workers in workers_list:
            name = f"{key}-{workers}-{turn}"
            client = suite.client(name, workers=workers, **options)
            try:
                rates[workers] = max(rates[workers], load(client))
            finally:
                suite.close_client(name)
                shutil.rmtree(suite.path(name), ignore_errors=True)
    suite.scaling[key] = rates
    return rates


def scaling_latency(suite: Suite):
    n, size = suite.sizes.latency_items, suite.sizes.latency_chunk
    rows_in = make_rows(n)

    def load(client) -> float:
        if "Latency" not in client.data_contexts():
            assert client.create_data_context("Latency", COLLECTIONS).success
            # warm every worker: one chunk on each of the 4 shards (one small chunk would reach
            # one shard, and the other workers would open their shards inside the measured batch)
            warm_up(client, "Latency", "People", rows_in[: 4 * size], batch_size=size)
        return n / load_seconds(client, "Latency", rows_in, batch_size=size)

    rates = _scaling(suite, "latency-bound", (1, 2, 4), load, shards=4, shard_apply_delay=0.005)
    ratio = rates[4] / rates[1]
    rows = [_row(f"rows/s with {w} worker(s)", round(r)) for w, r in rates.items()]
    rows.append(_row("speed-up 4 workers / 1", round(ratio, 2), ">= 3.5x", ratio >= 3.5))
    return rows, {"items": n, "chunkRows": size, "shards": 4, "applyDelay": 0.005, "rates": rates}


def scaling_cpu(suite: Suite):
    """Scenario 7, and the CPU behind it: for the fastest 2-worker turn, the workers' CPU (W)
    and everything else's (O: the driver, the coordinator, Ray's own processes) per 100,000
    items, and the ratio they allow on a machine of two cores, ``2 W / (W + O)`` (one worker
    is paced by W, two share both cores with the rest), printed beside the measured one."""
    from .cpu_profile import cpu_times

    n = suite.sizes.cpu_items
    rows_in = make_rows(n)
    profiles: dict[float, tuple[float, float]] = {}  # a 2-worker turn's rate: (W, O) in ms per 100,000 items

    def load(client) -> float:
        if "Cpu" not in client.data_contexts():
            assert client.create_data_context("Cpu", PATTERN_COLLECTIONS).success
            # warm every worker: one chunk on each shard (a worker's first chunk compiles the
            # patterns and opens its caches)
            warm_up(client, "Cpu", "People", rows_in[: 4 * suite.sizes.cpu_chunk], batch_size=suite.sizes.cpu_chunk)
        workers = {w["pid"] for w in client.info()["workers"]}
        before = cpu_times()
        started = time.perf_counter()
        result = client.create_items("Cpu", "People", rows_in, batch_size=suite.sizes.cpu_chunk)
        rate = n / (time.perf_counter() - started)
        after = cpu_times()
        assert result.success, result.error
        if len(workers) == 2:
            used = {pid: seconds - before.get(pid, ("", 0.0))[1] for pid, (_, seconds) in after.items()}
            per = 100_000 / n * 1000
            profiles[rate] = (sum(used.get(pid, 0.0) for pid in workers) * per,
                              sum(v for pid, v in used.items() if pid not in workers) * per)
        return rate

    rates = _scaling(suite, "cpu-bound", (1, 2, 4), load, shards=4)
    ratio = rates[2] / rates[1]
    workers_ms, rest_ms = profiles[rates[2]]
    rows = [_row(f"rows/s with {w} worker(s)", round(r)) for w, r in rates.items()]
    rows.append(_row("speed-up 2 workers / 1", round(ratio, 2), ">= 1.7x", ratio >= 1.7))
    rows.append(_row("2 workers, CPU ms per 100,000 items: workers W / the rest O", f"{workers_ms:.0f} / {rest_ms:.0f}"))
    rows.append(_row("the ratio two cores allow, 2W / (W + O) (>= 1.7 needs O <= 0.18 W)",
                     round(2 * workers_ms / (workers_ms + rest_ms), 2)))
    return rows, {"items": n, "chunkRows": suite.sizes.cpu_chunk, "shards": 4, "rates": rates,
                  "cpuPer100k": {"workers": workers_ms, "rest": rest_ms},
                  "validation": "a name pattern over unique names: column checks on the workers"}


# -- 8: latency of a small batch ------------------------------------------------------------------

def small_batch(suite: Suite):
    """10-item atomic batches on a running client, the items given as a list, as a generator,
    and as a generator with the client's read-ahead off (the streaming path, as before a small
    generator was sent whole: what the read-ahead buys). The three kinds take turns, a few runs
    at a time, so that each sees the same machine."""
    import batchray.api.client as client_module

    client = suite.client("main", workers=2, shards=2)
    runs = suite.sizes.latency_runs
    rounds = 4
    per_round = max(1, runs // rounds)
    rows_in = make_rows(3 * rounds * (per_round + 5) * 10)
    if "Small" not in client.data_contexts():
        assert client.create_data_context("Small", COLLECTIONS).success
    kinds = {"list": (False, None), "generator": (True, None), "streamed generator": (True, 0)}
    latencies: dict[str, list[float]] = {kind: [] for kind in kinds}
    read_ahead = client_module.STREAM_READ_AHEAD
    offset = 0
    try:
        for _ in range(rounds):
            for kind, (generator, ahead) in kinds.items():
                client_module.STREAM_READ_AHEAD = read_ahead if ahead is None else ahead
                latencies[kind] += small_batch_latencies(client, "Small", rows_in[offset:], per_round,
                                                         generator=generator)
                offset += (per_round + 5) * 10
    finally:
        client_module.STREAM_READ_AHEAD = read_ahead
    out = []
    stats: dict[str, Any] = {"runs": per_round * rounds}
    for kind, target in (("list", 5), ("generator", 10), ("streamed generator", None)):
        values = latencies[kind]
        median, p99 = statistics.median(values), percentile(values, 0.99)
        if target is None:
            out.append(_row(f"10-item atomic batch from a {kind} (read-ahead off), median / p99 ms",
                            f"{median:.2f} / {p99:.2f}"))
        else:
            out += [
                _row(f"10-item atomic batch from a {kind}, median ms ({len(values)} runs)", round(median, 2),
                     f"<= {target}", median <= target),
                _row(f"10-item atomic batch from a {kind}, p99 ms", round(p99, 2), "<= 25", p99 <= 25),
            ]
        stats[kind] = {"medianMs": round(median, 2), "p99Ms": round(p99, 2),
                       "minMs": round(min(values), 2), "maxMs": round(max(values), 2)}
    return out, stats


# -- 9: bounded memory on a file import -----------------------------------------------------------

def _write_csv(path: str, min_bytes: int) -> int:
    """A CSV of the bench's five columns, at least ``min_bytes`` long; returns its rows."""
    import csv

    count = 0
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "age", "city", "score", "active"])
        cities = ["Lisbon", "Nairobi", "Osaka", "Quito", "Tromso", "Austin", "Pune", "Lyon"]
        while f.tell() < min_bytes:
            block = [(f"person-{i}", i % 97, cities[i % 8], (i % 1000) / 10.0, "true" if i % 3 else "false")
                     for i in range(count, count + 50_000)]
            writer.writerows(block)
            count += len(block)
    return count


class _ObjectStorePeak:
    """The most of Ray's object store in use (cluster-wide, Ray's own accounting), sampled
    every 50 ms; its readings trail the store by up to a second."""

    def __init__(self) -> None:
        import threading

        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def used() -> float:
        import ray

        total = ray.cluster_resources().get("object_store_memory", 0.0)
        return total - ray.available_resources().get("object_store_memory", total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.used())
            self._stop.wait(0.05)

    def __enter__(self) -> "_ObjectStorePeak":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def import_memory(suite: Suite):
    """Peak memory of the driver, the coordinator and the workers while a CSV of ten times the
    memory budget is imported, against a baseline of the same processes just before it. The
    processes first import a file of one budget's size (so the baseline holds what any import
    leaves in place: modules loaded on first use, allocator pools, SQLite page caches); the
    baseline of the fresh processes is reported too.

    The target's figure is what the import itself holds: the processes' private memory
    (anonymous pages) plus Ray's object store in use, where the chunks in flight are. RSS is
    printed too, but it counts a page of the object store once for every process that has
    touched it (the driver writing a chunk, the worker reading it) and keeps counting it after
    the chunk is gone, until the store reuses that space; PSS splits shared pages among the
    processes mapping them, Ray's object store process among them (not summed here)."""
    from batchray.api.demo import PeakMemory

    budget = suite.sizes.import_budget
    suite.drop_rows()  # the driver holds no bench rows while its memory is watched
    warm_path, path = suite.path("warm.csv"), suite.path("import.csv")
    _write_csv(warm_path, budget)
    rows = _write_csv(path, 10 * budget)
    size = os.path.getsize(path)
    client = suite.client("memory", workers=2, shards=2, memory_budget=budget)
    info = client.info()
    pids = [os.getpid(), info["pid"], *[w["pid"] for w in info["workers"]]]
    measures = PeakMemory.MEASURES

    def resting() -> dict[str, float]:
        gc.collect()
        time.sleep(1.0)  # the object store's reading trails it
        return {**{m: PeakMemory(pids, m).sample() for m in measures}, "store": _ObjectStorePeak.used()}

    cold = resting()
    assert client.import_file("Warm", "People", warm_path).success
    baseline = resting()
    started = time.perf_counter()
    with PeakMemory(pids, "rss") as rss, PeakMemory(pids, "pss") as pss, \
            PeakMemory(pids, "private") as private, _ObjectStorePeak() as store:
        result = client.import_file("Imported", "People", path)
    seconds = time.perf_counter() - started
    assert result.success, getattr(result, "error", result)
    assert client.count_items("Imported") == rows
    for name in (warm_path, path):
        os.remove(name)
    suite.close_client("memory")
    mib = 1 << 20
    peaks = {"rss": rss.peak, "pss": pss.peak, "private": private.peak, "store": store.peak}
    grown = {m: peaks[m] - baseline[m] for m in peaks}
    held = grown["private"] + max(0.0, grown["store"])
    rows_out = [
        _row("memory budget, MiB", round(budget / mib, 1)),
        _row("CSV file, MiB (x budget)", f"{size / mib:,.1f} ({size / budget:.1f}x)"),
        _row("fresh processes (driver, coordinator, 2 workers), RSS MiB", round(cold["rss"] / mib, 1)),
        _row("baseline after a 1x-budget import, RSS MiB", round(baseline["rss"] / mib, 1)),
        _row("peak - baseline, private memory MiB", round(grown["private"] / mib, 1)),
        _row("peak - baseline, object store in use MiB", round(grown["store"] / mib, 1)),
        _row("private + object store MiB", round(held / mib, 1), f"<= budget ({budget / mib:.0f})", held <= budget),
        _row("peak - baseline, RSS MiB (shared pages once per process)", round(grown["rss"] / mib, 1)),
        _row("peak - baseline, PSS MiB (shared pages split)", round(grown["pss"] / mib, 1)),
        _row("peak - fresh processes, RSS MiB", round((rss.peak - cold["rss"]) / mib, 1)),
        _row("import rows/s", round(rows / seconds)),
    ]
    return rows_out, {"budgetBytes": budget, "fileBytes": size, "rows": rows, "coldBytes": cold,
                      "baselineBytes": baseline, "peakBytes": peaks, "processes": len(pids),
                      "seconds": round(seconds, 3)}


SCENARIOS: dict[str, tuple[str, Callable[[Suite], Any]]] = {
    "create_vs_sqlite": ("1. atomic bulk create vs raw SQLite", create_vs_sqlite),
    "create_vs_duckdb": ("1b. bulk create vs DuckDB", create_vs_duckdb),
    "create_vs_raydata": ("2. bulk create vs Ray Data write_sql", create_vs_raydata),
    "create_vs_iceberg": ("2b. bulk create vs Ray Data write_iceberg", create_vs_iceberg),
    "create_vs_per_call": ("3. bulk create vs one actor call per item", create_vs_per_call),
    "update_vs_sql": ("4. bulk expression update vs one SQL UPDATE", update_vs_sql),
    "rollback": ("5. rollback of an aborted batch vs its apply", rollback),
    "scaling_latency": ("6. parallel scaling, latency-bound chunks", scaling_latency),
    "scaling_cpu": ("7. parallel scaling, CPU-bound validation", scaling_cpu),
    "small_batch": ("8. 10-item atomic batch latency", small_batch),
    "import_memory": ("9. CSV import of 10x the memory budget", import_memory),
    "contention": ("10. transfer batches from 1, 2, 4 drivers over 10 and 1,000 accounts",
                   lambda suite: contention(suite, _row)),
    "raydata": ("11. Ray Data write_dataset / read_dataset vs write_iceberg, write_sql, read_sql", raydata),
    "import_throughput": ("12. import of a Parquet and a CSV file vs DuckDB read_parquet / read_csv",
                          lambda suite: import_throughput(suite, _row)),
}


def plot_scaling(scaling: dict[str, dict[int, float]], path: str) -> Optional[str]:
    """Throughput against workers, one panel per scaling scenario, with ideal linear scaling."""
    if not scaling:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(scaling), figsize=(5.5 * len(scaling), 4), squeeze=False)
    for ax, (name, rates) in zip(axes[0], scaling.items()):
        workers = sorted(rates)
        values = [rates[w] for w in workers]
        ax.plot(workers, values, "o-", label="measured")
        ax.plot(workers, [values[0] * w / workers[0] for w in workers], "--", color="grey", label="linear")
        ax.set_title(f"{name} ({os.cpu_count()} cores)")
        ax.set_xlabel("workers")
        ax.set_ylabel("items/s")
        ax.set_xticks(workers)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
