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


__all__ = ["Client", "local_client"]
