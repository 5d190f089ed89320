"""CreateChunker(even_rounds=True): a columnar batch cut into rounds of one size (the Ray Data
sink's chunks), every row still given one id and its own request index."""
from __future__ import annotations

import pytest

from batchray.core.model.columnar import ColumnLists
from batchray.core.plan.chunking import CreateChunker, even_round
from id_source import fresh_ids


def cut(total: int, *, even: bool, shards: int = 2, max_rows: int = 22_000) -> list:
    chunker = CreateChunker([f"s{i}" for i in range(shards)], fresh_ids(1_000), schema=None, max_rows=max_rows,
                            max_bytes=1 << 40, even_rounds=even)
    rows = ColumnLists(["n"], [list(range(total))])
    return list(chunker.columnar_chunks([rows], start_index=7))


def test_a_block_is_cut_into_even_chunks_not_full_ones_and_a_short_one_on_one_shard() -> None:
    assert [p.count for p in cut(62_500, even=False)] == [22_000, 22_000, 18_500]
    even = cut(62_500, even=True)
    assert [p.count for p in even] == [15_625] * 4
    assert [p.participant for p in even] == ["s0", "s1", "s0", "s1"]


@pytest.mark.parametrize("total,shards,max_rows", [(62_500, 2, 22_000), (62_501, 2, 22_000), (100_003, 3, 7_000),
                                                   (5, 2, 1), (44_001, 2, 22_000)])
def test_every_row_keeps_one_id_on_its_shard_and_its_request_index(total: int, shards: int, max_rows: int) -> None:
    planned = cut(total, even=True, shards=shards, max_rows=max_rows)
    seen: dict[int, int] = {}
    for p in planned:
        chunk = p.chunk
        assert len(chunk.rows) == len(chunk.ids) <= max_rows
        for position, (item_id, value) in enumerate(zip(chunk.ids, chunk.rows.columns()[0])):
            assert p.participant == f"s{item_id % shards}"
            assert chunk.index_of(position) == 7 + value  # the row's place in the input
            assert value not in seen
            seen[value] = item_id
    assert sorted(seen) == list(range(total)) and len(set(seen.values())) == total


def test_even_round_sizes() -> None:
    assert even_round(62_500, 44_000, 2) == 31_250
    assert even_round(44_000, 44_000, 2) == 44_000
    assert even_round(100_003, 21_000, 3) == 20_001  # five rounds, the last 19,999


@pytest.mark.parametrize("round_rows,sampled", [(5, 5), (100, 8), (256, 16), (1_000, 32), (50_000, 32)])
def test_a_rounds_bytes_are_estimated_from_a_sample_that_grows_with_it(monkeypatch, round_rows: int, sampled: int) -> None:
    """A dict round's bytes per row come from one row in 16, at least 8 and at most 32: a
    round of 100 rows (4 chunks of 25) estimated 32 of them, as long as cutting the round."""
    import batchray.core.plan.chunking as chunking

    estimated = []
    estimate = chunking.estimate_bytes
    monkeypatch.setattr(chunking, "estimate_bytes", lambda row: estimated.append(row) or estimate(row))
    chunker = CreateChunker(["s0", "s1"], fresh_ids(1_000), schema=None, max_rows=round_rows // 2 or 1,
                            max_bytes=1 << 40)
    rows = [{"n": i, "label": "x" * (i % 7)} for i in range(round_rows)]
    planned = list(chunker.chunks(rows))
    assert sum(p.count for p in planned) == round_rows
    assert len(estimated) == sampled and len({id(r) for r in estimated}) == sampled
