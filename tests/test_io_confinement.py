"""The tools' file access, attacked: ``batch_import`` and ``batch_export`` with no settings.

An agent (through ``call_tool``, as ``client.tool``, ``batchray tool`` and ``batchray mcp`` do)
tries to read ``/etc/passwd`` and a password file under ``~``, to follow a symlink or ``..`` out
of the working directory, to read a FIFO or a directory, to overwrite an existing file, and to
get a file's text back in an error message. Each is refused with a structured error that holds
none of the file's content; paths inside the I/O root keep working, and the Python methods stay
unconfined. The same attacks then go through a real MCP server over stdio: one on the
in-process runtime (cheap), and ``batchray mcp`` itself (Ray, marked ``ray``).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from local_runtime import local_client
from batchray.api.cli import build_parser
from batchray.api.tools import call_tool
from batchray.errors import ConflictError, DocumentError

SECRET = "TOP-SECRET-MARKER-7f3a"
PGPASS = f"db.example:5432:*:alice:{SECRET}\n"
REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A working directory (the default I/O root) with data in it; next to it a directory with a
    secret, and a home directory with a ``.pgpass``; a client made in the working directory."""
    work, outside, home = tmp_path / "work", tmp_path / "outside", tmp_path / "home"
    for d in (work / "data", outside, home):
        d.mkdir(parents=True)
    (work / "data" / "people.csv").write_text("name,age\nann,31\nbob,42\n")
    (outside / "secret.csv").write_text(f"name,password\nroot,{SECRET}\n")
    (home / ".pgpass").write_text(PGPASS)
    (work / "escape.csv").symlink_to(outside / "secret.csv")
    (work / "away").symlink_to(outside, target_is_directory=True)
    (work / "inner.csv").symlink_to(work / "data" / "people.csv")  # a symlink that stays inside
    monkeypatch.delenv("BATCHRAY_IO_ROOT", raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    client = local_client(tmp_path / "store")
    client.create_data_context("People", [{"name": "People", "attrs": [{"name": "name"}, {"name": "age"}]}])
    client.create_items("People", "People", [{"name": "cy", "age": 7}])
    yield {"client": client, "work": work, "outside": outside, "home": home, "tmp": tmp_path}
    client.close()


def _refused(payload: dict[str, Any], code: str = "DOCUMENT", reason: str = "outside_root") -> dict[str, Any]:
    assert payload["success"] is False, payload
    error = payload["error"]
    assert error["code"] == code and error["details"].get("reason") == reason, payload
    return error


def _quotes_nothing_of(payload: dict[str, Any], *files: Path) -> None:
    text = json.dumps(payload)
    assert SECRET not in text
    for path in files:
        for line in path.read_text(errors="replace").splitlines():
            if len(line.strip()) >= 4:
                assert line not in text, f"{path}: a line of the file is in the answer"


# -- reading outside the working directory -----------------------------------------------------------
def test_importing_etc_passwd_is_refused_without_quoting_it(world):
    for path, fmt in [("/etc/passwd", "csv"), ("../../../../../../etc/passwd", "csv"), ("/etc/passwd", "jsonl")]:
        payload = call_tool(world["client"], "batch_import", {"dataContextName": "P", "path": path, "format": fmt})
        _refused(payload)
        _quotes_nothing_of(payload, Path("/etc/passwd"))
    assert world["client"].data_contexts() == ["People"]


def test_a_password_file_under_home_is_refused(world):
    for path in ["~/.pgpass", str(world["home"] / ".pgpass"), "../home/.pgpass"]:
        payload = call_tool(world["client"], "batch_import", {"dataContextName": "P", "path": path, "format": "csv"})
        _refused(payload)
        _quotes_nothing_of(payload, world["home"] / ".pgpass")
    assert world["client"].data_contexts() == ["People"]


def test_symlinks_and_dotdot_out_of_the_root_are_refused(world):
    for path in ["escape.csv", "away/secret.csv", "data/../../outside/secret.csv", "./away/../escape.csv",
                 str(world["work"] / "escape.csv")]:
        payload = call_tool(world["client"], "batch_import", {"dataContextName": "P", "path": path})
        _refused(payload)
        _quotes_nothing_of(payload, world["outside"] / "secret.csv")
    for path in ["escape.csv", "away/new.csv", "../outside/new.csv"]:
        payload = call_tool(world["client"], "batch_export", {"dataContextName": "People", "path": path,
                                                              "overwrite": True})
        _refused(payload)
    assert sorted(p.name for p in world["outside"].iterdir()) == ["secret.csv"]
    assert SECRET in (world["outside"] / "secret.csv").read_text()
    assert world["client"].data_contexts() == ["People"]


def test_fifos_and_directories_are_refused_at_once(world):
    os.mkfifo(world["work"] / "pipe.csv")  # opening it to read would wait for a writer forever
    for path, reason in [("pipe.csv", "not_a_file"), ("data", "not_a_file"), (".", "not_a_file")]:
        _refused(call_tool(world["client"], "batch_import", {"dataContextName": "P", "path": path, "format": "csv"}),
                 reason=reason)
        _refused(call_tool(world["client"], "batch_export", {"dataContextName": "People", "path": path,
                                                             "format": "csv", "overwrite": True}), reason=reason)
    assert (world["work"] / "pipe.csv").is_fifo() and (world["work"] / "data").is_dir()
    with pytest.raises(DocumentError) as info:  # the Python method reads anywhere, but never a device
        world["client"].import_file("P", None, "/dev/zero", format="csv")
    assert info.value.details["reason"] == "not_a_file"


# -- writing --------------------------------------------------------------------------------------
def test_export_never_overwrites_unless_asked(world):
    target = world["work"] / "keep.csv"
    target.write_text("precious\n")
    target.chmod(0o755)  # say, an executable script
    payload = call_tool(world["client"], "batch_export", {"dataContextName": "People", "path": "keep.csv"})
    error = _refused(payload, code="CONFLICT", reason="exists")
    assert error["details"]["path"] == "keep.csv" and "keep.csv" in error["message"]
    assert target.read_text() == "precious\n"
    assert [p.name for p in world["work"].iterdir() if p.name.startswith(".keep.csv")] == []  # no leftovers
    payload = call_tool(world["client"], "batch_export", {"dataContextName": "People", "path": "keep.csv",
                                                          "overwrite": True})
    assert payload["success"], payload
    assert target.read_text().splitlines() == ["name,age", "cy,7"]
    for fmt in ("jsonl", "parquet", "codap"):
        (world["work"] / f"old.{fmt}").write_text("old")
        _refused(call_tool(world["client"], "batch_export", {"dataContextName": "People", "path": f"old.{fmt}"}),
                 code="CONFLICT", reason="exists")
        assert (world["work"] / f"old.{fmt}").read_text() == "old"


def test_the_python_export_refuses_an_existing_file_too(world):
    target = world["tmp"] / "elsewhere.csv"
    target.write_text("old\n")
    with pytest.raises(ConflictError):
        world["client"].export_file("People", target)
    assert target.read_text() == "old\n"
    assert world["client"].export_file("People", target, overwrite=True).items_written == 1
    assert target.read_text().splitlines() == ["name,age", "cy,7"]


# -- content is never quoted ---------------------------------------------------------------------
def test_import_errors_name_the_line_not_its_text(world):
    work = world["work"]
    (work / "ragged.csv").write_text(f"a,b\n1,2\n3,{SECRET},5\n")
    payload = call_tool(world["client"], "batch_import", {"dataContextName": "R", "path": "ragged.csv"})
    error = _refused(payload, reason="malformed_row")
    assert error["details"]["row"] == 3 and "row 3" in error["message"]
    _quotes_nothing_of(payload, work / "ragged.csv")
    payload = call_tool(world["client"], "batch_import", {"dataContextName": "R", "path": "ragged.csv",
                                                          "options": {"atomic": False}})
    assert payload["errors"][0]["row"] == 3
    _quotes_nothing_of(payload, work / "ragged.csv")
    (work / "names.csv").write_text(f"ok,[{SECRET}]\n1,2\n")
    (work / "twice.csv").write_text(f"{SECRET},{SECRET}\n1,2\n")
    (work / "lines.jsonl").write_text(f'{{"a": 1}}\n{SECRET}: not json\n')
    for name, reason in [("names.csv", "bad_column_name"), ("twice.csv", "duplicate_column"),
                         ("lines.jsonl", "invalid_json")]:
        payload = call_tool(world["client"], "batch_import", {"dataContextName": "R2", "path": name})
        _refused(payload, reason=reason)
        _quotes_nothing_of(payload, work / name)
    assert world["client"].data_contexts() == ["People", "R"]  # R: the good row of atomic=False


# -- what still works ---------------------------------------------------------------------------------
def test_paths_inside_the_root_work(world):
    client, work = world["client"], world["work"]
    for path, name in [("data/people.csv", "A"), (str(work / "data" / "people.csv"), "B"), ("inner.csv", "C")]:
        payload = call_tool(client, "batch_import", {"dataContextName": name, "path": path})
        assert payload["success"] and payload["itemsCreated"] == 2, payload
    payload = call_tool(client, "batch_export", {"dataContextName": "A", "path": "data/out.jsonl"})
    assert payload["success"] and (work / "data" / "out.jsonl").exists(), payload
    # the Python methods are not confined
    assert client.import_file("S", None, world["outside"] / "secret.csv").items_created == 1


def test_the_root_is_the_setting_then_the_environment_then_the_start_directory(world, monkeypatch):
    client, outside = world["client"], world["outside"]
    args = {"dataContextName": "S", "path": str(outside / "secret.csv")}
    _refused(call_tool(client, "batch_import", args))
    monkeypatch.chdir(outside)  # the working directory the client started in counts, not today's
    _refused(call_tool(client, "batch_import", args))
    monkeypatch.setenv("BATCHRAY_IO_ROOT", str(outside))
    assert call_tool(client, "batch_import", args)["success"]
    client.io_root = str(world["work"])
    _refused(call_tool(client, "batch_import", {**args, "dataContextName": "T"}))
    with local_client(world["tmp"] / "store2", io_root=outside) as other:
        monkeypatch.delenv("BATCHRAY_IO_ROOT")
        assert call_tool(other, "batch_import", {**args, "dataContextName": "U"})["success"]


def test_the_cli_takes_an_io_root():
    parser = build_parser()
    assert parser.parse_args(["tool", "get_items", "--io-root", "some/dir", "--json", "{}"]).io_root == "some/dir"
    assert parser.parse_args(["mcp", "--io-root", "d"]).io_root == "d"
    assert parser.parse_args(["mcp"]).io_root is None


# -- through a real MCP server over stdio --------------------------------------------------------------
_LOCAL_SERVER = """
import sys, anyio
from batchray.api import mcp
from batchray.api.client import connect

def local(store, **settings):
    return connect(store, runtime="local", progress=False, io_root=settings["io_root"])

anyio.run(mcp._serve, mcp.Backend(sys.argv[1], 1, None, connect=local), False)
"""


async def _attack_through_mcp(world: dict[str, Any], command: list[str]) -> None:
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    env = {k: v for k, v in os.environ.items() if k != "BATCHRAY_IO_ROOT" and not k.startswith("RAY_ADDRESS")}
    env.update(HOME=str(world["home"]), PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests")]))
    params = StdioServerParameters(command=sys.executable, args=command, env=env, cwd=str(world["work"]))
    with open(world["tmp"] / "server-stderr.log", "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()

                async def call(name: str, args: dict[str, Any]) -> dict[str, Any]:
                    result = await session.call_tool(name, args, read_timeout_seconds=120)
                    return json.loads(result.content[0].text)

                created = await call("create_data_context", {
                    "name": "People", "collections": [{"name": "People", "attrs": [{"name": "name"}]}]})
                assert created["success"], created
                for path in ["/etc/passwd", "~/.pgpass", str(world["home"] / ".pgpass"), "escape.csv"]:
                    payload = await call("batch_import", {"dataContextName": "P", "path": path, "format": "csv"})
                    _refused(payload)
                    _quotes_nothing_of(payload, Path("/etc/passwd"), world["home"] / ".pgpass")
                (world["work"] / "tool.sh").write_text("#!/bin/sh\necho hi\n")
                payload = await call("batch_export", {"dataContextName": "People", "path": "tool.sh", "format": "csv"})
                _refused(payload, code="CONFLICT", reason="exists")
                assert (world["work"] / "tool.sh").read_text() == "#!/bin/sh\necho hi\n"
                payload = await call("batch_import", {"dataContextName": "Inside", "path": "data/people.csv"})
                assert payload["success"] and payload["itemsCreated"] == 2, payload


@pytest.mark.anyio
@pytest.mark.timeout(120)
async def test_an_mcp_server_started_without_settings_confines_files(world):
    pytest.importorskip("mcp")
    await _attack_through_mcp(world, ["-c", _LOCAL_SERVER, str(world["tmp"] / "mcp-store")])


@pytest.mark.ray
@pytest.mark.anyio
@pytest.mark.timeout(180)
async def test_batchray_mcp_started_without_settings_confines_files(world):
    pytest.importorskip("mcp")
    await _attack_through_mcp(world, ["-m", "batchray.api.cli", "mcp", "--store", str(world["tmp"] / "ray-store"),
                                      "--workers", "1"])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
