"""Crash points: a hook called just before every durable write of batchray's own.

Every local commit that makes 2PC state durable (a shard's apply, prepare, commit, abort; the
coordinator's decision log) first calls :func:`durable_write` with a label. Normally that does
nothing. Tests arm it to crash at the n-th durable write of a process, either

* in process: :func:`arm` with an action (raise :class:`SimulatedCrash`), used by the simulator
  and the crash-point sweep of the pure core; or
* for real: ``BATCHRAY_CRASH_AT_WRITE=n`` (optionally ``BATCHRAY_CRASH_LABEL=prefix`` to count
  only matching labels) in a process's environment makes it ``os._exit(137)`` there (a
  restarted process has the same environment, and crashes again at its own n-th write);
* by a trigger file, for the kill tests on Ray: ``BATCHRAY_CRASH_FILE=path`` in a process's
  environment makes every crash point look for ``path``. Writing it *arms* the processes at run
  time, without restarting them: a JSON object ``{"id", "label", "at", "action"}`` means "at the
  ``at``-th point (counted per ``id``, from when this process first sees it) whose label starts
  with ``label``". The first process to get there renames the file to ``path + ".hit"`` (so it
  fires once, in one process, and a restarted process finds nothing) and writes
  ``{"pid", "label"}`` into it. Then ``action`` ``"exit"`` ends the process with
  ``os._exit(137)``; ``"hold"`` parks the thread there, inside the local transaction of the
  write (nothing of it committed), until ``path + ".go"`` appears (or 60 s pass), so that a
  test can SIGKILL any process (this one, the coordinator, a worker, the driver) at exactly
  that point of the protocol and then let the holder go on. Two optional keys narrow what is
  counted: ``"pid"`` (only that process counts and fires: a sweep over one process's writes)
  and ``"writes": true`` (only durable writes count, not the protocol points of
  :func:`reached`).

Besides the durable writes there are protocol points that write nothing (see :func:`reached`;
only the trigger file arms them), such as the coordinator about to send a participant a step
(``send:<step>:<participant>``: ``send:commit`` comes right after the decision is logged).

The write labelled at the crash does not happen: the crash comes before its commit.
"""
from __future__ import annotations

import json
import os
import threading
import time
from typing import Callable, Optional


class SimulatedCrash(BaseException):
    """Raised at an armed crash point. A BaseException so that ordinary ``except Exception``
    recovery code does not swallow it, as it could not swallow a real crash."""


_lock = threading.Lock()
_count = 0
_crash_at: Optional[int] = None
_label_prefix: str = ""
_action: Optional[Callable[[str, int], None]] = None


_trigger_file: Optional[str] = None
_trigger_counts: dict[str, int] = {}


def _from_environment() -> None:
    global _crash_at, _label_prefix, _trigger_file
    value = os.environ.get("BATCHRAY_CRASH_AT_WRITE")
    if value:
        _crash_at = int(value)
        _label_prefix = os.environ.get("BATCHRAY_CRASH_LABEL", "")
    _trigger_file = os.environ.get("BATCHRAY_CRASH_FILE") or None


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
    if _trigger_file is not None:
        _triggered(label, write=True)
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


def reached(label: str) -> None:
    """A crash point at a protocol step that writes nothing. Only the trigger file arms it: the
    other ways count durable writes, and this is none."""
    if _trigger_file is not None:
        _triggered(label)


def _triggered(label: str, write: bool = False) -> None:
    """The trigger-file crash point (``BATCHRAY_CRASH_FILE``, see the module docstring)."""
    path = _trigger_file
    try:
        with open(path, "rb") as handle:
            spec = json.loads(handle.read() or b"{}")
    except (FileNotFoundError, ValueError):
        return  # not armed (or being written: the next point reads it again)
    if not label.startswith(spec.get("label", "")):
        return
    if spec.get("pid") is not None and int(spec["pid"]) != os.getpid():
        return
    if spec.get("writes") and not write:
        return
    key = str(spec.get("id", ""))
    with _lock:
        _trigger_counts[key] = _trigger_counts.get(key, 0) + 1
        if _trigger_counts[key] != int(spec.get("at", 1)):
            return
    claimed = path + ".claimed"
    try:
        os.rename(path, claimed)  # atomic: one process, once
    except FileNotFoundError:
        return
    hit = path + ".hit"
    with open(hit + ".tmp", "w") as handle:
        json.dump({"pid": os.getpid(), "label": label, "id": key}, handle)
    os.replace(hit + ".tmp", hit)  # appears complete
    os.unlink(claimed)
    if spec.get("action", "exit") == "exit":
        os._exit(137)
    go = path + ".go"
    deadline = time.monotonic() + 60.0
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.005)
    try:
        os.unlink(go)
    except FileNotFoundError:
        pass
