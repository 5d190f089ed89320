"""The example notebooks (``examples/``) run top to bottom, and are committed without outputs.

Each notebook is executed with ``nbclient`` in a kernel of this test's own Python (the
``python3`` kernel of the environment running pytest), from a copy in a temporary folder laid
out like the repository (``examples/`` beside the one fixture a notebook reads), with this
checkout first on the kernel's ``PYTHONPATH``. Every kernel is its own process, a driver that
joins the test session's Ray through ``RAY_ADDRESS`` (as a notebook joins a cluster; starting
a local Ray costs each kernel about 5 s, and ``batchray demo`` and the CLI tests start theirs)
and leaves it at its end. The PostgreSQL notebook runs its PostgreSQL
cells when ``BATCHRAY_TEST_PG_DSN`` is set and skips them (saying so) otherwise.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "examples"
NOTEBOOKS = ["quickstart.ipynb", "concurrent_loads.ipynb", "codap_documents.ipynb", "postgres_and_clusters.ipynb",
             "raydata.ipynb"]
FIXTURES_READ = {"codap_documents.ipynb": ["tests/fixtures/codap/24cats.codap"]}
CELL_TIMEOUT_S = 300


def _named_actors(ray) -> set[str]:
    """The live named actors of batchray's namespace (its stores' coordinators, workers and
    progress actors; Ray Data keeps singletons of its own elsewhere)."""
    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == "batchray"}


def read(name: str):
    return nbformat.read(EXAMPLES / name, as_version=4)


def test_examples_are_the_documented_notebooks():
    assert sorted(p.name for p in EXAMPLES.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebooks_are_stripped(name):
    notebook = read(name)
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == "python3"
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name}: a cell keeps its outputs"
            assert cell.execution_count is None, f"{name}: a cell keeps its execution count"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_have_a_parameters_cell_first(name):
    """The first code cell prints the kernel's Python; the second holds the settings a reader
    changes (``N``, the number of items, where the notebook loads any)."""
    code = [cell for cell in read(name).cells if cell.cell_type == "code"]
    assert "print(sys.executable)" in code[0].source
    assert "parameters" in code[1].metadata.get("tags", [])
    if name != "codap_documents.ipynb":
        assert "N = " in code[1].source and "1_000_000" in code[1].source


@pytest.mark.ray
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name, tmp_path, monkeypatch, ray_session):
    (tmp_path / "examples").mkdir()
    shutil.copy(EXAMPLES / name, tmp_path / "examples" / name)
    for fixture in FIXTURES_READ.get(name, []):
        (tmp_path / fixture).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / fixture, tmp_path / fixture)
    # the kernel inherits this environment: this checkout's batchray, the session's Ray to join
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("RAY_ADDRESS", ray_session.get_runtime_context().gcs_address)

    notebook = read(name)
    temp_before = set(Path(tempfile.gettempdir()).glob("batchray-*"))
    actors_before = _named_actors(ray_session)
    client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path / "examples")}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    printed = "".join(out.get("text", "") for out in code[0].outputs if out.output_type == "stream").strip()
    assert Path(printed).parent == Path(sys.executable).parent, "the kernel runs another Python"
    assert all(cell.execution_count for cell in code)
    left = set(Path(tempfile.gettempdir()).glob("batchray-*")) - temp_before
    assert not left, f"the notebook left its temporary folders behind: {sorted(map(str, left))}"
    # its stores' coordinators, workers and progress actors (detached, named) were stopped
    deadline = time.monotonic() + 15
    while (stayed := _named_actors(ray_session) - actors_before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not stayed, f"the notebook left actors running in the cluster it joined: {sorted(stayed)}"
    if name == "postgres_and_clusters.ipynb":
        text = "".join(out.get("text", "") for cell in code for out in cell.outputs)
        skipped = "skipped: no PostgreSQL" in text
        assert skipped == (not os.environ.get("BATCHRAY_TEST_PG_DSN"))
