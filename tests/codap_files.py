"""The CODAP files the import, export and document tests read, and facts taken from their raw text.

Two sets of files share the same names (``mammals.csv``, ``24cats.codap``, ...):

* ``fixtures``: small files written for batchray in ``tests/fixtures/codap/`` (always there);
* ``codap-samples``: CODAP's own sample files, when a folder of them is present:
  ``$BATCHRAY_CODAP_SAMPLES``, else ``../shared/data/codap`` beside the repository. Point the
  variable at a missing folder (``BATCHRAY_CODAP_SAMPLES=/nonexistent``) to run on the fixtures
  alone; no test is skipped for want of the samples.

Tests that read these files are parametrised over every set present (the ``codap_dir`` fixture
in ``conftest.py``). Expected counts are read from the files themselves with the helpers below,
which parse the raw JSON or CSV independently of batchray's reader.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures" / "codap"
FIXTURES = "fixtures"
SAMPLES = "codap-samples"


def samples_dir() -> Path:
    """Where CODAP's own sample files are expected: $BATCHRAY_CODAP_SAMPLES, else ../shared/data/codap."""
    env = os.environ.get("BATCHRAY_CODAP_SAMPLES")
    return Path(env) if env else Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "codap"


def data_sets() -> dict[str, Path]:
    """Every set of files present, by name: the fixtures always, the samples when found."""
    sets = {FIXTURES: FIXTURES_DIR}
    if samples_dir().is_dir():
        sets[SAMPLES] = samples_dir()
    return sets


def data_set_name(directory: Path) -> str:
    return FIXTURES if Path(directory).resolve() == FIXTURES_DIR else SAMPLES


# -- CSV -----------------------------------------------------------------------------------------


def csv_rows(path: Path) -> list[dict]:
    """The CSV read by Python's csv module: empty cells missing, all-empty rows skipped."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]
    return [r for r in rows if r]


# -- CODAP v2 documents, read as plain JSON -------------------------------------------------------


def raw_document(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def raw_shape(path: Path, context: int = 0) -> list[tuple[str, str | None, int]]:
    """Per collection of one context, parents first: (name, parent collection's name, cases)."""
    collections = raw_document(path)["contexts"][context]["collections"]
    names = {c["guid"]: c["name"] for c in collections}
    shape = [(c["name"], names.get(c.get("parent")), len(c["cases"])) for c in collections]
    ordered: list[tuple[str, str | None, int]] = []
    while len(ordered) < len(shape):
        done = {name for name, _, _ in ordered}
        ordered += [s for s in shape if s[0] not in done and (s[1] is None or s[1] in done)]
    return ordered


def raw_case_counts(path: Path, context: int = 0) -> dict[str, int]:
    return {name: count for name, _, count in raw_shape(path, context)}


def raw_items(path: Path, context: int = 0) -> list[dict[str, Any]]:
    """The items of one context: each case of the child-most collection, in file order, with the
    values of its parent cases."""
    collections = raw_document(path)["contexts"][context]["collections"]
    cases = {case["guid"]: case for c in collections for case in c["cases"]}
    child_most = next(c for c in collections
                      if not any(o.get("parent") == c["guid"] for o in collections))
    items = []
    for case in child_most["cases"]:
        values: dict[str, Any] = {}
        while case is not None:
            values = {**case["values"], **values}
            case = cases.get(case.get("parent"))
        items.append(values)
    return items


def raw_attribute_id(path: Path, name: str) -> Any:
    """The guid of the attribute called ``name`` in the document."""
    return next(a["guid"] for ctx in raw_document(path)["contexts"] for c in ctx["collections"]
                for a in c["attrs"] if a["name"] == name)


def raw_component_count(path: Path) -> int:
    return len(raw_document(path)["components"])
