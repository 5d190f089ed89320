"""``batchray mcp`` end to end: the SDK's stdio client drives a real server subprocess.

One server (and so one local Ray, about ten seconds to start) serves the whole module; the
last test closes the client and checks that the server, and the Ray it started, are gone.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

mcp = pytest.importorskip("mcp")
psutil = pytest.importorskip("psutil")

import mcp_types as types  # noqa: E402
from mcp.client.session import ClientSession  # noqa: E402
from mcp.client.stdio import PROCESS_TERMINATION_TIMEOUT, StdioServerParameters, stdio_client  # noqa: E402

from batchray.api.tools import TOOLS  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.anyio, pytest.mark.timeout(180)]

REPO_ROOT = Path(__file__).resolve().parent.parent
CONTEXT = "People"
ITEMS = 10_000


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Server:
    session: ClientSession
    stack: AsyncExitStack
    errlog_path: Path
    process: Any  # psutil.Process of the server
    stream_errors: list[Exception] = field(default_factory=list)
    closed: bool = False
    state: dict[str, Any] = field(default_factory=dict)

    def descendants(self) -> list[Any]:
        try:
            return self.process.children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    async def close(self) -> float:
        """Close the client (which closes the server's stdin); seconds it took."""
        if self.closed:
            return 0.0
        self.closed = True
        started = time.monotonic()
        await self.stack.aclose()
        return time.monotonic() - started

    def log(self) -> str:
        return self.errlog_path.read_text(errors="replace")

    def diagnosis(self) -> str:
        """What a failed call leaves to go by: the end of the server's stderr and, where py-spy
        is installed, the Python stacks of the server and of the Ray actors it started."""
        parts = [f"server stderr (last 4,000 characters):\n{self.log()[-4000:]}"]
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
        for proc in [self.process, *self.descendants()] if spy else []:
            try:
                name = proc.name()
                if proc is not self.process and not name.startswith("ray::"):
                    continue
                dump = subprocess.run([spy, "dump", "--pid", str(proc.pid)], capture_output=True, text=True,
                                      timeout=20)
                parts.append(f"{name} (pid {proc.pid}):\n{(dump.stdout or dump.stderr)[-3000:]}")
            except (psutil.Error, subprocess.SubprocessError, OSError) as exc:
                parts.append(f"pid {proc.pid}: no stack ({exc})")
        return "\n\n".join(parts)


def _server_process(store: Path) -> Any:
    for child in psutil.Process().children():
        try:
            if str(store) in child.cmdline():
                return child
        except psutil.NoSuchProcess:
            continue
    raise AssertionError("the server subprocess is not among this process's children")


def _end(processes: list[Any]) -> list[int]:
    """Kill those of ``processes`` (all started by this module's server) still alive."""
    left = []
    for proc in processes:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc.pid)
                proc.kill()
        except psutil.NoSuchProcess:
            continue
    return left


@pytest.fixture(scope="module")
async def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mcp")
    store = tmp / "store"
    errlog_path = tmp / "server-stderr.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env["PYTHONUNBUFFERED"] = "1"
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "batchray.api.cli", "mcp", "--store", str(store), "--workers", "2"],
        env=env, cwd=str(REPO_ROOT),
    )
    stack = AsyncExitStack()
    errlog = stack.enter_context(open(errlog_path, "w"))
    stream_errors: list[Exception] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, Exception):
            stream_errors.append(message)  # e.g. a line on stdout that is not JSON-RPC

    read, write = await stack.enter_async_context(stdio_client(params, errlog=errlog))
    process = _server_process(store)
    session = await stack.enter_async_context(ClientSession(read, write, message_handler=on_message))
    srv = Server(session, stack, errlog_path, process, stream_errors)
    spawned: list[Any] = []
    try:
        started = time.monotonic()
        await session.initialize()
        srv.state["initialize_seconds"] = time.monotonic() - started
        yield srv
    finally:
        spawned = [srv.process, *srv.descendants()]
        await srv.close()
        time.sleep(0.5)
        left = _end(spawned)
        if left:
            print(f"killed leftover processes {left}", file=sys.stderr)


async def call(srv: Server, name: str, args: dict[str, Any], **kw: Any) -> types.CallToolResult:
    try:
        result = await srv.session.call_tool(name, args, read_timeout_seconds=120, **kw)
    except Exception as exc:  # a timeout among them: say what the server was doing
        raise AssertionError(f"{name} failed: {exc!r}\n{srv.diagnosis()}") from exc
    assert isinstance(result, types.CallToolResult)
    return result


def payload(result: types.CallToolResult) -> dict[str, Any]:
    import json

    text = json.loads(result.content[0].text)
    assert result.structured_content == text
    return text


async def test_initialize_and_list_tools(server: Server) -> None:
    assert server.state["initialize_seconds"] < 10, "initialize must not wait for Ray"
    info = server.session.initialize_result
    assert info is not None and info.server_info.name == "batchray"
    started = time.monotonic()
    listed = await server.session.list_tools()
    assert time.monotonic() - started < 5
    by_name = {tool.name: tool for tool in listed.tools}
    assert set(by_name) == set(TOOLS)
    for name, tool in TOOLS.items():
        schema = by_name[name].input_schema
        assert schema == tool.args.model_json_schema()
        assert schema["type"] == "object" and schema["properties"]
    assert by_name["get_items"].annotations.read_only_hint is True
    assert by_name["get_cases"].annotations.read_only_hint is True


async def test_bad_call_is_a_structured_error(server: Server) -> None:
    """Bad arguments are refused before anything starts: the first call of the server (its
    store's Ray not started yet) hears no "starting the store's Ray actors" progress, and no
    Ray is started for it."""
    heard: list[Any] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        heard.append(message)

    result = await call(server, "batch_create_items", {
        "dataContextName": CONTEXT, "collectionName": CONTEXT, "items": [{"values": {"name": "x"}}],
        "options": {"batchSize": 0},
    }, progress_callback=on_progress)
    await anyio.sleep(0.2)  # a notification sent before the answer is handled as a task of its own
    assert heard == [], heard
    def command(proc: Any) -> str:
        try:
            return " ".join(proc.cmdline())
        except psutil.Error:
            return ""

    assert not any("raylet" in command(p) for p in server.descendants()), "a refused call started Ray"
    assert result.is_error
    body = payload(result)
    assert body["success"] is False
    assert body["error"]["code"] == "VALIDATION"
    assert body["error"]["details"]["field"] == "options.batchSize"
    assert body["error"]["message"]

    unknown = await call(server, "no_such_tool", {})
    assert unknown.is_error and payload(unknown)["error"]["code"] == "NOT_FOUND"


async def test_a_store_path_that_cannot_be_a_store_is_an_error_not_retryable(tmp_path) -> None:
    """A store path that is a file (or cannot be made) fails every call the same way until it is
    mended: a VALIDATION error naming the store, not retryable, where it was UNAVAILABLE with
    retryable true (an agent told to try again would call forever). Nothing starts: the check
    fails before Ray would."""
    store = tmp_path / "a-file"
    store.write_text("not a store")
    params = StdioServerParameters(command=sys.executable, args=["-m", "batchray.api.cli", "mcp", "--store", str(store)],
                                   env={k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")},
                                   cwd=str(REPO_ROOT))
    with open(tmp_path / "stderr.log", "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                for _ in range(2):
                    result = await session.call_tool("get_items", {"dataContextName": CONTEXT}, read_timeout_seconds=60)
                    assert result.is_error
                    error = payload(result)["error"]
                    assert (error["code"], error["retryable"]) == ("VALIDATION", False), error
                    assert "not a directory" in error["message"] and str(store) in error["message"], error
    assert "batchray mcp: stopped (client disconnected)" in (tmp_path / "stderr.log").read_text()


async def ensure_context(server: Server) -> None:
    if server.state.get("context"):
        return
    result = await call(server, "create_data_context", {
        "name": CONTEXT,
        "collections": [{"name": CONTEXT, "attrs": [{"name": "name"}, {"name": "age", "type": "numeric"}]}],
    })
    assert not result.is_error, payload(result)
    assert payload(result)["success"] is True
    server.state["context"] = True


async def create_items(server: Server, **kw: Any) -> dict[str, Any]:
    await ensure_context(server)
    items = [{"values": {"name": f"p{i}", "age": i % 90}} for i in range(ITEMS)]
    result = await call(server, "batch_create_items", {
        "dataContextName": CONTEXT, "collectionName": CONTEXT, "items": items, "options": {"batchSize": 50},
    }, **kw)
    body = payload(result)
    assert not result.is_error, body
    assert body["success"] is True and body["itemsCreated"] == ITEMS
    assert len(body["itemIds"]) == ITEMS
    server.state["batch_id"] = body["transactionId"]
    server.state["first_id"] = body["itemIds"][0]
    return body


async def ensure_items(server: Server) -> None:
    if "first_id" not in server.state:
        await create_items(server)


async def test_create_context(server: Server) -> None:
    await ensure_context(server)


async def test_create_items_with_progress(server: Server) -> None:
    await ensure_context(server)  # the first call starts Ray: not part of what is timed below
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    done: dict[str, float] = {}

    async def create() -> None:
        await create_items(server, progress_callback=on_progress)
        done["create"] = time.monotonic()

    async def ping() -> None:
        await anyio.sleep(0.05)
        await server.session.send_ping()
        done["ping"] = time.monotonic()

    async with anyio.create_task_group() as tg:
        tg.start_soon(create)
        tg.start_soon(ping)
    assert done["ping"] < done["create"], "the server must answer while a batch runs"

    # the client runs each progress callback as a task of its own: the last one (sent before the
    # response) can still be pending when call_tool returns
    with anyio.move_on_after(5):
        while not seen or seen[-1][0] < ITEMS:
            await anyio.sleep(0.02)
    assert seen, "no progress notification arrived"
    values = [p for p, _, _ in seen]
    assert values == sorted(values) and len(set(values)) == len(values), "progress must increase"
    assert values[-1] == ITEMS and seen[-1][1] == ITEMS
    assert all(message for _, _, message in seen)


async def test_update_with_expression(server: Server) -> None:
    await ensure_items(server)
    first = server.state["first_id"]
    result = await call(server, "batch_update_items", {
        "dataContextName": CONTEXT,
        "updates": [{"selector": {"query": "age >= 88"}, "values": {"age": "=age + 1"}},
                    {"selector": {"itemId": first}, "values": {"name": "first"}}],
    })
    body = payload(result)
    assert not result.is_error, body
    assert body["success"] is True

    read = await call(server, "get_items", {"dataContextName": CONTEXT, "collectionName": CONTEXT,
                                            "query": "age >= 89", "limit": 10_000})
    body = payload(read)
    assert not read.is_error, body
    # ages were i % 90: 88 and 89 became 89 and 90
    ages = sorted({item["values"]["age"] for item in body["items"]})
    assert ages == [89, 90]
    assert body["total"] == len(body["items"]) == sum(1 for i in range(ITEMS) if i % 90 >= 88)

    head = payload(await call(server, "get_items", {"dataContextName": CONTEXT, "limit": 1}))
    assert head["items"][0]["id"] == first and head["items"][0]["values"]["name"] == "first"


async def test_batch_status(server: Server) -> None:
    await ensure_items(server)
    batch_id = server.state["batch_id"]
    result = await call(server, "get_batch_status", {"batchId": batch_id})
    body = payload(result)
    assert not result.is_error, body
    assert body["success"] is True
    assert body["state"] == "completed"
    assert body["progress"]["completed"] == ITEMS


async def test_a_cancelled_request_cancels_its_batch(server: Server) -> None:
    """MCP's cancellation: a receiver of ``notifications/cancelled`` SHOULD stop processing the
    request. The batch a cancelled call had started ran on and committed, and its id was told to
    no one. Now the progress messages name the batch, and the batch of a cancelled request is
    cancelled with rollback: it ends ``cancelled``, and nothing of it stays."""
    import re

    await ensure_context(server)  # Ray started
    context = "Cancelled"
    made = await call(server, "create_data_context", {
        "name": context, "collections": [{"name": context, "attrs": [{"name": "name"}]}]})
    assert not made.is_error, payload(made)
    messages: list[str] = []

    heard: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        heard.append((progress, message))
        if progress > 0 and message:
            messages.append(message)

    items = [{"values": {"name": f"c{i}"}} for i in range(10_000)]  # 10,000 chunks of one item: many seconds
    async with anyio.create_task_group() as tg:
        async def slow_call() -> None:
            await server.session.call_tool("batch_create_items", {
                "dataContextName": context, "collectionName": context, "items": items,
                "options": {"batchSize": 1}}, read_timeout_seconds=120, progress_callback=on_progress)

        tg.start_soon(slow_call)
        with anyio.move_on_after(60):
            while not messages:
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert messages, f"no progress named the batch: {heard[-5:]}\n{server.log()[-3000:]}"  # the SDK sends notifications/cancelled for the request
    named = re.match(r"batch (\S+): ", messages[0])
    assert named, messages[0]
    batch_id = named.group(1)
    state = None
    with anyio.move_on_after(60):
        while state not in ("cancelled", "rolled_back", "completed", "failed"):
            await anyio.sleep(0.2)
            state = payload(await call(server, "get_batch_status", {"batchId": batch_id}))["state"]
    assert state == "cancelled", f"{state}\n{server.log()[-3000:]}"
    left = payload(await call(server, "get_items", {"dataContextName": context, "limit": 1}))
    assert left["total"] == 0, left


async def test_stdout_carries_only_the_protocol(server: Server) -> None:
    # the client hands every stdout line that is not JSON-RPC to the message handler
    assert server.stream_errors == []
    log = server.log()
    assert "Ray" in log, "Ray's start-up lines belong on stderr"


async def test_server_exits_when_stdin_closes(server: Server) -> None:
    processes = [server.process, *server.descendants()]
    assert len(processes) > 2, "Ray's processes should be running by now"
    seconds = await server.close()
    deadline = time.monotonic() + 15
    alive = processes
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in processes if _alive(p)]
    left = _end(alive)
    assert not left, f"processes still running after the client closed: {left}"
    # the server stopped on its own, within the grace the client gives before SIGTERM
    assert "batchray mcp: stopped (client disconnected)" in server.log(), server.log()[-2000:]
    assert seconds < PROCESS_TERMINATION_TIMEOUT


def _alive(proc: Any) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
