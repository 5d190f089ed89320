"""A restarted actor waits for its store (``until_store_answers``, ``open_backend(..., wait=)``):
a coordinator or worker re-created while the PostgreSQL server is down, starting up or refusing
connections must not fail its constructor, since Ray never restarts an actor whose creation
task raised (the mixed soak, tests/mixed_soak.py, lost a coordinator and then a worker that
way). The whole constructor is tried again, what a failed try opened closed first; a
permanent error is raised at once, and a first start does not wait: a wrong URL fails at once."""
from __future__ import annotations

import time

import pytest

from batchray.core.storage import backends
from batchray.errors import ParticipantUnavailable, StoreError

URL = "postgresql://batchray@db.invalid/store"


def _server(monkeypatch, answers_after: int) -> list[float]:
    """PgBackend replaced by one whose first ``answers_after`` openings find the server starting up."""
    attempts: list[float] = []

    class StartingUp:
        def __init__(self, location, shards, create=True) -> None:
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


def test_a_constructor_is_tried_again_whole_after_a_cleanup_and_a_permanent_error_is_not():
    tries: list[str] = []

    def start() -> str:  # the store opened, then refused in the middle (a connection limit reached)
        tries.append("start")
        if tries.count("start") < 3:
            raise ParticipantUnavailable("too many connections for role")
        return "started"

    assert backends.until_store_answers(start, 30, cleanup=lambda: tries.append("cleanup")) == "started"
    assert tries == ["start", "cleanup", "start", "cleanup", "start"]

    def refused() -> None:
        tries.append("refused")
        raise StoreError("the server refused the write: it is read-only")

    with pytest.raises(StoreError):
        backends.until_store_answers(refused, 30)
    assert tries.count("refused") == 1  # not retryable: raised at once
