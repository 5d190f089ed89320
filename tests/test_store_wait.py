"""A restarted actor opens its store waiting for it (``open_backend(..., wait=)``): a coordinator
or worker re-created while the PostgreSQL server is down or starting up must not fail its
constructor, since Ray never restarts an actor whose creation task raised (the mixed soak,
tests/mixed_soak.py, found a coordinator lost that way). A first start does not wait: a wrong
URL fails at once."""
from __future__ import annotations

import time

import pytest

from batchray.core.storage import backends
from batchray.errors import ParticipantUnavailable

URL = "postgresql://batchray@db.invalid/store"


def _server(monkeypatch, answers_after: int) -> list[float]:
    """PgBackend replaced by one whose first ``answers_after`` openings find the server starting up."""
    attempts: list[float] = []

    class StartingUp:
        def __init__(self, location, shards) -> None:
            attempts.append(time.monotonic())
            if len(attempts) <= answers_after:
                raise ParticipantUnavailable("cannot connect: the database system is starting up")

    monkeypatch.setattr(backends, "PgBackend", StartingUp)
    return attempts


def test_a_restarted_actor_waits_for_its_store(monkeypatch):
    attempts = _server(monkeypatch, answers_after=3)
    backend = backends.open_backend(URL, wait=30)
    assert type(backend).__name__ == "StartingUp" and len(attempts) == 4
    assert all(b > a for a, b in zip(attempts, attempts[1:]))


def test_without_a_wait_or_past_it_the_store_error_is_raised(monkeypatch):
    attempts = _server(monkeypatch, answers_after=10**6)
    with pytest.raises(ParticipantUnavailable):
        backends.open_backend(URL)
    assert len(attempts) == 1
    attempts.clear()
    started = time.monotonic()
    with pytest.raises(ParticipantUnavailable, match="starting up"):
        backends.open_backend(URL, wait=0.5)
    assert len(attempts) >= 2 and time.monotonic() - started < 2.5
