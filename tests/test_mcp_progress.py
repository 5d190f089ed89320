"""The MCP server's progress relay, without a server: a notification in flight when the batch
ends is sent whole, never cut off by the end of the forwarding task."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp")

from batchray.api.mcp import ProgressRelay, _forward_progress, _send_progress  # noqa: E402

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class SlowSession:
    """A session whose notifications take ``delay`` seconds to go out, as on a busy pipe."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.sent: list[tuple[float, Any, str]] = []

    async def report_progress(self, progress: float, total: Any, message: str) -> None:
        await anyio.sleep(self.delay)
        self.sent.append((progress, total, message))


async def test_a_notification_in_flight_survives_the_end_of_the_batch() -> None:
    session = SlowSession(delay=0.2)
    ctx = SimpleNamespace(session=session)
    relay = ProgressRelay()
    relay.put({"completed": 10, "failed": 0, "total": 10})
    async with anyio.create_task_group() as tg:
        tg.start_soon(_forward_progress, ctx, relay, 0.01)
        await anyio.sleep(0.05)  # the forwarder took the count and is sending it
        tg.cancel_scope.cancel()  # the batch ended
    await _send_progress(ctx, relay)  # what the call sends after the batch: nothing new here
    assert [p for p, _, _ in session.sent] == [10.0]
    assert session.sent[0][1] == 10.0 and session.sent[0][2]


async def test_counts_that_do_not_move_forward_are_not_sent_again() -> None:
    session = SlowSession(delay=0)
    ctx = SimpleNamespace(session=session)
    relay = ProgressRelay()
    for completed in (5, 5, 3, 8):
        relay.put({"completed": completed, "failed": 0, "total": 8})
        await _send_progress(ctx, relay)
    assert [p for p, _, _ in session.sent] == [5.0, 8.0]


def test_an_import_reports_its_batch_s_progress_to_the_relay(tmp_path) -> None:
    """``batch_import`` through the MCP server's client: the import took no progress callback,
    so a long import sent no progress notification at all, and a cancelled request could not
    name its batch to cancel it."""
    from batchray.api.mcp import _ReportingClient
    from batchray.api.tools import call_tool
    from local_runtime import local_client

    (tmp_path / "rows.csv").write_text("n,name\n" + "".join(f"{i},r{i}\n" for i in range(3000)))
    seen: list[dict[str, Any]] = []
    relay = ProgressRelay()

    def put(progress: dict[str, Any]) -> None:
        seen.append(dict(progress))
        relay.put(progress)

    with local_client(tmp_path / "store", io_root=tmp_path) as client:
        answer = call_tool(_ReportingClient(client, put), "batch_import",
                           {"path": "rows.csv", "dataContextName": "Rows", "options": {"batchSize": 500}})
        assert answer["success"] and answer["itemsCreated"] == 3000, answer
    assert seen, "the import reported no progress"
    assert relay.batch == answer["transactionId"]
    assert max(p.get("completed", 0) for p in seen) == 3000, seen[-3:]


def test_the_other_batch_tools_report_their_batch_s_progress_to_the_relay(tmp_path) -> None:
    """``execute_batch_transaction``, ``batch_schema_operations``, ``batch_component_operations``,
    ``rollback_batch`` and ``drop_batch_backups`` through the MCP server's client: their client
    methods took no progress callback, so a call sent no progress notification however long its
    batch ran (a transaction of thousands of operations, a retype rewriting every item), and a
    cancelled request could not name its batch to cancel it."""
    from batchray.api.mcp import _ReportingClient
    from batchray.api.tools import call_tool
    from local_runtime import local_client

    with local_client(tmp_path / "store", io_root=tmp_path) as client:
        assert client.create_data_context("P", [{"name": "P", "attrs": [{"name": "n", "type": "numeric"}]}]).success
        made = client.create_items("P", "P", [{"n": i} for i in range(500)], create_backups=True)
        assert made.success
        calls = [
            ("execute_batch_transaction", {"operations": [
                {"id": "a", "type": "data", "operation": "create", "target": "P", "data": {"items": [{"n": 1}] * 300}},
                {"id": "b", "type": "data", "operation": "update", "target": "P",
                 "data": {"updates": [{"selector": {"query": "n < 10"}, "values": {"n": 7}}]}}]}),
            ("batch_schema_operations", {"dataContextName": "P", "operations": [
                {"action": "update", "target": "attribute", "attribute": "n", "spec": {"type": "categorical"}}]}),
            ("batch_component_operations", {"operations": [
                {"action": "create", "component": {"type": "caseTable", "name": "t", "properties": {"dataContext": "P"}}}]}),
            ("rollback_batch", {"batchId": made.transaction_id, "force": True}),
            ("drop_batch_backups", {"olderThanSeconds": 0}),
        ]
        for name, args in calls:
            relay = ProgressRelay()
            answer = call_tool(_ReportingClient(client, relay.put), name, args)
            assert answer["success"], (name, answer)
            named = answer.get("transactionId") or answer.get("transactionIds", [None])[-1]
            assert relay.batch is not None and relay.batch == named, (name, relay.batch, answer)
