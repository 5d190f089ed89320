"""Shared fixtures. Ray-backed fixtures live in tests/ray_fixtures.py and are imported here."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def codap_data_path() -> Path:
    """Where the real CODAP sample files are: $BATCHRAY_CODAP_DATA, else ../shared/data/codap."""
    env = os.environ.get("BATCHRAY_CODAP_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "codap"


@pytest.fixture(scope="session")
def codap_dir() -> Path:
    path = codap_data_path()
    if not path.is_dir():
        pytest.skip(f"CODAP sample data not found at {path} (set BATCHRAY_CODAP_DATA)")
    return path
