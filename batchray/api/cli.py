"""The ``batchray`` command line.

    batchray demo [--items N] [--store DIR] [--workers N]
    batchray tools
    batchray tool NAME [--store DIR] [--address ADDR] [--io-root DIR] [-v] (--json '{...}' | --args-file FILE | -)
    batchray status [BATCH_ID] [--store DIR] [-v]
    batchray stop [--store DIR] [-v]
    batchray recover [--store DIR] [-v]
    batchray mcp [--store DIR] [--io-root DIR]

``tool`` prints the result JSON and exits 1 when ``success`` is false, 2 on bad usage. Every
failure of a command prints the structured error ``{success: false, error: {code, message,
details}}`` and exits 1, never a traceback; no password appears in it (errors are redacted by
:func:`batchray.core.storage.postgres.url.redact`, which importing it installs). Bad usage of
``tool``, ``status``, ``recover`` or ``stop`` (an unknown option, a missing or malformed
argument) prints the structured ``VALIDATION`` error on stdout too, and the usage on stderr,
and exits 2.

``status`` and ``recover`` of a SQLite directory that holds no store print the structured
``NOT_FOUND`` error and exit 1, creating nothing. ``status`` without a batch id prints the store's owner (see
:mod:`batchray.core.storage.ownership`; null when nothing serves the store, and the Ray that
``status`` starts to read it ends with it) and its recent batches. ``stop`` stops the store's
coordinator and workers (wherever they run: the driver joins the store's owner first), which
releases the store's ownership, and prints ``{success: true, stopped: OWNER}``. Without
``--address``, a store that nothing serves (no live owner) has nothing to stop: ``stop`` then
starts no Ray, creates no store, and prints ``stopped: null``.

``tool``, ``status``, ``recover`` and ``stop`` print only their JSON on stdout: whatever else would be
printed there (a library's output) goes to stderr, and Ray's own log lines (its INFO lines, the
token-authentication notice) and the actors' output are shown, on stderr, only with ``-v``.

Every failure (exit 1 or 2) also writes one line on stderr, ``batchray COMMAND: error: CODE:
message``, never a traceback; ``mcp``, whose stdout is the protocol's, writes only that line.
Interrupted (Ctrl-C), a command says so in one line on stderr and exits 130; one whose stdout
is closed before it has printed (``batchray tools | head -1``) ends quietly with 141, as a
command killed by SIGPIPE does.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import Any, Optional, TextIO

from batchray.api.client import DEFAULT_STORE
from batchray.api.dashboards import add_arguments as dashboard_arguments
from batchray.core.storage.postgres.url import redact
from batchray.errors import ValidationError, error_payload, install_secret_redaction


JSON_COMMANDS = ("tool", "status", "recover", "stop")
"""Commands whose stdout is their JSON answer and nothing else."""

PROTOCOL_COMMANDS = ("mcp",)
"""Commands whose stdout belongs to a protocol: a failure of theirs is said on stderr only."""

_json_out: Optional[TextIO] = None  # where _print writes while stdout is sent to stderr


def _print(obj: Any) -> None:
    (_json_out or sys.stdout).write(json.dumps(obj, indent=2, default=str) + "\n")


def _connect(args: argparse.Namespace):
    from batchray.api.client import connect

    return connect(args.store, workers=args.workers, address=args.address, progress=False,
                   io_root=getattr(args, "io_root", None), quiet=not args.verbose)


class _Parser(argparse.ArgumentParser):
    """A parser whose usage errors, for the commands in :data:`JSON_COMMANDS`, are also the
    structured error on stdout (their stdout is JSON and nothing else); every message redacted."""

    json_errors = False
    commands: dict[str, argparse.ArgumentParser]  # set on the top-level parser: each command's own

    def error(self, message: str):  # type: ignore[override]
        message = redact(message)
        if self.json_errors:
            _print(error_payload(ValidationError(f"{self.prog}: {message}", field="argv")))
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _failed(command: str, payload: dict[str, Any]) -> None:
    """Print a failure: its structured ``payload`` (``{success: false, error}``) as JSON on
    stdout (not for :data:`PROTOCOL_COMMANDS`), and one line, ``batchray COMMAND: error: CODE:
    message``, on stderr (first: it is said even when stdout is a pipe already closed)."""
    error = payload.get("error") or {}
    message = " ".join(str(error.get("message") or "failed").split())  # one line
    print(f"batchray {command}: error: {error.get('code', 'ERROR')}: {message}", file=sys.stderr)
    if command not in PROTOCOL_COMMANDS:
        _print(payload)


def _usage_error(message: str, **details: Any) -> SystemExit:
    """Bad usage of ``tool``: print the structured error; the exit (status 2) to raise."""
    _failed("tool", error_payload(ValidationError(message, **details)))
    return SystemExit(2)


def _read_args(args: argparse.Namespace) -> Any:
    sources = [s for s in (args.json, args.args_file, "-" if args.stdin else None) if s is not None]
    if len(sources) != 1:
        raise _usage_error(f"batchray tool: give exactly one of --json, --args-file or - ({len(sources)} given)",
                           field="args")
    try:
        if args.json is not None:
            return json.loads(args.json)
        if args.args_file is not None:
            with open(args.args_file, encoding="utf-8") as handle:
                return json.load(handle)
        # the bytes, decoded as UTF-8 (strictly, as a file's are), where stdin has them
        return json.loads(getattr(sys.stdin, "buffer", sys.stdin).read())
    except (OSError, ValueError) as exc:
        raise _usage_error(f"cannot read the arguments: {exc}") from None
    except RecursionError:  # JSON nested deeper than the reader's stack
        raise _usage_error("cannot read the arguments: objects and arrays nest too deep") from None


def cmd_demo(args: argparse.Namespace) -> int:
    from batchray.api.demo import run_demo

    summary = run_demo(items=args.items, store=args.store, workers=args.workers, address=args.address,
                       progress=not args.no_progress)
    if args.json_summary:
        _print(summary)
    if not summary["storeUnchangedAfterFailure"]:
        print("batchray demo: error: the failed atomic batch changed the store", file=sys.stderr)
        return 1
    return 0


def cmd_tools(args: argparse.Namespace) -> int:
    from batchray.api.tools import tool_schemas

    _print(tool_schemas())
    return 0


def cmd_tool(args: argparse.Namespace) -> int:
    from batchray.api.tools import call_tool, validate_args

    payload = _read_args(args)
    try:
        validate_args(args.name, payload)  # refuse bad input before starting Ray
    except Exception as exc:  # noqa: BLE001 - reported as JSON
        _failed("tool", error_payload(exc))
        return 1
    with _connect(args) as client:
        result = call_tool(client, args.name, payload)
    if result.get("success", True):
        _print(result)
        return 0
    _failed("tool", result)
    return 1


def _existing_store(store: str) -> None:
    """``status`` and ``recover`` read a store and never create one: a mistyped ``--store`` is
    an error that names the path, not a new empty store reported as healthy
    (:func:`~batchray.core.storage.store.require_store`)."""
    from batchray.core.storage.store import require_store

    require_store(store)


def cmd_status(args: argparse.Namespace) -> int:
    _existing_store(args.store)
    # with no address and nothing serving the store, the owner while this command reads it is the
    # Ray it starts, which ends with it: no owner to name
    served = args.address is not None or _live_owner(args.store) is not None
    with _connect(args) as client:
        if args.batch_id is None:
            # the store's owner (the Ray cluster and coordinator serving it) and its recent batches
            _print({"store": str(client.layout.root), "owner": _owner(client) if served else None,
                    "recent": client.status()})
        else:
            _print(client.status(args.batch_id))
    return 0


OWNER_WAIT = 10.0
"""Seconds ``status`` and ``stop`` wait for the coordinator to name the store's owner: a worker
that does not answer (stopped, or stuck) made them wait for it for ever, and ``stop`` is what a
user runs on a store that hangs."""


def _owner(client: Any) -> Optional[dict[str, Any]]:
    """The owner record of the store ``client`` serves, as its coordinator holds it; None when
    the coordinator does not answer within :data:`OWNER_WAIT` (``stop`` stops it even so)."""
    from batchray.errors import ParticipantUnavailable

    try:
        return client.info(timeout=OWNER_WAIT).get("owner")
    except ParticipantUnavailable:
        return None


def _live_owner(store: str) -> Optional[dict[str, Any]]:
    """The record of ``store``'s live owner, or None when nothing serves it. Only probes: a
    SQLite directory that was never served (no owner lock file) is not opened, nor created."""
    from pathlib import Path

    from batchray.core.storage.backends import open_backend
    from batchray.core.storage.ownership import LOCK_FILE, live_owner
    from batchray.core.storage.store import parse_store_url

    kind, location = parse_store_url(store)
    if kind == "sqlite" and not (Path(location).expanduser() / LOCK_FILE).exists():
        return None
    backend = open_backend(store)
    try:
        return live_owner(backend)
    finally:
        backend.close()


def cmd_stop(args: argparse.Namespace) -> int:
    if args.address is None and _live_owner(args.store) is None:
        # nothing serves the store: connecting would start a Ray and an owner only to stop them
        _print({"success": True, "stopped": None})
        return 0
    with _connect(args) as client:
        owner = _owner(client)
        client.shutdown()
    _print({"success": True, "stopped": owner})
    return 0


def cmd_recover(args: argparse.Namespace) -> int:
    _existing_store(args.store)
    with _connect(args) as client:
        at_start = client.info()["recovered"]
        again = client.recover()
        _print({"success": True, "recoveredAtStart": at_start, "recoveredNow": again})
    return 0


def cmd_mcp(args: argparse.Namespace) -> int:
    from batchray.api.mcp import serve

    serve(store=args.store, workers=args.workers, address=args.address, io_root=args.io_root)
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from batchray.api.dashboards import write

    return write(args.output)


def _positive_int(text: str) -> int:
    """An argument that must be a whole number of at least 1 (argparse's type)."""
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return number


def _batch_id(text: str) -> str:
    """An argument naming a batch: a non-empty text (argparse's type)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must be a batch id, not {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="batchray", description="Transactional batch operations on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_store(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--store", default=os.environ.get("BATCHRAY_STORE", DEFAULT_STORE),
                       help="store directory or URL (default: %(default)s)")
        p.add_argument("--address", default=os.environ.get("BATCHRAY_ADDRESS"),
                       help="Ray cluster address ('auto' to join a running one)")
        p.add_argument("--workers", type=_positive_int, default=2, help="worker actors (default: 2)")
        return p

    def with_verbose(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("-v", "--verbose", action="store_true",
                       help="show Ray's log lines and the actors' output (on stderr)")
        return p

    def with_io_root(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--io-root", help="directory the file paths of batch_import/batch_export must stay in "
                                         "(default: $BATCHRAY_IO_ROOT, else the working directory)")
        return p

    demo = with_store(sub.add_parser("demo", help="load 1,000,000 items atomically and show a rollback"))
    demo.add_argument("--items", type=_positive_int, default=1_000_000, help="items to load (default: %(default)s)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.add_argument("--json-summary", action="store_true", help="also print the summary as JSON")
    demo.set_defaults(func=cmd_demo)

    tools = sub.add_parser("tools", help="print every tool's JSON Schema")
    tools.set_defaults(func=cmd_tools)

    tool = with_verbose(with_io_root(with_store(sub.add_parser("tool", help="call one tool with JSON arguments"))))
    tool.add_argument("name")
    tool.add_argument("--json", help="arguments as a JSON string")
    tool.add_argument("--args-file", help="arguments from a JSON file")
    tool.add_argument("stdin", nargs="?", const="-", choices=["-"], help="'-' reads arguments from stdin")
    tool.set_defaults(func=cmd_tool)

    status = with_verbose(with_store(sub.add_parser("status", help="a batch's status, or the recent batches")))
    status.add_argument("batch_id", nargs="?", type=_batch_id)
    status.set_defaults(func=cmd_status)

    stop = with_verbose(with_store(sub.add_parser(
        "stop", help="stop what serves the store (its coordinator and workers), releasing its ownership")))
    stop.set_defaults(func=cmd_stop)

    recover = with_verbose(with_store(sub.add_parser("recover", help="finish every batch a crash left undecided")))
    recover.set_defaults(func=cmd_recover)

    mcp = with_io_root(with_store(sub.add_parser("mcp", help="serve the tools over MCP (stdio)")))
    mcp.set_defaults(func=cmd_mcp)

    dashboard = dashboard_arguments(
        sub.add_parser("dashboard", help="print (or write) the Grafana dashboard for batchray's metrics"))
    dashboard.set_defaults(func=cmd_dashboard)
    for name in JSON_COMMANDS:
        sub.choices[name].json_errors = True
    parser.commands = sub.choices
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    install_secret_redaction(redact)  # what importing url does; said here, where errors are printed
    parser = build_parser()
    # the tool's '-' may follow its options (argparse fills the optional positional right after
    # NAME, so a later '-' is left over): take it as that positional
    args, extra = parser.parse_known_args(argv)
    if args.command == "tool" and extra == ["-"] and args.stdin is None:
        args.stdin, extra = "-", []
    if extra:
        # the command's own parser: for a JSON command, the error goes to stdout as JSON too
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    global _json_out
    json_only = args.command in JSON_COMMANDS
    _json_out = sys.stdout if json_only else None
    try:
        with contextlib.redirect_stdout(sys.stderr) if json_only else contextlib.nullcontext():
            try:
                return args.func(args)
            except BrokenPipeError:
                raise  # stdout is gone: nothing more can be printed there
            except Exception as exc:  # noqa: BLE001 - every failure is reported as the structured error
                _failed(args.command, error_payload(exc))
                return 1
    except KeyboardInterrupt:
        print(f"batchray {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _silence(_json_out or sys.stdout)
        return 141
    finally:
        _json_out = None


def _silence(stream: TextIO) -> None:
    """Point ``stream``'s file descriptor at the null device: its reader has gone, and the
    interpreter's last flush of what is left in its buffer would fail with a traceback."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, stream.fileno())
        os.close(null)
    except (OSError, ValueError):  # a stream with no descriptor of its own (a test's capture)
        pass


if __name__ == "__main__":
    sys.exit(main())
