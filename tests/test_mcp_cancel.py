"""A cancelled MCP request whose batch is not known yet: the SDK's client drives the server in
process (its in-memory transport, over JSON-RPC framing or dispatched directly), the store's
client on the in-process runtime (no Ray).

Only the batch a request had named in its progress was cancelled: a request cancelled while
the store's client started (the first call: Ray starting), or while its tool planned, ran its
batch to the end, and it committed, though the client had given up on the call; and a
transaction of many batches ran every one after the one cancelled.
"""
from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")

from mcp import Client  # noqa: E402

from batchray.api.mcp import Backend, build_server  # noqa: E402
from local_runtime import local_client  # noqa: E402

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

ITEMS = [{"values": {"n": i}} for i in range(100)]
ENDED = ("cancelled", "completed", "rolled_back", "failed")
CREATE = {"dataContextName": "P", "collectionName": "P", "items": ITEMS, "options": {"batchSize": 1}}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["legacy", "auto"])
def mode(request) -> str:
    return request.param


def _store_with_context(tmp_path) -> str:
    store = str(tmp_path / "store")
    with local_client(store) as client:
        assert client.create_data_context("P", [{"name": "P", "attrs": [{"name": "n"}]}]).success
    return store


def _held(event: threading.Event) -> None:
    assert event.wait(20), "the test's gate was never opened"


async def _after(store: str) -> tuple[int, list[tuple[str, str]]]:
    """The items of P and the (kind, state) of each batch, read once the server is gone."""
    with local_client(store) as client:
        return client.count_items("P"), [(b["kind"], b["state"]) for b in client.status()]


async def test_a_request_cancelled_while_the_store_s_client_starts_runs_nothing(tmp_path, mode):
    store = _store_with_context(tmp_path)
    connecting, release = threading.Event(), threading.Event()

    def slow_connect(store: str, **settings: Any):
        connecting.set()
        _held(release)  # Ray starting, say
        return local_client(store, io_root=settings["io_root"])

    backend = Backend(store, 2, None, connect=slow_connect, io_root=str(tmp_path))
    async with Client(build_server(backend), mode=mode) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "batch_create_items", CREATE)
            await anyio.to_thread.run_sync(connecting.wait)
            tg.cancel_scope.cancel()  # the client gives up on the call
        release.set()
        with anyio.fail_after(20):
            while not backend.connected:
                await anyio.sleep(0.05)
        await anyio.sleep(0.5)  # what the abandoned call would do, it has done by now
    await anyio.to_thread.run_sync(backend.close)
    count, batches = await _after(store)
    assert count == 0
    assert [kind for kind, _ in batches] == ["create_data_context"], batches


async def test_a_request_cancelled_before_its_batch_is_named_cancels_the_batch_once_named(tmp_path, mode):
    store = _store_with_context(tmp_path)
    planning, release = threading.Event(), threading.Event()

    def gated_connect(store: str, **settings: Any):
        client = local_client(store, io_root=settings["io_root"])
        create_items = client.create_items

        def slow_create_items(*args: Any, callback: Any = None, **kwargs: Any):
            planning.set()
            _held(release)  # still planning (or waiting for a slot): no progress has named the batch
            return create_items(*args, callback=callback, **kwargs)

        client.create_items = slow_create_items
        return client

    backend = Backend(store, 2, None, connect=gated_connect, io_root=str(tmp_path))
    async with Client(build_server(backend), mode=mode) as client:
        await client.call_tool("get_batch_status", {})  # the store's client started
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "batch_create_items", CREATE)
            await anyio.to_thread.run_sync(planning.wait)
            tg.cancel_scope.cancel()
        release.set()
        with anyio.fail_after(20):
            while not any(b["kind"] == "create_items" and b["state"] in ENDED for b in backend.client.status()):
                await anyio.sleep(0.05)
    await anyio.to_thread.run_sync(backend.close)
    count, batches = await _after(store)
    assert count == 0
    assert batches[0] == ("create_items", "cancelled"), batches


async def test_a_cancelled_transaction_starts_no_further_batch(tmp_path, mode):
    """``execute_batch_transaction`` under ``skip`` runs each operation as a batch of its own: a
    cancelled request cancelled (at most) the batch running then, and every later operation
    still ran and committed. No further batch of it starts now: each operation not run yet fails
    CANCELLED."""
    import functools

    store = _store_with_context(tmp_path)
    third, release, finished = threading.Event(), threading.Event(), threading.Event()

    def gated_connect(store: str, **settings: Any):
        client = local_client(store, io_root=settings["io_root"])
        run_plan, execute_transaction = client.run_plan, client.execute_transaction
        started: list[int] = []

        def counted_run_plan(*args: Any, **kwargs: Any):
            started.append(1)
            if len(started) == 3:  # the third operation's batch: the request is cancelled meanwhile
                third.set()
                _held(release)
            return run_plan(*args, **kwargs)

        @functools.wraps(execute_transaction)
        def noted_execute_transaction(*args: Any, **kwargs: Any):
            try:
                return execute_transaction(*args, **kwargs)
            finally:
                finished.set()

        client.run_plan, client.execute_transaction = counted_run_plan, noted_execute_transaction
        return client

    operations = [{"id": f"op{i}", "type": "data", "operation": "create", "target": "P",
                   "data": {"items": [{"n": i}]}} for i in range(20)]
    backend = Backend(store, 2, None, connect=gated_connect, io_root=str(tmp_path))
    async with Client(build_server(backend), mode=mode) as client:
        await client.call_tool("get_batch_status", {})  # the store's client started
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "execute_batch_transaction",
                          {"operations": operations, "options": {"recoveryStrategy": "skip"}})
            await anyio.to_thread.run_sync(third.wait)
            tg.cancel_scope.cancel()
        release.set()
        await anyio.to_thread.run_sync(_held, finished)
    await anyio.to_thread.run_sync(backend.close)
    count, batches = await _after(store)
    assert count <= 3, (count, batches)  # the third may have committed before it could be cancelled
    assert sum(kind == "create_items" for kind, _ in batches) == 3, batches
