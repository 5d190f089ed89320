"""Waiting in tests for something another thread or process brings about."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional


def until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``predicate`` every 10 ms until it returns a true value (returned), failing the
    test after ``timeout`` seconds with ``what`` in the message."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def held(monkeypatch: Any, owner: Any, name: str,
         when: Optional[Callable[..., bool]] = None) -> tuple[threading.Event, threading.Event]:
    """Replace ``owner.name`` (a class's method, or an object's) so that a call for which
    ``when(*args)`` is true (every call without ``when``) sets ``reached`` and waits for
    ``release`` (20 s at most) before it runs; returns ``(reached, release)``."""
    reached, release = threading.Event(), threading.Event()
    original = getattr(owner, name)

    def holding(*args: Any, **kwargs: Any) -> Any:
        if when is None or when(*args):
            reached.set()
            assert release.wait(20), f"{name} was never released"
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, holding)
    return reached, release
