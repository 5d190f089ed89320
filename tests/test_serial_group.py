"""The suite's two test processes (tests/serial_group.py), checked on a small suite of its own
run by pytest-xdist in a subprocess: each group's tests run in one process, one after another,
in the order collected; the other tests run beside them. (xdist's own ``loadgroup`` grouping,
by a suffix on node ids, does nothing under pytest 9.2: this is what would show it.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

pytest.importorskip("xdist")

TESTS = Path(__file__).resolve().parent

CONFTEST = '''
import json, os, sys
sys.path.insert(0, {tests!r})
import pytest
from serial_group import pytest_configure, pytest_xdist_make_scheduler, pytest_collection_modifyitems

@pytest.fixture(scope="session")
def ray_session():  # a stand-in: the name is what groups a test
    yield None

@pytest.fixture
def note(request):
    import time
    started = time.monotonic()
    yield
    with open(os.environ["NOTES"], "a") as f:
        f.write(json.dumps({{"test": request.node.name, "worker": os.environ.get("PYTEST_XDIST_WORKER"),
                            "start": started, "end": time.monotonic()}}) + "\\n")
'''

SUITE = '''
import time
import pytest

@pytest.mark.faults
@pytest.mark.parametrize("n", range(4))
def test_fault(note, n):
    time.sleep(0.2)

@pytest.mark.parametrize("n", range(3))
def test_session(note, ray_session, n):
    time.sleep(0.2)

@pytest.mark.postgres
def test_server(note):
    time.sleep(0.2)

@pytest.mark.parametrize("n", range(6))
def test_alone(note, n):
    time.sleep(0.1)
'''


def test_each_group_runs_in_one_process_in_order_and_the_rest_beside(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST.format(tests=str(TESTS)))
    (tmp_path / "test_small.py").write_text(SUITE)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    faults: f\n    postgres: p\n")
    notes = tmp_path / "notes.jsonl"
    run_id = uuid.uuid4().hex
    env = {name: value for name, value in os.environ.items() if not name.startswith("PYTEST_XDIST_")}
    env["NOTES"] = str(notes)
    done = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "--testrunuid", run_id,
                           "-q", "-p", "no:cacheprovider", "test_small.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = [json.loads(line) for line in notes.read_text().splitlines()]
    assert len(runs) == 4 + 3 + 1 + 6

    def of(prefix: str) -> list[dict]:
        return [r for r in runs if r["test"].startswith(prefix)]

    faults, session = of("test_fault"), of("test_session") + of("test_server")
    for group, names in ((faults, [f"test_fault[{n}]" for n in range(4)]),
                         (session, [f"test_session[{n}]" for n in range(3)] + ["test_server"])):
        assert len({r["worker"] for r in group}) == 1, group
        ordered = sorted(group, key=lambda r: r["start"])
        assert [r["test"] for r in ordered] == names, "a group runs in the order collected"
        assert all(a["end"] <= b["start"] for a, b in zip(ordered, ordered[1:])), "one after another"
    assert {r["worker"] for r in faults} != {r["worker"] for r in session}, "the two groups run side by side"
    assert {r["worker"] for r in of("test_alone")} <= {"gw0", "gw1"}
    assert not (Path(tempfile.gettempdir()) / f"pytest-serial-{run_id}.txt").exists(), "the scheduler read the groups"
