"""The coordinator service in-process (no Ray) over a local store's executor, for the tests of
its logic (admission, cancellation, feeds): :func:`in_process_services`."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional

from batchray.core.run.service import CoordinatorService
from batchray.core.txn.memory import MemoryBudget
from local_runtime import local_client


class SilentProgress:
    """A progress hook of the service that records nothing; tests subclass it to watch one call."""

    def start(self, txn: str, total: Any, kind: str) -> None:
        pass

    def report(self, *args: Any) -> None:
        pass

    def set_total(self, *args: Any) -> None:
        pass

    def restart(self, *args: Any) -> None:
        pass

    def finish(self, *args: Any) -> None:
        pass

    def memory(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def in_process_services(tmp_path: Any, context: str,
                        make_progress: Optional[Callable[[], Any]] = None) -> Iterator[tuple[Any, Callable[..., Any]]]:
    """``(engine, make_service)``: a local client of two shards with data context ``context``
    (collection ``Rows``, a numeric ``n``), and a maker of services over its executor and
    memory budget (``make_service(**options)`` returns ``(service, progress)``, ``progress``
    made by ``make_progress`` for each, else None). Every service and the engine are closed
    at the end."""
    budget = MemoryBudget(64 << 20, pressure=lambda: False)
    engine = local_client(tmp_path / "store", shards=2, budget=budget)
    engine.create_data_context(context, [{"name": "Rows", "attrs": [{"name": "n", "type": "numeric"}]}])
    services: list[CoordinatorService] = []

    def make_service(**options: Any) -> tuple[CoordinatorService, Any]:
        progress = make_progress() if make_progress is not None else None
        if progress is not None:
            options["progress"] = progress
        service = CoordinatorService(engine.runtime.executor, budget=budget, **options)
        services.append(service)
        return service, progress

    try:
        yield engine, make_service
    finally:
        for service in services:
            service.close()
        engine.close()
