"""Crash points: a hook called just before every durable write of batchray's own.

Every local commit that makes 2PC state durable (a shard's apply, prepare, commit, abort; the
coordinator's decision log) first calls :func:`durable_write` with a label. Normally that does
nothing. Tests arm it to crash at the n-th durable write of a process, either

* in process: :func:`arm` with an action (raise :class:`SimulatedCrash`), used by the simulator
  and the crash-point sweep of the pure core; or
* for real: ``BATCHRAY_CRASH_AT_WRITE=n`` (optionally ``BATCHRAY_CRASH_LABEL=prefix`` to count
  only matching labels) in a process's environment makes it ``os._exit(137)`` there, used by the
  kill tests on Ray.

The write labelled at the crash does not happen: the crash comes before its commit.
"""
from __future__ import annotations

import os
import threading
from typing import Callable, Optional


class SimulatedCrash(BaseException):
    """Raised at an armed crash point. A BaseException so that ordinary ``except Exception``
    recovery code does not swallow it, as it could not swallow a real crash."""


_lock = threading.Lock()
_count = 0
_crash_at: Optional[int] = None
_label_prefix: str = ""
_action: Optional[Callable[[str, int], None]] = None


def _from_environment() -> None:
    global _crash_at, _label_prefix
    value = os.environ.get("BATCHRAY_CRASH_AT_WRITE")
    if value:
        _crash_at = int(value)
        _label_prefix = os.environ.get("BATCHRAY_CRASH_LABEL", "")


_from_environment()


def arm(n: Optional[int], action: Optional[Callable[[str, int], None]] = None, label_prefix: str = "") -> None:
    """Crash at the ``n``-th durable write from now (1-based) whose label starts with
    ``label_prefix``; ``n=None`` disarms. ``action(label, n)`` runs there (default: raise
    :class:`SimulatedCrash`)."""
    global _count, _crash_at, _action, _label_prefix
    with _lock:
        _count = 0
        _crash_at = n
        _action = action
        _label_prefix = label_prefix


def writes_seen() -> int:
    """Durable writes counted since the last :func:`arm`."""
    return _count


def durable_write(label: str) -> None:
    """Called before each durable write; crashes there when armed for it."""
    global _count
    if _crash_at is None or not label.startswith(_label_prefix):
        return
    with _lock:
        _count += 1
        hit = _count == _crash_at
    if not hit:
        return
    if _action is not None:
        _action(label, _count)
        return
    if os.environ.get("BATCHRAY_CRASH_AT_WRITE"):
        os._exit(137)
    raise SimulatedCrash(f"crash at durable write {_count} ({label})")
