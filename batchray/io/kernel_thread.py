"""Arrow's kernels on one thread per process: :func:`on_kernel_thread`.

Arrow allocates its arrays from its default memory pool, mimalloc, which keeps a heap per
thread and hands the pages a heap no longer uses back to the system after a few
milliseconds. A worker actor applies chunks on a pool of threads (Ray's ``max_concurrency``)
and each chunk's kernels allocate a few megabytes of strings: run on whichever thread the
apply landed on, they found that thread's heap cold and every page of their arrays was a
fresh page fault, which the kernel served with a zeroed (transparent huge) page. Measured in
``python -m bench.cpu_profile create-table``: half of each worker's CPU went to the kernel
zeroing pages (``clear_page_erms`` under ``mi_page_free_list_extend``), 3 µs of system time
per row against 0.5 µs of the kernels' own work, so the columnar chunk cost a worker twice
what the same rows as pickled dicts cost. Run on one thread, the kernels keep reusing the
pages of one warm heap.

Nothing is lost in parallelism: a process applies one chunk at a time anyway
(:data:`batchray.core.storage.participant_base.CHUNK_WORK_LINE`), and the calling thread
only waits (without the GIL) for the result. A call made on the kernel thread itself runs
there directly, and a process forked from one that had started the thread starts its own.
"""
from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_here = threading.local()
_lock = threading.Lock()
_pool: Optional[ThreadPoolExecutor] = None
_pool_pid = 0


def _mark_kernel_thread() -> None:
    _here.kernel = True


def _kernel_pool() -> ThreadPoolExecutor:
    """This process's kernel thread (started on first use; again in a forked child)."""
    global _pool, _pool_pid
    with _lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(1, thread_name_prefix="batchray-arrow-kernels", initializer=_mark_kernel_thread)
            _pool_pid = os.getpid()
        return _pool


def on_kernel_thread(fn: F) -> F:
    """``fn`` run on this process's kernel thread; its result or exception as if run here."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        if getattr(_here, "kernel", False):
            return fn(*args, **kwargs)
        return _kernel_pool().submit(fn, *args, **kwargs).result()

    return run  # type: ignore[return-value]
