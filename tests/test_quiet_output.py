"""``batchray tool ... --json`` prints its JSON answer on stdout and nothing else; Ray's log
lines (its INFO lines, the token-authentication notice) reach stderr only with ``-v``. Without
``-v`` nothing of Ray is printed at all: ``tests/test_cli.py::test_tool_creates_items_and_prints_json``
checks it on its run of the CLI.

Each test runs the CLI as a subprocess on a fresh store; each starts a local Ray of its own
(about 10 s)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from local_runtime import local_client

ROWS = [{"name": "Rows", "attrs": [{"name": "n", "type": "numeric"}]}]
ARGS = {"dataContextName": "Rows", "collectionName": "Rows", "items": [{"values": {"n": i}} for i in range(5)]}


def _create_items(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    store = tmp_path / "store"
    with local_client(store) as engine:
        assert engine.create_data_context("Rows", ROWS).success
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "BATCHRAY_ADDRESS", "BATCHRAY_STORE")}
    done = subprocess.run([sys.executable, "-m", "batchray.api.cli", "tool", "batch_create_items", *flags,
                           "--json", json.dumps(ARGS), "--store", str(store)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _only_json(stdout: str) -> dict:
    answer = json.loads(stdout)  # raises on anything but one JSON document
    assert stdout.lstrip().startswith("{") and stdout.rstrip().endswith("}")
    assert answer["success"] is True and answer["itemsCreated"] == len(ARGS["items"])
    return answer


def test_tool_with_verbose_shows_ray_logs_on_stderr_only(tmp_path):
    done = _create_items(tmp_path, "-v")
    _only_json(done.stdout)
    assert "Started a local Ray instance" in done.stderr
