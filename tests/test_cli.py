"""The ``batchray`` command line.

Three commands run as real subprocesses (``tools``; ``tool`` and ``demo``, each of which starts
a local Ray of its own, about 10 s each); refusing bad arguments runs in this process, with
connecting made impossible, to show it happens before Ray is touched.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from batchray.api import cli
from local_runtime import local_client
from batchray.api.tools import tool_schemas

PEOPLE = [{"name": "People", "attrs": [{"name": "name", "type": "categorical"},
                                       {"name": "age", "type": "numeric", "min": 0}]}]


def _batchray(*args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """``batchray ARGS`` run as a user runs it: no address or store from this environment, so
    it starts a local Ray of its own (which ends with it)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "BATCHRAY_ADDRESS", "BATCHRAY_STORE")}
    try:
        return subprocess.run([sys.executable, "-m", "batchray.api.cli", *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        def tail(text) -> str:
            text = text.decode(errors="replace") if isinstance(text, bytes) else (text or "")
            return text[-3000:]

        pytest.fail(f"batchray {args[0]} ran past {timeout} s\nstdout: {tail(exc.stdout)}\nstderr: {tail(exc.stderr)}")


def _trailing_json(stdout: str):
    """The JSON document a command printed last (the demo prints lines of text before it)."""
    start = 0 if stdout.startswith(("{", "[")) else stdout.rindex("\n{") + 1
    return json.loads(stdout[start:])


def test_tools_prints_every_json_schema(tmp_path):
    done = _batchray("tools", cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed == json.loads(json.dumps(tool_schemas()))
    assert {t["name"] for t in printed} >= {"batch_create_items", "get_batch_status", "cancel_batch_operation"}
    assert all(t["inputSchema"]["type"] == "object" for t in printed)


def test_tool_with_bad_arguments_exits_1_with_the_structured_error_before_starting_ray(tmp_path, monkeypatch, capsys):
    def no_connecting(args):
        raise AssertionError("bad arguments must be refused before connecting to Ray")

    monkeypatch.setattr(cli, "_connect", no_connecting)
    store = tmp_path / "store"
    bad = {"dataContextName": "People", "collectionName": "People", "items": [{"values": {"age": 1}}],
           "options": {"batchSize": 1001}}
    code = cli.main(["tool", "batch_create_items", "--json", json.dumps(bad), "--store", str(store)])
    printed = json.loads(capsys.readouterr().out)
    assert code == 1
    assert printed["success"] is False
    assert printed["error"]["code"] == "VALIDATION"
    assert printed["error"]["details"]["field"] == "options.batchSize"
    assert {"code", "message", "details"} <= set(printed["error"])
    assert not store.exists()  # nothing was opened, let alone written

    code = cli.main(["tool", "batch_create_items", "--json", json.dumps({**bad, "items": []}), "--store", str(store)])
    assert code == 1 and json.loads(capsys.readouterr().out)["error"]["details"]["field"] == "items"
    with pytest.raises(SystemExit) as unreadable:
        cli.main(["tool", "batch_create_items", "--json", "{not json", "--store", str(store)])
    assert unreadable.value.code == 2
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "VALIDATION"


def test_tool_reads_its_arguments_from_stdin_given_after_its_options(tmp_path, monkeypatch, capsys):
    store = tmp_path / "store"
    with local_client(store) as engine:
        assert engine.create_data_context("People", PEOPLE).success
        assert engine.create_items("People", "People", [{"name": "a", "age": 1}, {"name": "b", "age": 2}]).success
    monkeypatch.setattr(cli, "_connect", lambda args: local_client(args.store))
    for argv in (["tool", "get_items", "--store", str(store), "-"], ["tool", "get_items", "-", "--store", str(store)]):
        monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"dataContextName": "People"})))
        code = cli.main(argv)
        printed = json.loads(capsys.readouterr().out)
        assert code == 0, printed
        assert printed["total"] == 2 and [i["values"]["name"] for i in printed["items"]] == ["a", "b"]


def test_tool_without_arguments_is_bad_usage_with_the_structured_error(tmp_path, monkeypatch, capsys):
    def no_connecting(args):
        raise AssertionError("bad usage must be refused before connecting")

    monkeypatch.setattr(cli, "_connect", no_connecting)
    for argv in (["tool", "get_items"], ["tool", "get_items", "--json", "{}", "-"]):
        with pytest.raises(SystemExit) as exited:
            cli.main([*argv, "--store", str(tmp_path / "store")])
        assert exited.value.code == 2
        error = json.loads(capsys.readouterr().out)["error"]
        assert error["code"] == "VALIDATION" and "exactly one of --json, --args-file or -" in error["message"]


def test_tool_creates_items_and_prints_json(tmp_path):
    store = tmp_path / "store"
    with local_client(store) as engine:  # the context, made without Ray
        assert engine.create_data_context("People", PEOPLE).success
    args = {"dataContextName": "People", "collectionName": "People",
            "items": [{"values": {"name": f"p{i}", "age": 20 + i}} for i in range(3)],
            "options": {"batchSize": 2}}
    done = _batchray("tool", "batch_create_items", "--json", json.dumps(args), "--store", str(store),
                     cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    printed = json.loads(done.stdout)  # stdout is the one JSON answer, nothing else
    assert done.stdout.lstrip().startswith("{") and done.stdout.rstrip().endswith("}")
    assert printed["success"] is True and printed["state"] == "completed"
    assert printed["itemsCreated"] == 3 and len(printed["itemIds"]) == 3
    for ray_line in ("INFO", "Started a local Ray instance", "Token authentication", "pid="):
        assert ray_line not in done.stdout and ray_line not in done.stderr, done.stderr  # quiet without -v
    with local_client(store) as engine:
        assert [item["values"]["age"] for item in engine.get_items("People")] == [20, 21, 22]
        assert [item["id"] for item in engine.get_items("People")] == printed["itemIds"]


def test_demo_loads_atomically_and_shows_a_rollback(tmp_path):
    store = tmp_path / "demo-store"
    done = _batchray("demo", "--items", "20000", "--store", str(store), "--no-progress", "--json-summary",
                     cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = _trailing_json(done.stdout)
    assert summary["items"] == 20000
    assert summary["storeUnchangedAfterFailure"] is True
    assert summary["failedBatchState"] == "rolled_back"
    assert summary["workers"] == 2 and summary["itemsPerSecond"] > 0
    assert "committed 20,000 items" in done.stdout
    assert "Deprecat" not in done.stdout + done.stderr  # nothing of Ray's internals on the console


def test_demo_connects_to_the_address_it_is_given(tmp_path, monkeypatch, capsys):
    import batchray
    from batchray.errors import ParticipantUnavailable

    asked = {}

    def connect(store, **settings):
        asked.update(settings, store=store)
        raise ParticipantUnavailable("no cluster at that address")

    monkeypatch.setattr(batchray, "connect", connect)
    store = str(tmp_path / "store")
    code = cli.main(["demo", "--items", "10", "--store", store, "--address", "10.0.0.7:6379", "--no-progress"])
    assert code == 1
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "UNAVAILABLE"
    assert asked["store"] == store and asked["address"] == "10.0.0.7:6379" and asked["workers"] == 2


def test_stop_on_a_store_nothing_serves_starts_nothing_and_creates_nothing(tmp_path, monkeypatch, capsys):
    def no_connecting(args):
        raise AssertionError("stopping a store that nothing serves must not start one")

    monkeypatch.setattr(cli, "_connect", no_connecting)
    monkeypatch.delenv("BATCHRAY_ADDRESS", raising=False)
    never = tmp_path / "never-served"
    assert cli.main(["stop", "--store", str(never)]) == 0
    assert json.loads(capsys.readouterr().out) == {"success": True, "stopped": None}
    assert not never.exists()

    served_once = tmp_path / "store"
    with local_client(served_once) as engine:  # an owner that has gone: its lock is free
        assert engine.create_data_context("People", PEOPLE).success
    assert cli.main(["stop", "--store", f"sqlite://{served_once}"]) == 0
    assert json.loads(capsys.readouterr().out) == {"success": True, "stopped": None}


def test_stop_stops_the_live_owner_it_finds(tmp_path, monkeypatch, capsys):
    store = tmp_path / "store"
    stopped = []
    monkeypatch.delenv("BATCHRAY_ADDRESS", raising=False)
    with local_client(store) as owner:  # this process serves the store: a live owner
        record = owner.info()["owner"]
        monkeypatch.setattr(owner, "shutdown", lambda: stopped.append(True))
        monkeypatch.setattr(cli, "_connect", lambda args: owner)
        assert cli.main(["stop", "--store", str(store)]) == 0
    assert stopped == [True]
    assert json.loads(capsys.readouterr().out) == {"success": True, "stopped": json.loads(json.dumps(record))}


@pytest.mark.ray
def test_stop_and_status_do_not_wait_for_a_worker_that_does_not_answer(make_client, monkeypatch, capsys):
    """``status`` and ``stop`` asked the coordinator for the owner record, and the coordinator
    asked every worker first, with no time limit: a stopped or stuck worker made them hang,
    and ``stop`` is what a user runs on a store that hangs. They now wait OWNER_WAIT at most
    for the workers; the owner comes from the coordinator."""
    import signal
    import time

    client = make_client("hung", workers=2)
    record = json.loads(json.dumps(client.info()["owner"]))
    silent = client.info()["workers"][0]["pid"]
    monkeypatch.setattr(cli, "OWNER_WAIT", 1.0)
    monkeypatch.setattr(cli, "_connect", lambda args: _Unclosed(client))
    monkeypatch.setattr(cli, "_live_owner", lambda store: record)
    os.kill(silent, signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert cli.main(["status", "--store", str(client.layout.root)]) == 0
        assert json.loads(capsys.readouterr().out)["owner"] == record
        assert cli.main(["stop", "--store", str(client.layout.root)]) == 0
        assert json.loads(capsys.readouterr().out) == {"success": True, "stopped": record}
        assert time.monotonic() - started < 60  # a bound against hanging, not a timing
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(silent, signal.SIGCONT)


class _Unclosed:
    """A client as the command's ``with`` uses it, left open for the test's own teardown."""

    def __init__(self, client) -> None:
        self.client = client

    def __enter__(self):
        return self.client

    def __exit__(self, *exc) -> None:
        pass


@pytest.mark.parametrize("argv", [
    ["tool", "get_items", "--json", "{}", "--bogus"],
    ["tool"],
    ["status", "--workers", "postgresql://u:s3cret@127.0.0.1:1/db"],
    ["status", ""],  # no batch id: refused before anything connects (it started Ray and made the store)
    ["stop", "extra"],
    ["recover", "-x"],
])
def test_bad_usage_of_a_json_command_is_the_structured_error_on_stdout(argv, monkeypatch, capsys):
    def no_connecting(args):
        raise AssertionError("bad usage must be refused before connecting")

    monkeypatch.setattr(cli, "_connect", no_connecting)
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    error = json.loads(out)["error"]
    assert error["code"] == "VALIDATION" and error["message"].startswith(f"batchray {argv[0]}: ")
    assert "usage: batchray " + argv[0] in err
    assert "s3cret" not in out + err


def test_bad_usage_of_another_command_is_argparse_s_own(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["dashboard", "--bogus"])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and "unrecognized arguments: --bogus" in err


def test_recover_prints_what_recovery_finished_at_start_and_now(tmp_path, monkeypatch, capsys):
    store = tmp_path / "store"
    local_client(store).close()  # a store that exists
    monkeypatch.setattr(cli, "_connect", lambda args: local_client(args.store))
    assert cli.main(["recover", "--store", str(store)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["success"] is True
    assert set(printed) == {"success", "recoveredAtStart", "recoveredNow"}
    assert isinstance(printed["recoveredAtStart"], dict) and isinstance(printed["recoveredNow"], dict)


@pytest.mark.parametrize("command", [["status"], ["status", "batch-1"], ["recover"]])
@pytest.mark.parametrize("where", ["missing", "empty-directory"])
def test_reading_a_store_that_does_not_exist_is_not_found_and_creates_nothing(command, where, tmp_path, monkeypatch,
                                                                               capsys):
    """``status`` and ``recover`` read a store: a mistyped ``--store`` (a path that does not exist,
    or a directory that holds no store) is the structured NOT_FOUND error naming the path, exit 1,
    and nothing is started or created there."""
    store = tmp_path / "typo"
    if where == "empty-directory":
        store.mkdir()

    def no_connecting(args):
        raise AssertionError("a store that does not exist must be refused before connecting")

    monkeypatch.setattr(cli, "_connect", no_connecting)
    assert cli.main([*command, "--store", str(store)]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["success"] is False and printed["error"]["code"] == "NOT_FOUND"
    assert str(store) in printed["error"]["message"] and printed["error"]["details"] == {"field": "store"}
    assert sorted(p.name for p in tmp_path.iterdir()) == (["typo"] if where == "empty-directory" else [])
    assert not any(store.iterdir()) if store.exists() else True


@pytest.mark.parametrize("option", ["--items", "--workers"])
@pytest.mark.parametrize("count", ["0", "-5", "ten"])
def test_demo_refuses_a_count_below_one_before_connecting(option, count, monkeypatch, capsys):
    import batchray

    def no_connecting(store, **settings):
        raise AssertionError(f"a bad {option} must be refused before connecting")

    monkeypatch.setattr(batchray, "connect", no_connecting)
    with pytest.raises(SystemExit) as exited:
        cli.main(["demo", option, count, "--no-progress"])
    assert exited.value.code == 2
    assert f"{option}: must be a whole number of at least 1" in capsys.readouterr().err


def test_a_tool_call_with_no_workers_is_a_usage_error_on_stdout_as_json(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["tool", "get_batch_status", "--json", "{}", "--workers", "0"])
    assert exited.value.code == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["code"] == "VALIDATION" and "--workers: must be a whole number of at least 1" in error["message"]


def test_a_failed_demo_step_is_the_structured_error(tmp_path, monkeypatch, capsys):
    import batchray
    from types import SimpleNamespace

    refused = {"code": "SCHEMA", "message": "the context cannot be created", "details": {}, "retryable": False}

    class Refusing:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def info(self):
            return {"pid": os.getpid(), "workers": []}

        def create_data_context(self, *args, **kwargs):
            return SimpleNamespace(success=False, error=refused)

    monkeypatch.setattr(batchray, "connect", lambda store, **settings: Refusing())
    code = cli.main(["demo", "--items", "10", "--store", str(tmp_path / "store"), "--no-progress"])
    assert code == 1
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["code"] == "ABORTED" and "the context cannot be created" in error["message"]
    assert error["details"]["cause"] == refused


def test_status_of_a_store_nothing_serves_names_no_owner(tmp_path, monkeypatch, capsys):
    """``status`` connects to read the store: with nothing serving it, the Ray it started (and
    that ended with it) was printed as the store's owner, a new one at each run, while ``stop``
    said nothing served it."""
    store = tmp_path / "store"
    monkeypatch.delenv("BATCHRAY_ADDRESS", raising=False)
    with local_client(store) as engine:  # served once; its owner has gone since
        assert engine.create_data_context("People", PEOPLE).success
    monkeypatch.setattr(cli, "_connect", lambda args: local_client(args.store))  # owns it while it runs
    assert cli.main(["status", "--store", str(store)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["owner"] is None and printed["recent"], printed

    with local_client(store) as owner:  # a live owner: named
        record = json.loads(json.dumps(owner.info()["owner"]))
        monkeypatch.setattr(cli, "_connect", lambda args: owner)
        assert cli.main(["status", "--store", str(store)]) == 0
    assert json.loads(capsys.readouterr().out)["owner"] == record


def test_every_failure_is_also_one_line_on_stderr(tmp_path, monkeypatch, capsys):
    """A failed command printed its structured error on stdout and nothing on stderr: a user at
    a terminal with stdout sent to a file, or a script logging stderr, saw no error at all. Each
    failure now also writes one line on stderr: ``batchray COMMAND: error: CODE: message``."""
    store = tmp_path / "store"
    with local_client(store) as engine:
        assert engine.create_data_context("People", PEOPLE).success
    monkeypatch.setattr(cli, "_connect", lambda args: local_client(args.store))
    cases = [
        (["status", "--store", str(tmp_path / "typo")], 1, "batchray status: error: NOT_FOUND: no batchray store at"),
        (["tool", "get_items", "--json", "{}", "--store", str(store)], 1,
         "batchray tool: error: VALIDATION: invalid arguments for get_items: dataContextName"),
        (["tool", "get_items", "--json", '{"dataContextName": "Nope"}', "--store", str(store)], 1,
         "batchray tool: error: SCHEMA: data context 'Nope' does not exist"),
    ]
    for argv, status, line in cases:
        assert cli.main(argv) == status
        out, err = capsys.readouterr()
        assert json.loads(out)["success"] is False
        assert err.startswith(line) and err.count("\n") == 1, err
    with pytest.raises(SystemExit) as exited:
        cli.main(["tool", "get_items", "--json", "{not json", "--store", str(store)])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert json.loads(out)["error"]["code"] == "VALIDATION"
    assert err.startswith("batchray tool: error: VALIDATION: cannot read the arguments") and err.count("\n") == 1, err


def test_an_interrupted_command_says_so_in_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_connect", interrupted)
    code = cli.main(["tool", "get_items", "--json", '{"dataContextName": "People"}', "--store", str(tmp_path / "s")])
    out, err = capsys.readouterr()
    assert code == 130
    assert out == "" and err == "batchray tool: interrupted\n"


def test_a_command_whose_stdout_is_closed_ends_quietly(tmp_path):
    """``batchray tools | head -1``: the reader goes before the command has printed. It ended
    with two tracebacks of BrokenPipeError (the second from printing the first as an error on
    the same closed stdout); now it ends with nothing on stderr and status 141, as a command
    killed by SIGPIPE does."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "BATCHRAY_ADDRESS", "BATCHRAY_STORE")}
    for args in (["tools"], ["tool", "get_items", "--json", "{}"]):
        proc = subprocess.Popen([sys.executable, "-m", "batchray.api.cli", *args], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc.stdout.close()  # the reader is gone (tools prints more than a pipe holds)
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 141, err
        assert "Traceback" not in err, err
    assert err == "batchray tool: error: VALIDATION: invalid arguments for get_items: dataContextName: Field required\n"


def test_arguments_nested_too_deep_or_not_utf8_are_bad_usage_not_an_internal_error(tmp_path, monkeypatch, capsys):
    """JSON arguments nested deeper than the reader's stack were an INTERNAL error ("unexpected
    RecursionError"), the user's mistake reported as a bug; and arguments on stdin that are not
    UTF-8 got past the reader (decoded with escapes) to fail as the tool's VALIDATION, exit 1,
    where the same bytes in an --args-file are bad usage. Both are now bad usage: VALIDATION,
    exit 2, before anything connects."""
    def no_connecting(args):
        raise AssertionError("unreadable arguments must be refused before connecting")

    monkeypatch.setattr(cli, "_connect", no_connecting)
    deep = '{"dataContextName": ' + "[" * 100_000 + "]" * 100_000 + "}"
    (tmp_path / "deep.json").write_text(deep)
    not_utf8 = b'{"dataContextName": "P", "query": "\xff\xfe"}'
    for argv, stdin in ((["--json", deep], b""), (["--args-file", str(tmp_path / "deep.json")], b""), (["-"], deep.encode()),
                        (["-"], not_utf8)):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8", errors="surrogateescape"))
        with pytest.raises(SystemExit) as exited:
            cli.main(["tool", "get_items", *argv, "--store", str(tmp_path / "store")])
        assert exited.value.code == 2, argv
        out, err = capsys.readouterr()
        error = json.loads(out)["error"]
        assert error["code"] == "VALIDATION" and error["message"].startswith("cannot read the arguments"), error
    assert not (tmp_path / "store").exists()


def test_a_failed_mcp_server_says_why_on_stderr_only(monkeypatch, capsys):
    """``batchray mcp``'s stdout belongs to the protocol; a failure of the server printed the
    structured error there, a line that is no JSON-RPC message, to a client reading it."""
    import batchray.api.mcp as mcp_module

    def broken(**settings):
        raise RuntimeError("the transport broke")

    monkeypatch.setattr(mcp_module, "serve", broken)
    assert cli.main(["mcp", "--store", "unused"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "batchray mcp: error: INTERNAL: unexpected RuntimeError: the transport broke\n"
