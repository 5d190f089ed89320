"""batchray.io.kernel_thread: Arrow's kernels run on one thread per process, whatever thread calls."""
from __future__ import annotations

import os
import threading

import pyarrow as pa
import pytest

from batchray.io.columnar import ArrowRows
from batchray.io.kernel_thread import on_kernel_thread


@on_kernel_thread
def _thread_name(nested: bool = False) -> str:
    name = threading.current_thread().name
    return _thread_name() if nested else name  # a nested call runs in place (no deadlock)


@on_kernel_thread
def _fail() -> None:
    raise ValueError("from the kernel thread")


def test_every_caller_thread_gets_the_same_kernel_thread() -> None:
    names: list[str] = []
    callers = [threading.Thread(target=lambda: names.append(_thread_name())) for _ in range(4)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    names.append(_thread_name(nested=True))
    assert len(set(names)) == 1 and names[0].startswith("batchray-arrow-kernels")
    assert names[0] != threading.current_thread().name


def test_an_exception_reaches_the_caller() -> None:
    with pytest.raises(ValueError, match="from the kernel thread"):
        _fail()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_its_own_kernel_thread() -> None:
    _thread_name()  # the parent's thread exists before the fork
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's thread is not there; a call must still answer
        try:
            os.write(writer, _thread_name().encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as answer:
        name = answer.read().decode()
    os.waitpid(pid, 0)
    assert name.startswith("batchray-arrow-kernels")


def test_arrow_rows_profile_and_json_on_the_kernel_thread() -> None:
    rows = ArrowRows(pa.RecordBatch.from_pylist([{"a": 1, "b": "x"}, {"a": 2, "b": None}]))
    assert rows.json_rows() == b'[{"a":1,"b":"x"},{"a":2,"b":null}]'
    assert rows.column_profile("b").has_null and rows.column_profile("a").int_range == (1, 2)
