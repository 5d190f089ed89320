"""Access: store files readable by their owner only, Ray's authentication left on, and no
network endpoint of batchray's own.

* A new store directory is 0o700 and every file batchray or SQLite creates in it (store.json,
  coordinator.sqlite, catalog.sqlite, the shard files, their -wal and -shm files, gate.lock) is
  0o600, whatever the process umask (0, 0o022, 0o027 are tried). SQLite creates the -wal and
  -shm files itself, with the database file's mode, so the database files are created 0o600 by
  batchray before SQLite opens them. Opening stores on many threads at once leaves the process
  umask as it was (batchray sets modes explicitly and never changes the umask).
* batchray never sets ``RAY_AUTH_MODE`` to anything but ``token`` (a scan of the package, the
  actors, the cluster files, the benchmarks and the docs), and
  :func:`actors.auth.prepare_ray_auth` turns token mode on when a token exists (in
  ``~/.ray/auth_token``, at ``RAY_AUTH_TOKEN_PATH`` or in ``RAY_AUTH_TOKEN``) for a driver that
  joins a cluster by address.
* batchray opens no listening socket: the MCP server speaks over stdio only (a scan of the
  sources, and the ``batchray mcp`` command takes no host or port).
"""
from __future__ import annotations

import os
import re
import stat
import sys
import threading
from pathlib import Path

import pytest

from batchray.core.storage.decision_log import DecisionLog
from local_runtime import Client, local_client
from batchray.core.storage.sqlite.shard import SqliteShard
from batchray.core.storage.store import StoreLayout

REPO = Path(__file__).resolve().parent.parent
EXPECTED_FILES = {
    "store.json", "gate.lock", "gate-catalog.lock",
    *(f"{name}{suffix}" for name in ("coordinator", "catalog", "shard-0000", "shard-0001")
      for suffix in (".sqlite", ".sqlite-wal", ".sqlite-shm")),
}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set the process umask for a test; the previous one comes back afterwards."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def _use(store: Path) -> dict[str, int]:
    """Create a store and use it so that every file exists (the WAL files, the commit gate);
    the modes of the files while it is open (SQLite removes -wal and -shm at the last close)."""
    with local_client(store, shards=2) as engine:
        engine.create_data_context("M", [{"name": "M", "attrs": [{"name": "n", "type": "numeric"}]}])
        assert engine.create_items("M", "M", [{"n": i} for i in range(20)]).success
        assert engine.update_items("M", [{"selector": {"query": "n > 5"}, "values": {"n": "=n + 1"}}]).success
        assert engine.count_items("M") == 20
        return {p.name: _mode(p) for p in store.iterdir()}


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o027], ids=["umask-000", "umask-022", "umask-027"])
def test_a_new_store_is_readable_by_its_owner_only(tmp_path, umask, mask):
    umask(mask)
    store = tmp_path / "stores" / "one"
    modes = _use(store)
    assert EXPECTED_FILES <= set(modes), sorted(modes)
    assert {name: oct(m) for name, m in modes.items() if m != 0o600} == {}
    assert _mode(store) == 0o700
    assert os.umask(mask) == mask, "the process umask changed"


def test_an_existing_directory_keeps_its_mode_and_the_files_in_it_are_private(tmp_path, umask):
    umask(0o022)
    store = tmp_path / "mine"
    store.mkdir(mode=0o755)
    modes = _use(store)
    assert _mode(store) == 0o755  # a directory the user made is left as it is
    assert EXPECTED_FILES <= set(modes)
    assert {name: oct(m) for name, m in modes.items() if m != 0o600} == {}


def test_opening_stores_on_many_threads_leaves_the_umask_alone(tmp_path, umask):
    """Swapping the umask around each open (as batchray once did) is not thread-safe: two
    threads interleaving could leave 0o077 as the umask of the whole process."""
    umask(0o022)
    for round_ in range(10):
        errors: list[BaseException] = []
        opened: list = []

        def open_some(i: int, base: Path = tmp_path / f"round-{round_}") -> None:
            try:
                StoreLayout(base / f"store-{i}", 1)
                opened.append(SqliteShard(base / f"store-{i}" / "shard-0000.sqlite"))
                opened.append(DecisionLog(base / f"store-{i}" / "coordinator.sqlite"))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=open_some, args=(i,)) for i in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for item in opened:
            item.close()
        assert not errors, errors
        assert os.umask(0o022) == 0o022, f"round {round_}: the process umask was changed"
        assert all(_mode(p) == 0o600 for p in (tmp_path / f"round-{round_}").rglob("*.sqlite*"))


# -- Ray's authentication -----------------------------------------------------------------------
_SCANNED = ("batchray", "actors", "cluster", "bench", "docs", "README.md", "pyproject.toml")
_AUTH_SETTING = re.compile(r"""RAY_AUTH_MODE['"]?\s*(?:=|:|,|\])\s*['"]?([A-Za-z_${}]*)""")


def _scanned_files():
    for name in _SCANNED:
        path = REPO / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            if file.suffix in (".py", ".md", ".yaml", ".yml", ".sh", ".toml", ".cfg", ".txt", "") and \
                    "__pycache__" not in file.parts:
                yield file


def test_batchray_never_turns_ray_authentication_off():
    settings = []
    for file in _scanned_files():
        text = file.read_text(errors="replace")
        for line_no, line in enumerate(text.splitlines(), 1):
            if "RAY_AUTH_MODE" not in line:
                continue
            assert "disabled" not in line.lower(), f"{file}:{line_no}: {line.strip()}"
            for value in _AUTH_SETTING.findall(line):
                settings.append((file.relative_to(REPO), line_no, value))
    values = {value for _, _, value in settings if value and not value.startswith(("$", "{"))}
    assert values <= {"token"}, [s for s in settings if s[2] not in ("token", "")]
    assert any(value == "token" for _, _, value in settings), "token mode is set somewhere (client, cluster files)"


@pytest.fixture
def no_ray_auth_env(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    return home


def test_token_mode_is_set_when_a_token_file_exists_in_home(no_ray_auth_env, monkeypatch):
    from actors.auth import prepare_ray_auth as _prepare_ray_auth

    # the mode matters before Ray is imported; other test modules may have imported it already
    monkeypatch.delitem(sys.modules, "ray", raising=False)

    _prepare_ray_auth("10.0.0.1:6379")
    assert "RAY_AUTH_MODE" not in os.environ, "no token anywhere: nothing to send"
    token = no_ray_auth_env / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("secret")
    _prepare_ray_auth("10.0.0.1:6379")
    assert os.environ["RAY_AUTH_MODE"] == "token"
    del os.environ["RAY_AUTH_MODE"]
    _prepare_ray_auth(None)
    assert os.environ["RAY_AUTH_MODE"] == "token", "without an address the store's owner's Ray may be joined"
    del os.environ["RAY_AUTH_MODE"]
    monkeypatch.setitem(sys.modules, "ray", object())
    _prepare_ray_auth(None)
    assert "RAY_AUTH_MODE" not in os.environ, "Ray already imported: a mode set now would split driver and head"


def test_token_mode_is_set_for_a_token_path_or_a_token_variable(no_ray_auth_env, monkeypatch, tmp_path):
    from actors.auth import prepare_ray_auth as _prepare_ray_auth

    elsewhere = tmp_path / "tokens" / "cluster-token"
    elsewhere.parent.mkdir()
    elsewhere.write_text("secret")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(elsewhere))
    _prepare_ray_auth("ray://head:10001")
    assert os.environ["RAY_AUTH_MODE"] == "token"
    monkeypatch.delenv("RAY_AUTH_MODE")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    monkeypatch.setenv("RAY_AUTH_TOKEN", "secret")
    _prepare_ray_auth("head:6379")
    assert os.environ["RAY_AUTH_MODE"] == "token"


def test_a_mode_the_user_chose_is_left_alone(no_ray_auth_env, monkeypatch):
    from actors.auth import prepare_ray_auth as _prepare_ray_auth

    monkeypatch.setenv("RAY_AUTH_TOKEN", "secret")
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    _prepare_ray_auth("head:6379")
    assert os.environ["RAY_AUTH_MODE"] == "token"


# -- no network endpoint ---------------------------------------------------------------------------
_LISTENING = re.compile(r"socket\.socket\(|\.bind\(|\.listen\(|http\.server|socketserver|uvicorn|aiohttp|"
                        r"sse_server|streamable_http|websocket|start_http_server|serve_forever")


def test_batchray_opens_no_listening_socket():
    sources = sorted((REPO / "batchray").rglob("*.py")) + sorted((REPO / "actors").rglob("*.py"))
    hits = [f"{p.relative_to(REPO)}:{n}: {line.strip()}" for p in sources
            for n, line in enumerate(p.read_text().splitlines(), 1) if _LISTENING.search(line)]
    assert hits == []
    server = (REPO / "batchray" / "api" / "mcp.py").read_text()
    assert "stdio_server" in server


def test_the_mcp_command_takes_no_host_or_port():
    from batchray.api.cli import build_parser

    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    mcp = subcommands.choices["mcp"]
    options = {opt for action in mcp._actions for opt in action.option_strings}
    assert not {o for o in options if re.search(r"host|port|listen|bind|http|transport", o)}, options
