"""Imports bounded by the memory budget whatever the file (issue 16, part 4), written as the
attacks: a JSON Lines line or CSV record far over the record limit, a CODAP document of nested
empty objects (or nested too deep), a zstd Parquet file whose one string inflates far beyond
its size. Each is refused with a structured DocumentError naming the limit, and the process's
peak RSS growth during the attempt (sampled with psutil) stays a small multiple of the limit,
far below what holding the file's content would take. Normal files still import."""
from __future__ import annotations

import threading

import orjson
import psutil
import pytest

from batchray.errors import DocumentError, ValidationError
from batchray.io import import_file
from batchray.io.codap.reader import read_document
from batchray.io.limits import (
    DEFAULT_DECODED_BYTES,
    DEFAULT_DOCUMENT_BYTES,
    MIN_DECODED_BYTES,
    MIN_RECORD_BYTES,
    read_limits,
)
from local_runtime import local_client

MiB = 1 << 20
HUGE = 40 * MiB
"""The attack's oversized line, record or value: holding it would grow the process by more."""
BOUND = 24 * MiB
"""The most the process may grow while refusing a file, with a 1 MiB record limit."""


class PeakRss:
    """The process's peak resident-set growth over a ``with`` block, sampled every 2 ms."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.growth = 0

    def __enter__(self) -> "PeakRss":
        self.before = self.process.memory_info().rss
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(0.002)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        self.growth = self.peak - self.before


@pytest.fixture
def client(tmp_path):
    with local_client(tmp_path / "store") as c:
        # warm up: the readers' modules and pyarrow's pools are loaded before anything is measured
        small = tmp_path / "warm.csv"
        small.write_text("a,b\n1,x\n")
        c.import_file("Warm", None, small)
        pytest.importorskip("pyarrow.parquet")
        yield c


def refused(client, path, **options) -> tuple[DocumentError, int]:
    with PeakRss() as rss, pytest.raises(DocumentError) as info:
        import_file(client, "Attack", None, path, **options)
    assert "Attack" not in client.catalog.contexts()
    print(f"\n{path.name}: {info.value.details['reason']}, peak RSS growth {rss.growth / MiB:.1f} MiB")
    return info.value, rss.growth


def _write_with_huge_line(path, before: bytes, huge_start: bytes, filler: bytes, after: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(before)
        fh.write(huge_start)
        piece = filler * (MiB // len(filler))
        for _ in range(HUGE // len(piece)):
            fh.write(piece)
        fh.write(after)


def test_limits_come_from_the_budget_with_floors_and_explicit_overrides():
    assert read_limits(None).record_bytes == 8 * MiB  # no budget: the largest chunk
    assert read_limits(None).decoded_bytes == DEFAULT_DECODED_BYTES
    assert read_limits(None).document_bytes == DEFAULT_DOCUMENT_BYTES
    assert read_limits(16 * MiB).record_bytes == 2 * MiB  # an eighth of the allowance
    assert read_limits(4 * MiB).record_bytes == MIN_RECORD_BYTES  # the floor
    assert read_limits(400 * MiB).record_bytes == 8 * MiB
    assert read_limits(64 * MiB).decoded_bytes == MIN_DECODED_BYTES
    assert read_limits(1024 * MiB).decoded_bytes == 256 * MiB
    assert read_limits(None, max_record_bytes=100, max_decoded_bytes=200, max_document_memory=300) == \
        read_limits(1, 100, 200, 300)
    for bad in (0, -1, 1.5, "1", True):
        with pytest.raises(ValidationError):
            read_limits(None, max_record_bytes=bad)


def test_a_json_lines_line_over_the_limit_is_refused_before_it_is_held(client, tmp_path):
    path = tmp_path / "one-huge-line.jsonl"
    _write_with_huge_line(path, b'{"a": 1}\n{"a": 2}\n', b'{"a": "', b"x" * 64, b'"}\n{"a": 3}\n')
    for atomic in (True, False):
        error, growth = refused(client, path, max_record_bytes=MiB, atomic=atomic)
        assert error.code == "DOCUMENT" and error.details["reason"] == "line_too_long"
        assert error.details["row"] == 3 and error.details["limit"] == MiB and "line 3" in error.message
        assert growth < BOUND < HUGE


def test_a_csv_record_over_the_limit_is_refused_before_it_is_held(client, tmp_path):
    path = tmp_path / "one-huge-record.csv"
    _write_with_huge_line(path, b"a,b\n1,x\n2,y\n", b'3,"', b"y" * 64, b'"\n4,z\n')
    for atomic in (True, False):
        error, growth = refused(client, path, max_record_bytes=MiB, atomic=atomic)
        assert error.code == "DOCUMENT" and error.details["reason"] == "record_too_long"
        assert error.details["limit"] == MiB and error.details["row"] == 3
        assert growth < BOUND < HUGE


def test_a_csv_record_over_a_limit_below_the_block_size_is_refused_with_its_row(client, tmp_path):
    """A record over ``max_record_bytes`` is refused however it falls in the blocks read (a limit
    far below the block size included), on either path, atomic or not; one at the limit imports."""
    short = tmp_path / "long-field.csv"
    short.write_text("a,b\n1,2\n" + "x" * 900_000 + ",3\n4,5\n")
    later = tmp_path / "later-long-field.csv"  # past the first blocks of 4 KiB
    later.write_text("a,b\n" + "".join(f"{i},{'y' * 2_000 if i == 1_499 else 'z'}\n" for i in range(2_000)))
    for path, row, size, block in ((short, 2, 900_002, None), (later, 1_500, 2_005, 4_096)):
        for columnar in (True, False):
            for atomic in (True, False):
                with pytest.raises(DocumentError) as info:
                    import_file(client, "Attack", None, path, max_record_bytes=1_000, block_size=block,
                                columnar=columnar, atomic=atomic)
                details = info.value.details
                assert (details["reason"], details["row"], details["size"], details["limit"]) == \
                    ("record_too_long", row, size, 1_000), (path.name, columnar, atomic)
                assert f"row {row}" in info.value.message and "max_record_bytes" in info.value.message
                assert "Attack" not in client.catalog.contexts()
    at_limit = tmp_path / "at-limit.csv"
    at_limit.write_text("a,b\n" + "w" * 998 + ",3\n4,5\n")  # 998 + 1 + 1 bytes
    result = import_file(client, "AtLimit", None, at_limit, max_record_bytes=1_000)
    assert result.success and result.items_created == 2


def test_a_codap_document_of_empty_objects_is_refused_before_it_is_parsed(client, tmp_path):
    path = tmp_path / "empties.codap"
    count = 4_000_000  # 12 MB of "{}," that parse into some 300 MB of dicts
    path.write_bytes(b'{"appName": "DG", "contexts": [], "components": [], "x": [' + b"{}," * count + b"{}]}")
    limit = 64 * MiB
    error, growth = refused(client, path, format="codap", max_document_memory=limit)
    assert error.details["reason"] == "too_complex" and error.details["limit"] == limit
    assert error.details["containers"] > count and error.details["estimated_bytes"] > limit
    size = path.stat().st_size
    assert growth < 3 * size + 16 * MiB < count * 64  # the scan holds the text twice at most
    with pytest.raises(DocumentError) as info:  # the reader's own default limit, 1 GiB: 15M objects
        read_document(path, max_memory=count * 50)
    assert info.value.details["reason"] == "too_complex"


def test_a_codap_document_nested_too_deep_is_refused(client, tmp_path):
    path = tmp_path / "deep.codap"
    path.write_bytes(b'{"appName": "DG", "contexts": [], "components": [], "x": ' + b'[{"a":' * 200_000
                     + b"1" + b"}]" * 200_000 + b"}")
    error, growth = refused(client, path, format="codap")
    assert error.details["reason"] == "too_deep" and error.details["limit"] == 100
    assert growth < BOUND
    ok = tmp_path / "shallow.codap"  # brackets inside strings never count
    ok.write_bytes(b'{"appName": "DG", "appVersion": "2.0", "appBuildNum": "1", "contexts": [], "components": [], "x": "' + b"[" * 500 + b'"}')
    assert read_document(ok).contexts == []


def test_a_zstd_parquet_value_that_inflates_far_is_refused_from_the_metadata(client, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "one-huge-value.parquet"
    pq.write_table(pa.table({"a": ["x" * HUGE]}), path, compression="zstd")
    assert path.stat().st_size < 64 << 10  # kilobytes on disk
    error, growth = refused(client, path, max_decoded_bytes=8 * MiB)
    assert error.details["reason"] == "column_chunk_too_large" and error.details["limit"] == 8 * MiB
    assert error.details["column"] == "a" and error.details["size"] > HUGE
    assert growth < BOUND < HUGE


def test_a_parquet_string_over_the_record_limit_is_refused_with_its_row(client, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "one-long-value.parquet"
    values = [f"v{i}" for i in range(5000)]
    values[4321] = "y" * (2 * MiB)
    pq.write_table(pa.table({"a": values, "n": list(range(5000))}), path, compression="zstd")
    error, _ = refused(client, path, max_record_bytes=MiB)
    assert error.details["reason"] == "value_too_long" and error.details["row"] == 4322
    assert error.details["column"] == "a" and error.details["limit"] == MiB


def test_normal_files_still_import_under_low_limits(client, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"n": i, "label": f"row {i}", "text": "z" * 1000} for i in range(3000)]
    jsonl = tmp_path / "ok.jsonl"
    jsonl.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    csv = tmp_path / "ok.csv"
    csv.write_text("n,label,text\n" + "".join(f"{r['n']},{r['label']},{r['text']}\n" for r in rows))
    parquet = tmp_path / "ok.parquet"
    pq.write_table(pa.table({k: [r[k] for r in rows] for k in rows[0]}), parquet, compression="zstd")
    codap = tmp_path / "ok.codap"
    client.export_file("Warm", codap)
    limits = {"max_record_bytes": 64 << 10, "max_decoded_bytes": 8 * MiB, "max_document_memory": 8 * MiB}
    for name, path in (("J", jsonl), ("C", csv), ("P", parquet)):
        result = import_file(client, name, None, path, block_size=16 << 10, **limits)
        assert result.success and result.items_created == 3000, (name, result.errors)
        assert [item["values"]["n"] for item in client.get_items(name)][-3:] == [2997, 2998, 2999]
    result = import_file(client, "WarmAgain", None, codap, **limits)
    assert result.success and result.items_created == 1, result.errors


def test_the_import_tool_takes_the_limits_and_refuses_with_a_structured_answer(client, tmp_path, monkeypatch):
    """``batch_import``'s ``maxRecordBytes`` lowers (or raises) the record limit; the refusal is
    a structured answer naming the line, the store unchanged."""
    monkeypatch.setattr(client, "io_root", str(tmp_path))  # the tool's paths stay under it
    path = tmp_path / "long-line.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "' + b"x" * 20_000 + b'"}\n')
    args = {"dataContextName": "Lines", "path": str(path)}
    refused = client.tool("batch_import", {**args, "options": {"maxRecordBytes": 4096}})
    assert refused["success"] is False and refused["error"]["code"] == "DOCUMENT"
    assert refused["error"]["details"]["reason"] == "line_too_long" and refused["error"]["details"]["row"] == 2
    assert "Lines" not in client.data_contexts()
    assert client.tool("batch_import", {**args, "options": {"maxRecordBytes": 65536}})["success"]
    assert client.count_items("Lines") == 2
