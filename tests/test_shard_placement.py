"""A streamed create places each chunk on the shard with the fewest rows waiting
(:class:`~batchray.core.plan.placement.ShardLoad`), so that a slower shard gets fewer rows
instead of pacing the batch; every row keeps one id on the shard its id names, ids in input
order, and its own request index.

The core's chunker is driven here by hand (what each shard has done is reported as the Ray
runtime reports it: running totals); ``test_a_blocked_shard_gets_fewer_rows`` runs a real load
on Ray with one shard's SQLite file write-locked by another connection for its first two
seconds."""
from __future__ import annotations

import random
import sqlite3
import threading
import time

import pytest

from batchray.core.model.columnar import ColumnLists
from batchray.core.plan.chunking import CreateChunker
from batchray.core.plan.placement import ShardLoad
from id_source import fresh_ids

SEED = 20261205


def test_the_shard_with_fewest_rows_waiting_is_picked_and_equals_take_turns() -> None:
    load = ShardLoad(["a", "b", "c"])
    assert [load.pick(turn) for turn in range(4)] == [0, 1, 2, 0]
    load.sent(0, 100)
    load.sent(1, 100)
    assert load.pick(0) == 2
    load.sent(2, 300)
    load.observe({"b": 80})
    assert load.pick(0) == 1 and load.waiting() == {"a": 100, "b": 20, "c": 300}
    load.observe({"a": 100, "b": 50, "zzz": 7})  # totals: an older, smaller one of b changes nothing
    assert load.waiting() == {"a": 0, "b": 20, "c": 300}
    assert load.pick(1) == 0
    load.sent(0, 100)
    load.observe({"a": 200, "b": 100})  # a and b both done: the one sent fewer rows goes first
    assert load.pick(0) == 1 and load.pick(1) == 1


def _check_placement(planned, shards: int, total: int, start_index: int = 0) -> list[int]:
    """Every row once, on the shard its id names, ids ascending in input order, request
    indexes its place in the input; returns the ids in input order."""
    ids: list[int] = []
    index = start_index
    for p in planned:
        chunk = p.chunk
        values = chunk.rows.columns()[0] if hasattr(chunk.rows, "columns") else [r["n"] for r in chunk.rows]
        for position, (item_id, value) in enumerate(zip(chunk.ids, values)):
            assert p.participant == f"s{item_id % shards}"
            assert chunk.index_of(position) == index == start_index + value
            index += 1
            ids.append(item_id)
    assert index == start_index + total
    assert ids == sorted(ids) and len(set(ids)) == total
    return ids


@pytest.mark.parametrize("columnar", [False, True])
def test_a_shard_that_applies_nothing_gets_no_more_rows_than_it_holds(columnar: bool) -> None:
    """Shards s0 and s2 apply each chunk at once, s1 nothing: after s1's first chunk every
    chunk goes to s0 or s2, in turn, and each row keeps its id, shard and index."""
    shards, total, per_chunk = 3, 20_000, 1_000
    chunker = CreateChunker([f"s{i}" for i in range(shards)], fresh_ids(), schema=None, max_rows=per_chunk,
                            max_bytes=1 << 40)
    load = chunker.place_by_load()
    if columnar:
        chunks = chunker.columnar_chunks([ColumnLists(["n"], [list(range(total))])], start_index=5)
    else:
        chunks = chunker.chunks(iter([{"n": i} for i in range(total)]), start_index=5)
    planned, done = [], {"s0": 0, "s2": 0}
    for p in chunks:
        planned.append(p)
        if p.participant != "s1":
            done[p.participant] += p.count
            load.observe(done)
    by_shard = {name: sum(p.count for p in planned if p.participant == name) for name in load.shards}
    assert by_shard["s1"] == per_chunk, by_shard
    assert abs(by_shard["s0"] - by_shard["s2"]) <= per_chunk
    ids = _check_placement(planned, shards, total, start_index=5)
    assert chunker.item_ids() == ids


def test_with_no_report_the_rows_are_dealt_in_equal_shares_in_turn() -> None:
    chunker = CreateChunker(["s0", "s1"], fresh_ids(), schema=None, max_rows=500, max_bytes=1 << 40)
    load = chunker.place_by_load()
    assert load is chunker.place_by_load() and load.shards == ["s0", "s1"]
    assert CreateChunker(["s0"], fresh_ids(), schema=None).place_by_load() is None  # one shard: nothing to choose
    planned = list(chunker.chunks([{"n": i} for i in range(5_000)]))
    assert [p.participant for p in planned] == ["s0", "s1"] * 5
    assert _check_placement(planned, 2, 5_000) == chunker.item_ids()


@pytest.mark.parametrize("seed", [SEED + k for k in range(5)])
def test_shards_of_different_speeds_get_rows_in_order_of_speed(seed: int) -> None:
    """Shards applying at different speeds (seeded), together a little slower than the rows
    come: the rows are all there once, on the shard their ids name, in input order, and the
    faster a shard the more rows it took."""
    rng = random.Random(seed)
    speeds = rng.sample([0.25, 0.5, 1.0, 2.0], 4)
    per_chunk = rng.randint(300, 900)
    total = rng.randint(60_000, 90_000)
    chunker = CreateChunker([f"s{i}" for i in range(len(speeds))], fresh_ids(), schema=None, max_rows=per_chunk,
                            max_bytes=1 << 40)
    load = chunker.place_by_load()
    planned, done = [], dict.fromkeys(load.shards, 0)
    for p in chunker.chunks(iter([{"n": i} for i in range(total)])):
        planned.append(p)
        waiting = load.waiting()
        for speed, name in zip(speeds, load.shards):  # per chunk cut, each applies speed * per_chunk / 4 rows
            done[name] += min(waiting[name], int(speed * per_chunk / 4))
        load.observe(done)
    try:
        assert _check_placement(planned, len(speeds), total) == chunker.item_ids()
        rows = [sum(p.count for p in planned if p.participant == name) for name in load.shards]
        by_speed = [r for _, r in sorted(zip(speeds, rows))]
        assert by_speed == sorted(by_speed) and by_speed[-1] > 3 * by_speed[0], (speeds, rows)
    except AssertionError:
        print(f"seed {seed}: speeds {speeds}, rows per chunk {per_chunk}, rows {total}")
        raise


def _locked_for(path, seconds: float) -> threading.Thread:
    """Hold ``path``'s SQLite write lock for ``seconds`` from another connection (the
    shard's writers wait on it, as behind any other writer); returns once it is held."""
    held = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=30)
        try:
            conn.execute("BEGIN IMMEDIATE")
            held.set()
            time.sleep(seconds)
            conn.execute("ROLLBACK")
        finally:
            conn.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert held.wait(10)
    return thread


def _load_with_a_blocked_shard(client) -> dict[str, int]:
    """A streamed create of 30,000 rows with shard 1 write-locked for its first two seconds;
    checks every row read back in input order, returns the rows per shard."""
    from bench.common import COLLECTIONS, make_rows

    assert client.create_data_context("Bench", COLLECTIONS).success
    rows = make_rows(30_000)
    names = client.layout.shard_names
    holder = _locked_for(client.layout.participant_path(names[1]), 2.0)
    result = client.create_items("Bench", "People", iter(rows), total=len(rows), batch_size=2_000)
    holder.join(30)
    assert result.success, result.error
    ids = result.item_ids
    assert len(ids) == len(rows) and ids == sorted(ids)
    stored = client.get_items("Bench")  # in id order
    assert [item["id"] for item in stored] == ids
    assert [item["values"] for item in stored] == rows
    by_shard = {name: 0 for name in names}
    for item_id in ids:
        by_shard[client.layout.shard_of(item_id)] += 1
    return by_shard


@pytest.mark.ray
def test_a_blocked_shard_gets_fewer_rows(make_client) -> None:
    """A budget of about eight chunks: while shard 1 waits for the lock, the chunks it holds
    keep their bytes, and every chunk cut meanwhile goes to shard 0."""
    by_shard = _load_with_a_blocked_shard(make_client(workers=2, shards=2, memory_budget=2 << 20))
    first, second = by_shard.values()
    assert second < first / 2, by_shard  # dealt in equal shares, each would hold 15,000
