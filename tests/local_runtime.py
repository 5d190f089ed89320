"""The in-process runtime for tests: the front object over :class:`LocalRuntime`, no Ray.

``local_client(store, shards=2, ...)`` is ``batchray.connect(store, runtime="local",
progress=False, ...)``; the runtime's internals (log, participants, driver) are on
``client.runtime``.
"""
from __future__ import annotations

import os
from typing import Any

from batchray.api.client import Client, connect


def local_client(store: str | os.PathLike, **settings: Any) -> Client:
    return connect(store, runtime="local", progress=False, **settings)


def fail_nth_apply(client: Client, monkeypatch: Any, n: int = 2) -> list[Any]:
    """Make the ``n``-th chunk any participant of ``client`` applies fail whole (an
    ``InternalError``: a chunk lost to a disk fault); the chunks applied, in order, are listed in
    the list returned."""
    from batchray.errors import InternalError

    calls: list[Any] = []
    for participant in client.runtime.participants.values():
        def nth_fails(ref, chunk, prepare=False, commit=False, _apply=participant.apply):
            calls.append(chunk)
            if len(calls) == n:
                raise InternalError("the disk is on fire")
            return _apply(ref, chunk, prepare=prepare, commit=commit)

        monkeypatch.setattr(participant, "apply", nth_fails)
    return calls


__all__ = ["Client", "fail_nth_apply", "local_client"]
