"""A planner reserves item ids from the durable sequence in blocks that double while a context
keeps taking them (each reservation is a round trip to the coordinator and a durable write
there, which the driver waits for)."""
from __future__ import annotations

from batchray.core.plan.planner import MAX_ID_BLOCK, BatchPlanner
from batchray.core.txn.chunks import context_range


def _planner() -> tuple[BatchPlanner, list[tuple[str, int]]]:
    taken: list[tuple[str, int]] = []
    next_value: dict[str, int] = {}

    def allocate(sequence: str, count: int) -> int:
        taken.append((sequence, count))
        first = next_value.get(sequence, 0)
        next_value[sequence] = first + count
        return first

    return BatchPlanner(layout=None, catalog=None, reader=None, allocate=allocate), taken


def test_a_bulk_load_reserves_its_ids_in_doubling_blocks():
    planner, taken = _planner()
    firsts = [planner.take_ids(3, 50_000) for _ in range(20)]  # a million items, 50,000 a round
    assert [count for _, count in taken] == [65_536, 131_072, 262_144, 524_288, 1_048_576]
    assert {sequence for sequence, _ in taken} == {"items:3"}
    lo, hi = context_range(3)
    ids = [i for first in firsts for i in range(first, first + 50_000)]
    assert len(set(ids)) == len(ids) == 1_000_000 and lo <= min(ids) and max(ids) <= hi


def test_blocks_stop_growing_at_the_cap_and_small_takes_share_one():
    planner, taken = _planner()
    for _ in range(40):
        planner.take_ids(1, 1_000_000)
    counts = [count for _, count in taken]
    assert counts[:4] == [1_000_000, 2_000_000, 4_000_000, MAX_ID_BLOCK] and set(counts[4:]) == {MAX_ID_BLOCK}
    planner.take_ids(2, 5 * MAX_ID_BLOCK)  # more than the cap at once: what is asked
    assert taken[-1] == ("items:2", 5 * MAX_ID_BLOCK)
    small, small_taken = _planner()
    assert [small.take_ids(1, 10) for _ in range(3)] == [context_range(1)[0] + 10 * i for i in range(3)]
    assert small_taken == [("items:1", 65_536)]
