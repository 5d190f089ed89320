"""The MCP server: every tool in :data:`batchray.api.tools.TOOLS`, served over stdio.

``batchray mcp --store DIR`` runs :func:`serve`. The server answers ``initialize`` and
``tools/list`` at once; the store's client (and with it Ray, about ten seconds for a local
one) starts on the first ``tools/call``. Tool calls run in worker threads, so the protocol
stays responsive while a batch runs, and return the tool's JSON result twice: as text content
and as ``structuredContent``, with ``isError`` set when ``success`` is false.

A call whose request carries a ``progressToken`` gets ``notifications/progress`` while its
batch runs: ``progress`` counts the items processed so far, ``total`` the items in the batch,
and ``message`` says what is happening, naming the batch (``batch ID: ...``, the id
``get_batch_status`` and ``cancel_batch_operation`` take). The values only ever increase, as the
protocol asks. A request the client cancels (``notifications/cancelled``) cancels the batch it
started, with rollback: an atomic batch leaves nothing, a non-atomic one keeps what it had
committed (as ``cancel_batch_operation`` does); the call is not answered, as the protocol says.
A request cancelled before its batch is known is not forgotten: cancelled while the store's
client starts (the first call), its tool never runs; cancelled later, each batch the call names
from then on is cancelled as it is named, and no further batch of a transaction
(``execute_batch_transaction``) starts.

Standard output belongs to the protocol. The SDK's stdio transport points file descriptor 1
at standard error while it serves, so whatever Ray, its workers or a stray ``print`` write
lands on stderr; Ray is stopped before that diversion ends. Closing the server's stdin (what
a client does to disconnect), SIGTERM or SIGINT stop Ray, if this server started it, and end
the process.

File paths of ``batch_import`` and ``batch_export`` stay inside the I/O root, fixed when the
server starts: ``--io-root``, else ``$BATCHRAY_IO_ROOT``, else the working directory
(:func:`batchray.api.tools.io_root_for`).

Errors come back as ``{code, message, details}`` with every password redacted
(:func:`batchray.core.storage.postgres.url.redact`, which importing it installs for every
structured error): the store's URL in ``details.store`` included. A call that cannot start the
store's client answers STORE (not retryable) when the store's path cannot hold a store, else
UNAVAILABLE (retryable); the next call tries again.
"""
from __future__ import annotations

import inspect
import json
import logging
import os
import signal
import sys
import threading
from typing import Any, Callable, Optional

import anyio
import anyio.to_thread
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from batchray import __version__
from batchray.api.client import DEFAULT_STORE
from batchray.core.storage.postgres.url import redact
from batchray.errors import BatchrayError, CancelledError, ParticipantUnavailable, StoreError, error_payload
from batchray.api.tools import TOOLS, call_tool, io_root_for, validate_args

PROGRESS_INTERVAL = 0.25
"""Seconds between progress notifications, at most one per interval per call."""

READ_ONLY_TOOLS = frozenset({"get_items", "get_cases", "get_batch_status"})

INSTRUCTIONS = (
    "Transactional batch operations over CODAP-style data contexts. Batches are all-or-nothing "
    "by default; failures come back with isError and a structured error {code, message, details}. "
    "The first tool call starts the store's Ray actors and can take several seconds."
)


class Backend:
    """The store's client, connected on first use, from a worker thread. ``io_root``: the tools'
    I/O root, decided now (:func:`batchray.api.tools.io_root_for`: unset, the environment's or
    the working directory)."""

    def __init__(self, store: str, workers: int, address: Optional[str],
                 connect: Optional[Callable[..., Any]] = None, io_root: Optional[str] = None) -> None:
        self.store = store
        self.workers = workers
        self.address = address
        self.io_root = io_root_for(io_root)
        self._connect = connect
        self._lock = threading.Lock()
        self.client: Any = None
        self.signals_rearmed = False

    @property
    def connected(self) -> bool:
        return self.client is not None

    def get(self) -> Any:
        with self._lock:
            if self.client is None:
                connect = self._connect
                if connect is None:
                    from batchray.api.client import connect
                self.client = connect(self.store, workers=self.workers, address=self.address, progress=False,
                                      io_root=self.io_root)
            return self.client

    def close(self) -> None:
        """Close the client and stop Ray if this process started it; a no-op when never connected."""
        client, self.client = self.client, None
        if client is None:
            return
        try:
            client.close()
        except Exception as exc:  # noqa: BLE001 - closing is best effort; Ray still has to stop
            print(f"batchray mcp: closing the client failed: {exc}", file=sys.stderr)
        if getattr(client.runtime, "started_ray", False):  # a Ray runtime that started Ray here
            _stop_local_ray()


PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError, PermissionError)
"""What opening a store whose path cannot hold one raises: no retry mends it."""


def _connect_error(exc: Exception, store: str) -> BatchrayError:
    """Why the store's client did not start, as a structured error naming the store: a path
    that cannot be a store (:data:`PATH_ERRORS`) is a STORE error, not retryable; anything else
    (Ray not starting, a server not answering) UNAVAILABLE, retryable."""
    message = f"could not connect to the store: {type(exc).__name__}: {exc}"
    kind = StoreError if isinstance(exc, PATH_ERRORS) else ParticipantUnavailable
    return kind(message, store=redact(str(store)))


def _stop_local_ray() -> None:
    """``ray.shutdown()`` for the local Ray this process started, in well under two seconds
    (what MCP clients wait after closing stdin before they signal the server)."""
    import ray

    try:
        # Ray stops its processes one by one, giving each a second after SIGTERM; the
        # autoscaler's monitor always needs the full second. It keeps no state: kill it first.
        from ray._private import worker

        node = worker._global_node
        for info in (node.all_processes.get("monitor", []) if node is not None else []):
            info.process.kill()
    except Exception:  # noqa: BLE001 - private API: without it, shutdown is only slower
        pass
    ray.shutdown()


class ProgressRelay:
    """The latest progress of one call: written by the batch's thread, read by the event loop.
    Once the call's request is cancelled (:meth:`abandon`), each batch its progress names from
    then on is cancelled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: Optional[dict[str, Any]] = None
        self._cancel: Optional[Callable[[str], None]] = None
        self.sent: Optional[float] = None
        self.batch: Optional[str] = None  # the batch the call runs now, once its progress names it

    def put(self, progress: dict[str, Any]) -> None:
        """The call's latest progress; a batch it names first after :meth:`abandon` is cancelled
        here, in the thread that reports it (before its run goes on)."""
        named = progress.get("batchId")
        with self._lock:
            self._latest = dict(progress)
            cancel = self._cancel if named is not None and named != self.batch else None
            self.batch = named or self.batch
        if cancel is not None:
            cancel(named)

    def abandon(self, cancel: Callable[[str], None]) -> Optional[str]:
        """The call's request was cancelled: ``cancel`` is called with each batch named from now
        on; the batch named already (None if none), which the caller cancels, is returned."""
        with self._lock:
            self._cancel = cancel
            return self.batch

    @property
    def abandoned(self) -> bool:
        """Whether the call's request was cancelled."""
        return self._cancel is not None

    def take(self) -> Optional[dict[str, Any]]:
        with self._lock:
            latest, self._latest = self._latest, None
            return latest


class _ReportingClient:
    """The client as tools see it, with a progress callback given to every method that takes one
    (``create_items``, ``update_items``, ``delete_items`` and whatever else grows one), and
    ``stopped`` as the ``should_stop`` of every method that takes one (``execute_transaction``:
    no batch of it starts once the call's request is cancelled)."""

    def __init__(self, client: Any, report: Callable[[dict[str, Any]], None],
                 stopped: Callable[[], bool] = lambda: False) -> None:
        self._client = client
        self._report = report
        self._stopped = stopped

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        takes = _keywords(attr) & {"callback", "should_stop"} if callable(attr) else set()
        if not takes:
            return attr
        report, stopped = self._report, self._stopped

        def with_progress(*args: Any, callback: Optional[Callable[[dict], Any]] = None, **kwargs: Any) -> Any:
            def both(progress: dict[str, Any]) -> None:
                report(progress)
                if callback is not None:
                    callback(progress)

            if "callback" in takes:
                kwargs["callback"] = both
            if "should_stop" in takes:
                kwargs.setdefault("should_stop", stopped)
            return attr(*args, **kwargs)

        return with_progress


def _keywords(fn: Callable[..., Any]) -> set[str]:
    """The names of ``fn``'s parameters (none when they cannot be read)."""
    try:
        return set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return set()


def _progress_message(progress: dict[str, Any], total: Optional[float]) -> str:
    done, failed = progress.get("completed", 0), progress.get("failed", 0)
    parts = [f"{done:,} of {int(total):,} items" if total else f"{done:,} items"]
    if failed:
        parts.append(f"{failed:,} failed")
    state = progress.get("state")
    if state and state != "running":
        parts.append(str(state))
    elif progress.get("throughput"):
        parts.append(f"{progress['throughput']:,.0f} items/s")
        if progress.get("etaSeconds") is not None:
            parts.append(f"about {progress['etaSeconds']:.0f} s left")
    operation = progress.get("currentOperation")
    text = f"{operation}: " + ", ".join(parts) if operation else ", ".join(parts)
    return f"batch {progress['batchId']}: {text}" if progress.get("batchId") else text


async def _send_progress(ctx: Any, relay: ProgressRelay) -> None:
    """Send the relay's latest progress, if it moved forward since the last notification."""
    progress = relay.take()
    if progress is None:
        return
    done = float(progress.get("completed", 0) + progress.get("failed", 0))
    if relay.sent is not None and done <= relay.sent:
        return
    relay.sent = done
    # a total below the count is no total (an update's plan counts selectors, its progress items)
    total = progress.get("total") or 0
    total = float(total) if total and total >= done else None
    message = progress.get("message") or _progress_message(progress, total)
    try:
        await ctx.session.report_progress(done, total, message)
    except Exception as exc:  # noqa: BLE001 - a lost notification must not fail the call
        print(f"batchray mcp: progress notification not sent: {exc}", file=sys.stderr)


async def _forward_progress(ctx: Any, relay: ProgressRelay, interval: float) -> None:
    """Send the relay's progress every ``interval`` seconds until cancelled. A send in flight is
    shielded from the cancellation: the relay forgets what it handed out, so a notification
    cancelled half-way would be lost for good (the final one included)."""
    while True:
        await anyio.sleep(interval)
        with anyio.CancelScope(shield=True):
            await _send_progress(ctx, relay)


def _tool_list() -> list[types.Tool]:
    tools = []
    for tool in TOOLS.values():
        schema = tool.schema_json()
        annotations = types.ToolAnnotations(read_only_hint=True) if tool.name in READ_ONLY_TOOLS else None
        tools.append(types.Tool(name=tool.name, description=schema["description"],
                                input_schema=schema["inputSchema"], annotations=annotations))
    return tools


def _result(payload: dict[str, Any]) -> types.CallToolResult:
    text = json.dumps(payload, default=str)
    return types.CallToolResult(
        content=[types.TextContent(text=text)],
        structured_content=json.loads(text),  # the same JSON, with non-JSON values as strings
        is_error=payload.get("success") is False,
    )


def build_server(backend: Backend) -> Server:
    """A low-level MCP server whose tools run through :func:`batchray.api.tools.call_tool`."""
    tools = _tool_list()

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        name, args = params.name, params.arguments if params.arguments is not None else {}
        relay = ProgressRelay()

        def refused() -> Optional[dict[str, Any]]:
            try:
                validate_args(name, args)
            except BatchrayError as exc:
                return error_payload(exc)
            return None

        def run() -> dict[str, Any]:
            try:
                client = backend.get()
            except BatchrayError as exc:
                return error_payload(exc)
            except Exception as exc:  # noqa: BLE001 - the contract is a structured error
                return error_payload(_connect_error(exc, backend.store))
            if relay.abandoned:  # cancelled while the client started: no one waits for this call
                return error_payload(CancelledError(f"the {name} request was cancelled before it ran"))
            return call_tool(_ReportingClient(client, relay.put, lambda: relay.abandoned), name, args)

        # bad arguments are refused before anything starts, or is said to start (in a thread:
        # a call's arguments may hold many items to check)
        bad = await anyio.to_thread.run_sync(refused)
        if bad is not None:
            return _result(bad)
        if not backend.connected:
            relay.put({"completed": 0, "message": "starting the store's Ray actors (first call)"})
            await _send_progress(ctx, relay)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_forward_progress, ctx, relay, PROGRESS_INTERVAL)
            # abandon_on_cancel: a cancelled request (or a server shutting down) does not wait for
            # the batch; the batch itself goes on to commit or roll back as a whole
            try:
                payload = await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
            except anyio.get_cancelled_exc_class():
                batch = relay.abandon(lambda named: _cancel_now(backend, named))
                with anyio.CancelScope(shield=True):
                    if batch is not None:
                        await anyio.to_thread.run_sync(_cancel_now, backend, batch)
                raise
            tg.cancel_scope.cancel()
        if backend.connected and not backend.signals_rearmed:
            _rearm_signal_handlers()
            backend.signals_rearmed = True
        await _send_progress(ctx, relay)  # the final count, when it moved
        return _result(payload)

    return Server("batchray", version=__version__, instructions=INSTRUCTIONS,
                  on_list_tools=list_tools, on_call_tool=call)


def _cancel_now(backend: Any, batch: str) -> None:
    """Cancel ``batch`` (with rollback), a batch of a request the client cancelled. A batch that
    ended meanwhile has nothing to cancel; what the cancellation answers goes to stderr, the
    call itself being answered no more. Blocking: from a worker thread."""
    client = backend.client
    if client is None:
        return
    try:
        answer = client.cancel(batch, rollback=True)
        print(f"batchray mcp: cancelled request: batch {batch}: {answer.get('state', answer)}", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - the request is gone; say why its batch was not cancelled
        print(f"batchray mcp: cancelled request: batch {batch} not cancelled: {exc}", file=sys.stderr)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _rearm_signal_handlers() -> None:
    """Put Python's handlers back in front of Ray's: Ray's native core worker installs a
    SIGTERM handler that aborts the process, which would skip stopping Ray. Main thread only."""
    for signum in STOP_SIGNALS:
        handler = signal.getsignal(signum)
        if handler is not None:
            signal.signal(signum, handler)


async def _stop_on_signals(scope: anyio.CancelScope, stop: dict[str, Any]) -> None:
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async for signum in signals:
            stop.update(reason=signal.Signals(signum).name, code=128 + signum)
            scope.cancel()
            return


async def _serve(backend: Backend, exit_process: bool) -> None:
    server = build_server(backend)
    stop: dict[str, Any] = {"reason": "error", "code": 1}
    try:
        async with stdio_server() as (read_stream, write_stream):
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_stop_on_signals, tg.cancel_scope, stop)
                    await server.run(read_stream, write_stream, server.create_initialization_options())
                    stop.update(reason="client disconnected", code=0)
                    tg.cancel_scope.cancel()
            finally:
                # still inside the transport: fd 1 points at stderr while Ray stops
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(backend.close)
                if exit_process and stop["code"] > 128:
                    # signalled while the client still holds stdin open: leaving the transport
                    # would wait for the thread blocked reading it
                    _end_process(stop)
    except Exception as exc:
        # a client that leaves without reading its last replies breaks the pipe: not an error
        if not _only(exc, (BrokenPipeError, ConnectionResetError)):
            raise
        stop.update(reason="client disconnected", code=0)
    print(f"batchray mcp: stopped ({stop['reason']})", file=sys.stderr, flush=True)


def _end_process(stop: dict[str, Any]) -> None:
    print(f"batchray mcp: stopped ({stop['reason']})", file=sys.stderr, flush=True)
    _exit_now(stop["code"])


def _exit_now(code: int) -> None:
    """End the process without the interpreter's teardown (Ray has been stopped already)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _only(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    """Whether ``exc`` is one of ``kinds``, or a group of nothing else."""
    nested = getattr(exc, "exceptions", None)
    if nested is not None:
        return all(_only(e, kinds) for e in nested)
    return isinstance(exc, kinds)


def serve(store: str = DEFAULT_STORE, workers: int = 2, address: Optional[str] = None, *,
          io_root: Optional[str] = None, exit_process: bool = True) -> None:
    """Serve the tools over stdio until the client closes stdin, or SIGTERM/SIGINT.

    With ``exit_process`` (the default, as ``batchray mcp`` runs it) the process ends as soon as
    Ray has stopped, with status 0 when the client disconnected and 128 + the signal's number
    when signalled. Left to itself, the interpreter's teardown of Ray's native threads takes
    over a second more, and MCP clients signal a server that is not gone two seconds after they
    closed its stdin; and a signal would leave the process waiting for stdin to close.
    """
    anyio.run(_serve, Backend(str(store), workers, address, io_root=io_root), exit_process)
    if exit_process and "ray" in sys.modules:
        _exit_now(0)
