"""The Ray runtime end to end: real coordinator, worker and progress actors over real SQLite files.

What these tests show:

* chunks are applied in separate worker processes, and more workers finish a latency-bound
  load faster (the only timing assertion here, a ratio measured in the same test);
* the coordinator is handed object refs, never item payloads, but for small batches', which
  come inline in the calls (and store exactly what they store through the object store);
* progress reaches callbacks monotonically, ends at the total, and status reports throughput
  and an ETA while a batch runs; the figures agree with what was written;
* a non-atomic batch commits its good items and reports the bad ones by index, and an atomic
  batch with one bad item leaves the store exactly as it was.

Stores are shared per module (each costs a few seconds of actor start-up); every test works in
its own data context.
"""
from __future__ import annotations

import os
import time

import pytest

pytestmark = pytest.mark.ray

DELAY = 0.05  # seconds per applied chunk on the "slow" stores: a latency-bound store
COLLECTIONS = [
    {
        "name": "Rows",
        "attrs": [
            {"name": "n", "type": "numeric", "min": 0},
            {"name": "label", "type": "categorical"},
        ],
    }
]


def rows(count: int, start: int = 0) -> list[dict]:
    return [{"n": i, "label": f"row-{i}"} for i in range(start, start + count)]


@pytest.fixture(scope="module")
def slow4(open_store):
    """4 workers over 4 shards, each applied chunk taking DELAY seconds."""
    return open_store("slow4", workers=4, shards=4, shard_apply_delay=DELAY)


@pytest.fixture(scope="module")
def plain(open_store):
    return open_store("plain", workers=2)


def _context(client, name: str) -> str:
    assert client.create_data_context(name, COLLECTIONS).success
    return name


def _assert_no_2pc_state_left(client) -> None:
    """No transaction, undo entry or lock left on any shard. A batch's result comes back at its
    commit point and phase 2 finishes just after, so give it a moment."""
    import ray

    deadline = time.monotonic() + 15
    while True:
        left = {name: counts for name, counts in ray.get(client.runtime.coordinator.leftovers.remote()).items()
                if counts["txns"] or counts["undo"] or counts["locks"]}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, left


# -- parallelism ----------------------------------------------------------------------------

def test_workers_are_separate_processes(slow4):
    info = slow4.info()
    pids = [w["pid"] for w in info["workers"]]
    assert len(pids) == 4
    assert len(set(pids)) == 4, f"workers share processes: {pids}"
    assert os.getpid() not in pids and info["pid"] not in pids  # neither the driver nor the coordinator
    assert info["shards"] == 4


def test_more_workers_finish_a_latency_bound_load_faster(open_store, slow4):
    """40 chunks of 5 items over 4 shards, each chunk taking 50 ms at its shard: one worker
    takes them one after another; four workers take them four at a time, so they finish in
    less than the 2 s of the delays summed."""
    slow1 = open_store("slow1", workers=1, shards=4, shard_apply_delay=DELAY)
    assert len({w["pid"] for w in slow1.info()["workers"]}) == 1
    chunks, per_chunk = 40, 5
    seconds = {}
    for workers, client in ((1, slow1), (4, slow4)):
        context = _context(client, "Parallel")  # also brings every worker up before timing
        started = time.perf_counter()
        result = client.create_items(context, "Rows", rows(chunks * per_chunk), batch_size=per_chunk)
        seconds[workers] = time.perf_counter() - started
        assert result.success, result.error
        assert result.batches_processed == chunks
        assert client.count_items(context) == chunks * per_chunk
    # the delay really applied: one worker cannot do better than one chunk after another
    assert seconds[1] >= chunks * DELAY
    # four workers did: they finished in less than the sum of the delays, which only applies
    # that overlapped can do (a loaded machine slows them, it cannot make them overlap; ideally
    # they take a quarter of it)
    assert seconds[4] < chunks * DELAY, (
        f"4 workers took {seconds[4]:.2f} s, no less than the {chunks * DELAY:.2f} s of delays one after another "
        f"(1 worker: {seconds[1]:.2f} s)")


# -- data path ------------------------------------------------------------------------------

def test_coordinator_receives_object_refs_but_for_small_batches_sent_inline(plain, monkeypatch):
    """Chunks reach the coordinator as object refs (of a chunk, or of a bundle of small chunks
    put as one object), except a small batch's, which come inline in the calls: a batch planned
    whole whose chunks add up to at most ``INLINE_BYTES`` (estimated). A batch above it still
    goes through the object store: the threshold is honoured. (The driver's direct lane, which
    would take the one-chunk batches past the coordinator, is off here: tests/test_direct_lane.py.)"""
    from actors.runtime import INLINE_BYTES

    monkeypatch.setattr(plain.runtime, "lane", None)

    def fed(call):
        before = plain.info()["chunkTypes"]
        result = call()
        assert result.success, result.error
        after = plain.info()["chunkTypes"]
        return result, {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}

    context = "Refs"
    results = []
    result, types = fed(lambda: plain.create_data_context(context, COLLECTIONS))
    assert types == {"InlineChunk": 1}  # the catalog chunk: a small batch
    results.append(result)
    # 300 items with long labels: planned whole (at most SMALL_BATCH items), yet above INLINE_BYTES
    big = [{"n": i, "label": f"row-{i}-" + "x" * 400} for i in range(300)]
    result, types = fed(lambda: plain.create_items(context, "Rows", big, batch_size=50))
    assert types == {"ObjectRef": 6}, types  # 300 items in chunks of 50, through the object store
    assert result.items_created == 300
    results.append(result)
    ids = result.item_ids
    result, types = fed(lambda: plain.create_items(context, "Rows", rows(10, start=300)))
    assert types == {"InlineChunk": 1}, types  # a 10-item batch: one chunk, inline
    results.append(result)
    result, types = fed(lambda: plain.update_items(
        context, [{"selector": {"itemId": i}, "values": {"label": "changed"}} for i in ids[:120]]))
    results.append(result)
    assert set(types) == {"InlineChunk"} and sum(types.values()) == result.batches_processed, types
    result, types = fed(lambda: plain.update_items(context, [{"selector": {"query": "n >= 250"},
                                                              "values": {"n": "=n + 1"}}]))
    results.append(result)
    assert set(plain.info()["chunkTypes"]) <= {"ObjectRef", "InlineChunk"}
    assert sum(types.values()) == result.batches_processed
    assert sum(r.batches_processed for r in results) >= 1 + 6 + 1 + 2  # updates on both shards
    assert plain.count_items(context, query="label == changed") == 120
    assert INLINE_BYTES < 300 * 400  # what made the big batch big


def _small_batches(client, context: str) -> list:
    """The same small batches in ``context``: what each returned, the last progress event each
    reported, its status, and the stored values after it (in id order)."""
    assert client.create_data_context(context, COLLECTIONS).success
    out = []
    created: list[int] = []  # the ids of the items created here, in order: errors name them by place

    def run(name, call):
        seen: list[dict] = []
        result = call(seen.append)
        status = client.status(result.transaction_id)
        dumped = result.model_dump()
        ids = dumped.pop("item_ids")
        created.extend(ids)
        for volatile in ("transaction_id", "duration"):
            dumped.pop(volatile)
        if dumped["error"]:  # its message names the batch
            dumped["error"] = dumped["error"]["code"]
        last = {k: seen[-1].get(k) for k in ("total", "completed", "failed")} if seen else None
        recorded = {k: v for k, v in (status.get("result") or {}).items() if k not in ("transactionId", "duration",
                                                                                       "itemIds", "throughput")}
        if recorded.get("error"):
            recorded["error"] = recorded["error"]["code"]
        for error in dumped["errors"] + recorded.get("errors", []):  # ids differ between contexts
            for key in ("item_id", "itemId"):
                if error.get(key) is not None:
                    error[key] = created.index(error[key])
        stored = [item["values"] for item in sorted(client.get_items(context), key=lambda item: item["id"])]
        out.append((name, dumped, len(ids), last, status["state"], status["kind"], recorded, stored))
        return result, ids

    _, ids = run("list", lambda cb: client.create_items(context, "Rows", rows(10), callback=cb))
    run("generator", lambda cb: client.create_items(context, "Rows", (r for r in rows(5, start=10)), callback=cb))
    bad = rows(6, start=20)
    bad[3]["n"] = -1
    run("bad atomic", lambda cb: client.create_items(context, "Rows", bad, callback=cb))
    run("bad kept", lambda cb: client.create_items(context, "Rows", bad, atomic=False, continue_on_error=True,
                                                   callback=cb))
    run("update", lambda cb: client.update_items(context, [{"selector": {"itemId": i}, "values": {"n": "=n + 1"}}
                                                           for i in ids[:4]], callback=cb))
    run("bad update", lambda cb: client.update_items(context, [{"selector": {"itemId": ids[0]},
                                                                "values": {"n": "=n - 50"}}], callback=cb))
    run("delete", lambda cb: client.delete_items(context, [{"itemId": i} for i in ids[4:6]], callback=cb))
    return out


def test_a_small_batch_sent_inline_stores_what_the_object_store_path_stores(plain, monkeypatch):
    """The same small batches (a list, a generator, one rolled back, one keeping its good
    items, updates, a failed update, a delete), inline and then through the object store
    (``INLINE_BYTES`` below any batch): the same results, errors, progress, batch records and
    stored items. An inline batch's options and chunks go to the coordinator pickled by plain
    pickle (``plain_pickled``), which refuses what only Ray's serializer may carry. (The
    driver's direct lane is off here: tests/test_direct_lane.py compares it with this path.)"""
    import ray

    import actors.runtime
    from actors.transport import plain_pickled

    monkeypatch.setattr(plain.runtime, "lane", None)
    sent: list = []
    monkeypatch.setattr(actors.runtime, "plain_pickled", lambda value: sent.append(plain_pickled(value)) or sent[-1])
    before = plain.info()["chunkTypes"]
    inline = _small_batches(plain, "Inline")
    middle = plain.info()["chunkTypes"]
    # the context's creation and the seven batches, each pickled, and so their applies
    assert len(sent) == 1 + 7 and all(isinstance(message, bytes) for message in sent)
    pickled = sum(worker["pickledCalls"] for worker in plain.info()["workers"])
    assert pickled >= 1 + 7
    monkeypatch.setattr(actors.runtime, "INLINE_BYTES", -1)
    stored = _small_batches(plain, "Stored")
    after = plain.info()["chunkTypes"]
    assert len(sent) == 1 + 7  # through the object store: chunks as refs, which Ray's serializer carries
    assert sum(worker["pickledCalls"] for worker in plain.info()["workers"]) == pickled
    assert plain_pickled([ray.put(1)]) is None and plain_pickled({"a": (1, "b")}) is not None
    assert middle.get("ObjectRef", 0) == before.get("ObjectRef", 0) < after["ObjectRef"]
    assert before.get("InlineChunk", 0) < middle["InlineChunk"] == after["InlineChunk"]
    for one, other in zip(inline, stored):
        assert one == other, one[0]
    outcomes = {entry[0]: entry for entry in inline}
    assert outcomes["bad atomic"][4] == "rolled_back" and outcomes["bad atomic"][1]["errors"][0]["index"] == 3
    assert outcomes["bad kept"][1]["items_created"] == 5 and outcomes["bad update"][4] != "completed"
    assert outcomes["list"][3] == {"total": 10, "completed": 10, "failed": 0}
    assert len(outcomes["delete"][7]) == 10 + 5 + 5 - 2


def test_small_chunks_go_to_the_object_store_together(plain):
    """``put_chunks``: chunks up to BUNDLE_CHUNK_BYTES share one object (up to BUNDLE_BYTES),
    each becoming a part of it; a bigger chunk gets an object of its own; a lone small chunk
    is put as itself. Each part resolves to its own chunk, and a batch cut into such chunks
    commits every item on every shard."""
    import ray

    from actors.transport import ChunkPart
    from actors.runtime import BUNDLE_BYTES, BUNDLE_CHUNK_BYTES, put_chunks
    from batchray.core.txn.chunks import PlannedChunk

    small = [PlannedChunk(f"shard-000{i % 2}", {"n": i}, 1_000, 1) for i in range(3)]
    big = PlannedChunk("shard-0000", {"n": "big"}, BUNDLE_CHUNK_BYTES + 1, 1)
    # with the small ones, all but the last of these fill the bundle; the last goes alone
    many = [PlannedChunk("shard-0001", {"n": 10 + i}, BUNDLE_CHUNK_BYTES, 1)
            for i in range(BUNDLE_BYTES // BUNDLE_CHUNK_BYTES)]
    planned = [small[0], big, small[1], small[2], *many]
    put_chunks(planned)
    assert [type(pc.chunk).__name__ for pc in planned[:4]] == ["ChunkPart", "ObjectRef", "ChunkPart", "ChunkPart"]
    parts = [pc.chunk for pc in (small + many)]
    assert all(isinstance(p, ChunkPart) for p in parts[:-1])
    assert len({p.bundle for p in parts[:3]}) == 1  # the three small ones: one object
    assert isinstance(parts[-1], ray.ObjectRef)  # the bundle was full: the last one alone
    assert ray.get(big.chunk) == {"n": "big"}
    for pc, expected in zip(small + many[:-1], [0, 1, 2, *range(10, 10 + len(many) - 1)]):
        assert ray.get(pc.chunk.bundle)[pc.chunk.index] == {"n": expected}

    context = _context(plain, "Bundled")
    result = plain.create_items(context, "Rows", rows(120), batch_size=5)  # 24 chunks of 5 rows
    assert result.success and result.items_created == 120, result.error
    assert sorted(item["values"]["n"] for item in plain.get_items(context)) == list(range(120))


def test_a_worker_returns_before_images_as_an_object_only_when_there_are_some(ray_session, tmp_path):
    """A create chunk's before-images are its created id ranges, all in the summary: the
    coordinator holds no second object for it. An update's before-images travel as an object
    of their own (one per call to the worker), held (never read) by the coordinator until the
    batch ends; read back, they are the items as they were (300 of them: packed on the way,
    ``batchray.core.txn.image_packing``)."""
    import ray

    from actors.transport import RayTransport
    from actors.worker import WorkerActor
    from batchray.core.txn.chunks import CreateItems, TxnRef, UpdateItems, context_range
    from batchray.core.storage.store import StoreLayout

    StoreLayout(tmp_path / "store", 1)
    worker = WorkerActor.remote(str(tmp_path / "store"), ["shard-0000"])
    transport = RayTransport(lambda name: worker)
    lo, _ = context_range(1)
    ref = TxnRef("create-1-images", 10)
    ids = [lo + 1 + i for i in range(300)]
    texts = [f'{{"n":{i},"s":"é{i}"}}' for i in range(300)]
    created = transport.result(transport.submit(
        "shard-0000", "apply", ref, ray.put(CreateItems(1, ids, texts))))
    assert created.created and created.affected == 300 and not created.partial
    assert transport.held == {}
    assert ray.get(worker.prepare.remote("shard-0000", ref))
    ray.get(worker.commit.remote("shard-0000", ref))

    ref = TxnRef("update-2-images", 11)
    try:
        updated = transport.result(transport.submit(
            "shard-0000", "apply", ref, ray.put(UpdateItems(2, 1, ids=ids, patch={"n": 5}))))
        assert updated.partial and updated.affected == 300 and updated.items == []
        [held] = transport.held[ref.txn]  # the images of the applies sent in one call
        assert [sorted(images.items) for images in ray.get(held)] == [list(zip(ids, texts))]
        assert transport.release(ref.txn) == 1 and transport.held == {}
        ray.get(worker.abort.remote("shard-0000", ref))
    finally:
        transport.close()
        ray.kill(worker)


def test_a_batch_planned_whole_goes_as_few_objects_of_packed_chunks(plain, monkeypatch):
    """``pack_whole``: a batch sent in its submit call (planned whole, not inline) puts its
    chunks as objects of packed chunks of up to PACKED_BYTES each (one put per object, where
    bundles of BUNDLE_BYTES took one per 14 small chunks); a batch of many small chunks
    loads whole through it. An object holds at most PACK_CHUNKS chunks (a worker deserializes
    the object's whole index of parts in each call that applies one of them: 10,000 one-item
    chunks in one object made the load quadratic in its chunks)."""
    import ray

    import actors.runtime as runtime
    from actors.transport import ChunkPart, PackedChunks
    from batchray.core.txn.chunks import PlannedChunk

    planned = [PlannedChunk(f"shard-000{i % 2}", {"n": i}, 1_000, 1) for i in range(600)]
    runtime.pack_whole(planned)
    assert all(isinstance(pc.chunk, ChunkPart) for pc in planned)
    bundles = [pc.chunk.bundle for pc in planned]
    assert len(set(bundles)) == 3 and bundles[255] != bundles[256] and bundles[511] != bundles[512]
    assert [len(ray.get(b)) for b in dict.fromkeys(bundles)] == [runtime.PACK_CHUNKS, runtime.PACK_CHUNKS, 88]
    packed = ray.get(planned[0].chunk.bundle)
    assert isinstance(packed, PackedChunks)
    assert [ray.get(pc.chunk.bundle)[pc.chunk.index] for pc in planned] == [{"n": i} for i in range(600)]

    monkeypatch.setattr(runtime, "PACKED_BYTES", 100_000)  # 100 chunks of 1,000 bytes an object
    planned = [PlannedChunk("shard-0000", {"n": i}, 1_000, 1) for i in range(250)]
    runtime.pack_whole(planned)
    bundles = [pc.chunk.bundle for pc in planned]
    assert len(set(bundles)) == 3 and bundles[99] != bundles[100] and bundles[199] != bundles[200]
    assert [ray.get(pc.chunk.bundle)[pc.chunk.index] for pc in planned] == [{"n": i} for i in range(250)]

    monkeypatch.undo()
    puts = []
    put = runtime.ray.put
    context = _context(plain, "Whole")
    monkeypatch.setattr(runtime.ray, "put", lambda value, **kw: puts.append((type(value).__name__, len(value))) or put(value, **kw))
    result = plain.create_items(context, "Rows", rows(2_000), batch_size=5)  # planned whole: 400 chunks
    assert result.success and result.items_created == 2_000, result.error
    assert puts == [("PackedChunks", 256), ("PackedChunks", 144)], puts  # at most PACK_CHUNKS an object
    assert sorted(item["values"]["n"] for item in plain.get_items(context)) == list(range(2_000))


def test_each_shards_last_chunk_carries_its_vote_though_its_others_are_in_flight(plain):
    """A batch planned whole of many chunks a shard: each shard's last chunk goes as
    apply+prepare with its shard's count of chunks (``TxnRef.prepare_after``), and since a
    shard's applies come in the order they were sent it finds them all applied and votes, so
    no shard is asked to prepare on its own (every shard was, while a last chunk sent with
    others in flight carried no vote: a round trip and an fsync per shard after the applies).
    A shard whose last chunk came early would be asked: at most one here, for a stalled machine."""
    context = _context(plain, "Voted")

    def asked() -> int:
        return sum(worker["preparesAsked"] for worker in plain.info()["workers"])

    before = asked()
    result = plain.create_items(context, "Rows", rows(2_000), batch_size=20)  # 100 chunks, 50 a shard
    assert result.success and result.items_created == 2_000, result.error
    assert asked() - before <= 1
    assert sorted(item["values"]["n"] for item in plain.get_items(context)) == list(range(2_000))
    _assert_no_2pc_state_left(plain)


def test_a_feed_calls_chunks_go_as_one_object_each_unpickled_alone(plain):
    """``pack_chunks``: a feed call's chunks become parts of one object, each pickled on its own
    (its Arrow buffers out of band), so a part unpickles without the others; chunks that plain
    pickling refuses go as ``put_chunks`` puts them. A list cut into many chunks loads whole."""
    import pyarrow as pa
    import ray

    from actors.runtime import pack_chunks
    from actors.transport import ChunkPart, PackedChunks
    from batchray.core.txn.chunks import CreateItems, PlannedChunk

    table = pa.table({"n": list(range(1000))})
    planned = [PlannedChunk(f"shard-000{i % 2}", CreateItems(i, range(i, i + 2), [{"n": i}, {"n": i + 1}]), 1 << 20, 2)
               for i in range(3)] + [PlannedChunk("shard-0000", table, 1 << 20, 1000)]
    originals = [pc.chunk for pc in planned]
    pack_chunks(planned)
    assert all(isinstance(pc.chunk, ChunkPart) for pc in planned)
    assert len({pc.chunk.bundle for pc in planned}) == 1 and [pc.chunk.index for pc in planned] == [0, 1, 2, 3]
    packed = ray.get(planned[0].chunk.bundle)
    assert isinstance(packed, PackedChunks) and len(packed) == 4
    assert [packed[i] for i in range(3)] == originals[:3]
    assert packed[3].equals(table)
    payload, buffers = packed.parts[3]
    assert len(memoryview(payload)) < 1000 and buffers  # the column's 8,000 bytes went out of band

    class Local:  # plain pickle refuses a class defined in a function
        pass

    for odd in (Local(), {"ref": ray.put(1)}):  # Ray's serializer only: a ref must be counted
        refused = [PlannedChunk("shard-0000", odd, 10, 1), PlannedChunk("shard-0001", {"n": 1}, 10, 1)]
        pack_chunks(refused)
        assert not any(isinstance(pc.chunk, ChunkPart) and isinstance(ray.get(pc.chunk.bundle), PackedChunks)
                       for pc in refused)

    context = _context(plain, "Packed")
    result = plain.create_items(context, "Rows", rows(200), batch_size=10)  # 20 chunks, planned whole
    assert result.success and result.items_created == 200, result.error
    assert sorted(item["values"]["n"] for item in plain.get_items(context)) == list(range(200))


def test_a_lists_feed_calls_grow_from_one_chunk_to_a_full_group(plain, monkeypatch):
    """A list too big to be planned whole is fed to the coordinator in calls of 1, 2, 4... chunks
    up to ``FEED_GROUP``: its first applies start after one chunk is cut, and the rest go in
    few calls (each costs the coordinator and the raylet CPU of its own). A generator's chunks
    go one per call (none waits for a slow producer). Every item is stored either way."""
    import actors.runtime as runtime_module
    from batchray.core.plan.plan import SMALL_BATCH

    calls: list[int] = []
    pack = runtime_module.pack_chunks
    monkeypatch.setattr(runtime_module, "pack_chunks", lambda planned: calls.append(len(planned)) or pack(planned))
    count = SMALL_BATCH + 2_000  # 120 chunks of 100 rows
    context = _context(plain, "Grown")
    result = plain.create_items(context, "Rows", rows(count), batch_size=100)
    assert result.success and result.items_created == count, result.error
    group = runtime_module.FEED_GROUP
    expected, size = [], 1
    while sum(expected) < 120:
        expected.append(min(size, 120 - sum(expected)))
        size = min(group, 2 * size)
    assert calls == expected, calls
    assert group > 8 and max(calls) == group

    calls.clear()
    streamed = plain.create_items(context, "Rows", (row for row in rows(count, start=count)), batch_size=1_000)
    assert streamed.success and streamed.items_created == count, streamed.error
    assert set(calls) == {1} and len(calls) == 12, calls
    assert plain.count_items(context) == 2 * count


def test_an_apply_waiting_for_a_lock_holds_up_only_its_own_transaction(ray_session, tmp_path):
    """Applies go to a worker several per call, but one transaction's per call: when an older
    transaction's apply waits (wait-die) for a lock a younger one holds, the younger one's next
    apply, queued for the same worker at the same moment, is not stuck behind it."""
    import ray

    from actors.transport import RayTransport
    from actors.worker import WorkerActor
    from batchray.core.txn.chunks import CreateItems, TxnRef, UpdateItems, context_range
    from batchray.core.storage.store import StoreLayout

    StoreLayout(tmp_path / "store", 1)
    worker = WorkerActor.remote(str(tmp_path / "store"), ["shard-0000"], None, 20.0)
    transport = RayTransport(lambda name: worker, hold=0.5)  # both queued within one window
    lo, _ = context_range(1)
    seed = TxnRef("create-1-seed", 1)
    ray.get(worker.apply_many.remote([("shard-0000", seed, ray.put(CreateItems(1, [lo + 1, lo + 2], ['{"n":1}', '{"n":2}'])), True, None, False, 0)])[0])
    ray.get(worker.commit.remote("shard-0000", seed))
    older, younger = TxnRef("update-2-old", 10), TxnRef("update-3-young", 20)
    try:
        transport.result(transport.submit("shard-0000", "apply", younger, ray.put(UpdateItems(2, 1, ids=[lo + 1], patch={"n": 5}))))
        waiting = transport.submit("shard-0000", "apply", older, ray.put(UpdateItems(3, 1, ids=[lo + 1], patch={"n": 7})))
        behind = transport.submit("shard-0000", "apply", younger, ray.put(UpdateItems(4, 1, ids=[lo + 2], patch={"n": 6})))
        started = time.monotonic()
        ready, _ = transport.wait([behind], timeout=10)
        assert ready == [behind] and time.monotonic() - started < 5, "the younger apply waited behind the older one"
        assert transport.result(behind).affected == 1
        assert transport.wait([waiting], timeout=0)[0] == []  # still waiting for the lock
        assert transport.result(transport.submit("shard-0000", "prepare", younger))
        ray.get(transport.submit("shard-0000", "commit", younger))
        assert transport.result(waiting).affected == 1  # it ran once the younger one committed
        ray.get(worker.abort.remote("shard-0000", older))
    finally:
        transport.close()
        ray.kill(worker)


# -- progress -------------------------------------------------------------------------------

def test_progress_callback_is_monotonic_and_ends_at_the_total(slow4):
    context = _context(slow4, "Callback")
    total = 400  # 80 chunks of 5 at 50 ms on 4 workers: about a second
    seen: list[dict] = []
    result = slow4.create_items(context, "Rows", rows(total), batch_size=5, callback=seen.append)
    assert result.success
    assert len(seen) >= 3, seen  # some while running, and the last one
    done = [p["completed"] + p["failed"] for p in seen]
    assert done == sorted(done), done
    completed = [p["completed"] for p in seen]
    assert completed == sorted(completed), completed
    assert any(0 < c < total for c in completed), completed  # seen part-way, not only at the end
    assert all(p["completed"] <= total for p in seen)
    last = seen[-1]
    assert last["completed"] == total and last["total"] == total and last["failed"] == 0
    assert slow4.count_items(context) == total == result.items_created


def test_status_reports_throughput_and_eta_while_a_batch_runs(slow4):
    context = _context(slow4, "Status")
    total = 400
    txn = slow4.create_items(context, "Rows", rows(total), batch_size=5, wait=False)
    assert isinstance(txn, str)
    running: list[dict] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = slow4.status(txn)
        progress = status.get("progress")
        if status["state"] != "running":
            break
        if progress and progress["state"] == "running" and 0 < progress["completed"] < total:
            running.append(progress)
        time.sleep(0.02)
    result = slow4.wait(txn)
    assert result.success and result.items_created == total
    assert running, "never saw the batch part-way through"
    live = running[-1]
    assert live["total"] == total
    assert live["throughput"] > 0
    assert live["etaSeconds"] is not None and live["etaSeconds"] > 0
    assert live["currentOperation"]
    counts = [p["completed"] for p in running]
    assert counts == sorted(counts)
    # the figures agree with what was written (increments are fire-and-forget: allow them to land)
    written = slow4.count_items(context)
    assert written == total
    deadline = time.monotonic() + 10
    while True:
        final = slow4.status(txn)
        progress = final["progress"]
        if (progress["completed"], progress["state"]) == (written, "completed") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert final["state"] == "completed"
    assert progress["completed"] == written and progress["failed"] == 0 and progress["total"] == total
    assert progress["state"] == "completed"
    assert progress["etaSeconds"] is None or progress["etaSeconds"] == 0


# -- atomic and non-atomic ------------------------------------------------------------------

@pytest.mark.parametrize("batch_size", [10, None], ids=["chunks-of-10", "one-chunk-per-shard"])
def test_non_atomic_batch_commits_good_items_and_reports_bad_ones_by_index(plain, batch_size):
    """With one chunk per shard the bad items are in a shard's last chunk, whose apply carries
    the shard's vote: a rejected item must not make the shard's good items roll back."""
    context = _context(plain, f"Partial{batch_size}")
    items = rows(100)
    bad = [7, 42, 93]
    for index in bad:
        items[index]["n"] = "not a number"
    result = plain.create_items(context, "Rows", items, atomic=False, continue_on_error=True, batch_size=batch_size)
    assert not result.success  # not everything made it in ...
    assert result.state.value == "completed"  # ... but what could be committed was
    assert result.items_created == 100 - len(bad)
    assert sorted(e.index for e in result.errors) == bad
    assert {e.field for e in result.errors} == {"n"}
    stored = plain.get_items(context)
    assert len(stored) == plain.count_items(context) == 100 - len(bad)
    assert sorted(item["values"]["label"] for item in stored) == sorted(
        items[i]["label"] for i in range(100) if i not in bad)
    assert sorted(result.item_ids) == [item["id"] for item in stored]
    _assert_no_2pc_state_left(plain)


def test_a_non_atomic_batch_that_does_not_continue_on_error_stops_sending_chunks(plain):
    """One chunk in flight at a time (``parallelism=1``): the chunk with the first bad item
    (in the order the chunks were sent) is the last one sent; its good items and the chunks
    before it are committed, and the chunk of the second bad item is never applied."""
    context = _context(plain, "StopOnError")
    items = rows(100)
    items[23]["n"] = "not a number"
    items[77]["n"] = "not a number"
    result = plain.create_items(context, "Rows", items, atomic=False, batch_size=10, parallelism=1)
    assert result.state.value == "failed" and result.error["code"] == "STOPPED_ON_ERROR", result.error
    assert [e.index for e in result.errors] == [23]
    stored = {item["values"]["label"] for item in plain.get_items(context, limit=None)}
    assert stored <= {items[i]["label"] for i in range(100) if i != 23}
    assert {items[i]["label"] for i in range(20, 30) if i != 23} <= stored  # the chunk of the bad item
    assert len(stored) == result.items_created == 10 * result.batches_processed - 1 < 90
    _assert_no_2pc_state_left(plain)


def test_atomic_batch_with_one_bad_item_leaves_the_store_unchanged(plain):
    context = _context(plain, "AllOrNothing")
    seeded = plain.create_items(context, "Rows", rows(50))
    assert seeded.success
    before = plain.get_items(context)
    items = rows(200, start=1000)
    items[185]["n"] = -1  # below the attribute's minimum; late, so earlier chunks were applied
    result = plain.create_items(context, "Rows", items, atomic=True, batch_size=20)
    assert not result.success
    assert result.state.value == "rolled_back"
    assert result.items_created == 0 and result.item_ids == []
    assert [(e.index, e.field) for e in result.errors] == [(185, "n")]
    assert result.error is not None and result.error["code"] == "ABORTED"
    assert plain.get_items(context) == before
    assert plain.count_items(context) == 50
    # an atomic update that fails for one item on one shard rolls back the other shard too
    updates = [{"selector": {"itemId": item["id"]}, "values": {"n": "=n - 10"}} for item in before]
    failed = plain.update_items(context, updates, atomic=True)  # items 0..9 would go below 0
    assert not failed.success and failed.state.value == "rolled_back"
    assert plain.get_items(context) == before
    _assert_no_2pc_state_left(plain)


def test_progress_actor_keeps_increments_that_arrive_before_the_start(ray_session):
    """Workers report to the progress actor directly and the coordinator announces the batch
    separately; Ray orders messages per sender only, so a report may come first."""
    import ray

    from actors.progress import ProgressActor

    actor = ProgressActor.remote()
    try:
        ray.get(actor.report.remote("create-1-ab", 5, 1, "CreateItems"))
        ray.get(actor.start.remote("create-1-ab", 20, "create_items"))
        ray.get(actor.report.remote("create-1-ab", 5, 0, "CreateItems"))
        progress = ray.get(actor.get.remote("create-1-ab"))
        assert (progress["completed"], progress["failed"], progress["total"]) == (10, 1, 20)
        assert progress["kind"] == "create_items"
        # the coordinator's outbox sends several at once, in order; an unknown name is skipped
        ray.get(actor.apply.remote([("start", ("update-2-cd", 4, "update_items")), ("drop_all", ()),
                                    ("report", ("update-2-cd", 4, 0, "UpdateItems")),
                                    ("finish", ("update-2-cd", "completed"))]))
        progress = ray.get(actor.get.remote("update-2-cd"))
        assert (progress["completed"], progress["total"], progress["state"]) == (4, 4, "completed")
    finally:
        ray.kill(actor)


def test_a_progress_call_that_cannot_be_sent_does_not_break_the_batch():
    """Progress is telemetry: the coordinator's outbox logs and drops events that fail to
    send (a batch's last steps report progress; raising there would leave its waiters hanging)."""
    from actors.coordinator import ProgressOutbox

    class Unsendable:
        def remote(self, *args):
            raise TypeError("too many positional arguments")

    class Actor:
        apply = Unsendable()

    progress = ProgressOutbox(Actor(), every=3600)
    try:
        assert progress.memory(1, 2) is None
        assert progress.finish("create-1-ab", "completed") is None
        assert progress.flush() is None  # dropped, not kept to fail again
        assert progress.flush() is None
    finally:
        progress.close()


def test_progress_events_reach_the_actor_in_order_in_one_call():
    """The outbox sends the events gathered since the last send as one call, in the order they
    were made; a flush with nothing gathered sends nothing; unknown names are refused."""
    from actors.coordinator import ProgressOutbox

    sent = []

    class Recorder:
        def remote(self, events):
            sent.append(list(events))
            return len(sent)

    class Actor:
        apply = Recorder()

    progress = ProgressOutbox(Actor(), every=3600)
    try:
        progress.start("t", 10, "create_items")
        progress.report("t", 4, 0, "CreateItems")
        progress.report("t", 6, 0, "CreateItems")
        progress.finish("t", "completed")
        assert sent == []  # nothing sent until the period ends or a flush
        assert progress.flush() == 1
        assert sent == [[("start", ("t", 10, "create_items")), ("report", ("t", 4, 0, "CreateItems")),
                         ("report", ("t", 6, 0, "CreateItems")), ("finish", ("t", "completed"))]]
        assert progress.flush() is None and len(sent) == 1
        with pytest.raises(AttributeError):
            progress.get("t")
    finally:
        progress.close()


def test_a_small_batch_submitted_again_under_its_key_without_waiting_gives_its_id(plain):
    context = _context(plain, "KeyedNoWait")
    first = plain.create_items(context, "Rows", rows(5), idempotency_key="no-wait-1")
    assert first.success, first.error
    again = plain.create_items(context, "Rows", rows(5), idempotency_key="no-wait-1", wait=False)
    assert again == first.transaction_id  # the id at once, not the first batch's result
    assert plain.wait(again).success and plain.count_items(context) == 5


def test_a_batchray_error_raised_in_an_actor_reaches_the_caller_as_itself(plain):
    """``ray.get`` raises an error from a remote call as an instance of a class Ray makes
    (``RayTaskError(NotFoundError)``): a BatchrayError still, but it printed as the actor's
    traceback (colour codes and file paths) and could not be pickled, so a Ray task using the
    client (a Ray Data write) could not ship it. The driver's calls to the coordinator, and
    the coordinator's to the workers, raise batchray's own error."""
    import pickle

    import ray

    from actors.transport import RayTransport
    from batchray.errors import NotFoundError, StaleEpochError

    for call in (plain.status, plain.cancel, plain.wait):
        with pytest.raises(NotFoundError) as refused:
            call("create-0000-none")
        assert type(refused.value) is NotFoundError
        assert str(refused.value) == "no batch create-0000-none"
        assert pickle.loads(pickle.dumps(refused.value)).to_dict() == refused.value.to_dict()

    @ray.remote
    def stale() -> None:
        raise StaleEpochError("epoch 3 of shard-0000 was replaced by 4", participant="shard-0000")

    transport = RayTransport(lambda name: None)
    try:
        with pytest.raises(StaleEpochError) as refused:
            transport._get(stale.remote())
        assert type(refused.value) is StaleEpochError
        assert refused.value.details == {"participant": "shard-0000"}
        pickle.dumps(refused.value)
    finally:
        transport.close()


def test_an_answer_lost_with_its_owner_is_a_retryable_unavailable_participant(ray_session):
    """An apply's answer that Ray lost (with its node, or its owner) raised Ray's own
    ``ObjectLostError`` out of the transport, and its chunk failed for good: it is a retryable
    ``UNAVAILABLE``, so the apply is sent again (applies are idempotent per chunk)."""
    import ray

    from actors.transport import RayTransport
    from batchray.errors import ParticipantUnavailable

    @ray.remote
    class Owner:
        def make(self) -> list:
            return [ray.put(b"x" * 300_000)]  # owned by this actor, which then dies

    owner = Owner.remote()
    (lost,) = ray.get(owner.make.remote())
    ray.kill(owner, no_restart=True)
    transport = RayTransport(lambda name: None)
    try:
        deadline = time.monotonic() + 60
        with pytest.raises(ParticipantUnavailable) as refused:
            while time.monotonic() < deadline:  # the copy here is served until Ray learns the owner died
                transport._get(lost, timeout=30)
                time.sleep(0.1)
        assert refused.value.retryable and "lost" in refused.value.message
    finally:
        transport.close()


def test_shutdown_stops_every_worker_of_a_store_whose_coordinator_does_not_answer(tmp_path, monkeypatch):
    """A coordinator that does not answer (crashing as it starts, say) cannot list its workers:
    shutdown then looked for the first 64 names only, and a store of more shards kept the other
    worker processes (detached, its files open) after a shutdown that said it stopped them."""
    import actors.runtime as runtime_module
    from actors.coordinator import actor_prefix
    from actors.runtime import RayRuntime
    from batchray.core.storage.store import StoreLayout
    from batchray.errors import ParticipantUnavailable

    layout = StoreLayout(tmp_path / "store", 100)
    prefix = actor_prefix(str(layout.root))
    alive = {f"{prefix}-coordinator", f"{prefix}-progress", *(f"{prefix}-worker-{i}" for i in range(100))}
    killed = []

    def get_actor(name, namespace=None):
        if name not in alive:
            raise ValueError(name)
        return name

    def unanswered(ref, timeout=None):
        raise ParticipantUnavailable("the coordinator is restarting")

    class Coordinator:
        class info:
            remote = staticmethod(lambda: None)

    monkeypatch.setattr(runtime_module.ray, "get_actor", get_actor)
    monkeypatch.setattr(runtime_module.ray, "kill", lambda actor, no_restart=False: killed.append(actor))
    monkeypatch.setattr(runtime_module, "ray_get", unanswered)
    runtime = RayRuntime.__new__(RayRuntime)  # what shutdown uses of a runtime, without Ray
    runtime.lane, runtime.layout, runtime.coordinator = None, layout, Coordinator()
    runtime.close = lambda: None
    runtime.shutdown()
    assert set(killed) == alive and len(killed) == len(alive)


def test_a_batch_run_as_soon_as_the_one_before_answered_finds_its_commit_done(make_client):
    """A batch's caller is answered at the commit point, and phase 2 takes the commit to each
    shard after it. A next batch (a delete by query of what an update changed) sent at once
    reached a shard before that commit; a query read the values committed there, which did not
    match yet (on PostgreSQL nothing of the update's is visible before its commit). A batch now
    starts once the phase 2 of every batch decided before it has ended at the coordinator."""
    import ray

    def _record_commits_and_applies(actor, delay):  # defined here: a worker cannot import this module
        """In a worker: each shard's commits take ``delay`` seconds longer, and the worker notes
        when each commit ended and each apply began, by transaction."""
        import time as _time

        actor.noted = []
        for shard in actor.shards.values():
            commit, apply = shard.commit, shard.apply

            def slow_commit(ref, commit=commit, name=shard.name):
                _time.sleep(delay)
                commit(ref)
                actor.noted.append(("committed", name, ref.txn, _time.monotonic()))

            def noting_apply(ref, chunk, *args, apply=apply, name=shard.name, **kwargs):
                actor.noted.append(("apply", name, ref.txn, _time.monotonic()))
                return apply(ref, chunk, *args, **kwargs)

            shard.commit, shard.apply = slow_commit, noting_apply

    client = make_client("phase2", workers=1, shards=2)
    assert client.create_data_context("P", COLLECTIONS).success
    assert client.create_items("P", "Rows", rows(10)).success
    (worker,) = set(ray.get(client.runtime.coordinator.lane.remote())["workers"].values())
    ray.get(worker.__ray_call__.remote(_record_commits_and_applies, 0.5))
    updated = client.update_items("P", [{"selector": {"query": "n >= 0"}, "values": {"n": "=n + 100"}}])
    deleted = client.delete_items("P", [{"query": "n >= 105"}])
    assert updated.success and updated.items_updated == 10 and deleted.success and deleted.items_deleted == 5
    noted = ray.get(worker.__ray_call__.remote(lambda actor: actor.noted))
    commits = {shard: at for what, shard, txn, at in noted if what == "committed" and txn == updated.transaction_id}
    applies = [(shard, at) for what, shard, txn, at in noted if what == "apply" and txn.startswith(
        deleted.transaction_id)]
    assert set(commits) == set(client.layout.shard_names) and applies, noted
    assert all(at >= commits[shard] for shard, at in applies), noted


def test_a_failed_read_of_progress_does_not_end_a_streamed_batch(make_client):
    """The driver of a streamed batch with a progress callback reads the batch's status as it
    feeds; a read that failed (here the decision log refusing it once) raised into the feed,
    which cancelled and rolled back its own batch. The read is tried again at the next tick."""
    import ray

    from batchray.errors import StoreError

    def status_fails_once(actor):  # in the coordinator: its first status read of a batch fails
        status = actor.service.status
        failed = []

        def failing(txn):
            if not failed:
                failed.append(txn)
                raise StoreError("decision log: read failed: server closed the connection unexpectedly")
            return status(txn)

        actor.service.status = failing

    client = make_client("progress-read", workers=2)
    assert client.create_data_context("P", COLLECTIONS).success
    ray.get(client.runtime.coordinator.__ray_call__.remote(status_fails_once))
    seen: list = []
    result = client.create_items("P", "Rows", (row for row in rows(30_000)), batch_size=500, callback=seen.append)
    assert result.success and result.items_created == 30_000, result
    assert client.count_items("P") == 30_000 and seen and seen[-1]["completed"] == 30_000
