"""No password in any answer: one redaction for every URL form libpq accepts, at the error boundary.

Written as the attack of issue 16: a store URL carrying a password in each form libpq reads
(user-info, an empty user, ``?password=``/``&password=`` in any case, ``postgres://`` and
misspelled schemes, key=value strings) must come back redacted from :func:`redact`, from every
structured error (:meth:`BatchrayError.to_dict`), from the MCP server's error details and from
``batchray status``, which prints the structured error and no traceback.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from batchray.api import cli
from batchray.core.storage.postgres.url import redact
from batchray.errors import ParticipantUnavailable, error_payload

SECRET = "s3cr3t-Pw"
URL_FORMS = [
    f"postgresql://ann:{SECRET}@db.example:5432/app",
    f"postgresql://:{SECRET}@db.example/app",
    f"postgres://ann:{SECRET}@db.example/app?schema=batchray",
    f"postgresq://ann:{SECRET}@db.example/app",
    f"PostgreSQL://ann:{SECRET}@db.example/app",
    f"postgresql://ann:{SECRET}@@db.example/app",
    f"postgresql://ann:p@{SECRET}@db.example/app",
    f"postgresql://ann@db.example/app?password={SECRET}",
    f"postgresql://ann@db.example/app?sslmode=require&password={SECRET}&schema=x",
    f"postgresql://ann@db.example/app?PASSWORD={SECRET}",
    f"postgresql://ann@db.example/app?sslmode=require&PassWord={SECRET}",
    f"postgresql://ann@db.example/app?sslpassword={SECRET}",
    f"host=db.example password={SECRET} dbname=app",
    f"host=db.example password = '{SECRET} with spaces' dbname=app",
    f"host=db.example PASSWORD={SECRET}",
    f"PGPASSWORD={SECRET}",
]
UNREACHABLE = f"postgresql://ann:{SECRET}@127.0.0.1:1/app?password={SECRET}"
"""A store nobody answers at (port 1), with a password in two places."""


@pytest.mark.parametrize("url", URL_FORMS)
def test_each_url_form_is_redacted(url):
    redacted = redact(url)
    assert SECRET not in redacted and "***" in redacted, redacted
    assert "db.example" in redacted or "db.example" not in url, redacted
    assert redact(redacted) == redacted
    for quoted in (f"cannot connect to {url!r}: refused", f"cannot connect to {url}: refused", json.dumps(url)):
        assert SECRET not in redact(quoted), redact(quoted)


@pytest.mark.parametrize("text", ["postgresql://ann@db.example:5432/app?schema=x", "a plain message", "",
                                  "host=db.example dbname=app", "http://example.org/a/b?x=1"])
def test_text_without_a_password_is_left_alone(text):
    assert redact(text) == text


def test_redaction_runs_in_linear_time_on_hostile_text():
    import time

    started = time.perf_counter()
    for text in ("a://b:" * 500_000, "password" * 500_000, "?password=x" * 200_000, "password=\\" * 300_000,
                 "a://" + "'a" * 500_000):
        redact(text)
    assert time.perf_counter() - started < 5.0


@pytest.mark.parametrize("url", URL_FORMS)
def test_every_structured_error_is_redacted(url):
    error = ParticipantUnavailable(f"cannot connect to {url}", store=url, errors=[{"message": url, url: [url]}])
    payload = json.dumps(error.to_dict())
    assert SECRET not in payload, payload
    assert SECRET not in json.dumps(error_payload(RuntimeError(f"connection to {url} failed")))
    # the exception itself keeps what it was given, for the code that raised it
    assert error.details["store"] == url


def _mcp_call(backend, name: str, args: dict) -> dict:
    from batchray.api.mcp import build_server
    import mcp_types as types

    class _Session:
        async def report_progress(self, *args, **kwargs):
            return None

    class _Context:
        session = _Session()

    handler = build_server(backend)._request_handlers["tools/call"].handler

    async def call():
        return await handler(_Context(), types.CallToolRequestParams(name=name, arguments=args))

    result = anyio.run(call)
    return json.loads(result.content[0].text)


@pytest.mark.parametrize("url", [UNREACHABLE, *URL_FORMS[:4]])
def test_mcp_error_details_carry_no_password(url):
    """The MCP server's answer when the store cannot be reached: details.store and the message
    are redacted (the connect error quotes the URL, as psycopg's and Ray's errors may)."""
    from batchray.api.mcp import Backend

    def connect(store, **_settings):
        raise RuntimeError(f"could not open {store}")

    payload = _mcp_call(Backend(url, 2, None, connect=connect), "get_items", {"dataContextName": "People"})
    assert payload["success"] is False and payload["error"]["code"] == "UNAVAILABLE", payload
    assert "store" in payload["error"]["details"], payload
    assert SECRET not in json.dumps(payload), payload


def test_mcp_error_from_a_real_connection_failure_carries_no_password():
    from batchray.api.client import connect as real_connect
    from batchray.api.mcp import Backend

    def connect(store, **_settings):
        return real_connect(store, runtime="local", progress=False)

    payload = _mcp_call(Backend(UNREACHABLE, 2, None, connect=connect), "get_items", {"dataContextName": "People"})
    assert payload["success"] is False, payload
    assert SECRET not in json.dumps(payload), payload


@pytest.mark.parametrize("argv", [["status"], ["recover"], ["tool", "get_items", "--json", '{"dataContextName": "P"}']])
def test_the_cli_prints_the_structured_error_without_the_password(argv, monkeypatch, capsys):
    """Every CLI failure is the structured error (here in process, over the in-process runtime)."""
    from batchray.api.client import connect

    monkeypatch.setattr(cli, "_connect", lambda args: connect(args.store, runtime="local", progress=False))
    code = cli.main([*argv, "--store", UNREACHABLE])
    out, err = capsys.readouterr()
    assert code == 1
    payload = json.loads(out)
    assert payload["success"] is False and payload["error"]["code"], payload
    assert SECRET not in out and SECRET not in err, (out, err)
    assert "Traceback" not in out + err


def test_an_unexpected_failure_of_a_command_is_a_structured_error(monkeypatch, capsys):
    def broken(args):
        raise OSError(f"disk gone under {UNREACHABLE}")

    monkeypatch.setattr(cli, "_live_owner", broken)  # status looks for the store's owner first
    assert cli.main(["status", "--store", UNREACHABLE]) == 1
    out, err = capsys.readouterr()
    payload = json.loads(out)
    assert payload["error"]["code"] == "INTERNAL" and SECRET not in out + err, out
    monkeypatch.setattr(cli, "_live_owner", lambda store: None)
    monkeypatch.setattr(cli, "_connect", broken)
    assert cli.main(["status", "--store", UNREACHABLE]) == 1
    out, err = capsys.readouterr()
    payload = json.loads(out)
    assert payload["error"]["code"] == "INTERNAL" and SECRET not in out + err, out


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_batchray_status_with_a_password_in_the_url_prints_no_traceback_and_no_password(tmp_path):
    done = subprocess.run([sys.executable, "-m", "batchray.api.cli", "status", "--store", UNREACHABLE],
                          cwd=tmp_path, capture_output=True, text=True, timeout=150,
                          env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert done.returncode == 1, done
    payload = json.loads(done.stdout)
    assert payload["success"] is False and payload["error"]["code"] == "UNAVAILABLE", payload
    assert SECRET not in done.stdout + done.stderr, (done.stdout, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
