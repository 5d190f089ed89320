"""Two test processes (pytest-xdist; ``-n 2 --dist loadgroup`` in pyproject.toml), and which
tests must not share them.

Two groups of tests run each in one test process, one test after another, in the order
collected; every other test runs alone, in whichever process is free (pure ones, on files and
stores of their own):

* :data:`FAULTS`: the fault tests (marked ``faults``, or taking the fault cluster ``cluster``).
  They kill processes of Ray clusters of their own (the fault cluster, started once for them
  all, or one a test starts) and restart PostgreSQL servers of their own.
* :data:`SESSION`: the tests that take the session's Ray (``ray_session``: it is started once
  per test process, so they share one), or are marked ``ray`` (they start Ray clusters, count
  a cluster's actors) or ``postgres`` (they hold the shared server's prepared transactions and
  connections).

How the groups reach the scheduler: the controller process does not collect, and pytest 9.2's
node ids no longer take the ``@group`` suffix by which xdist's own ``loadgroup`` groups tests.
So each worker, once it has collected, writes the group of each of its grouped tests to a file
named by the run's id (:func:`record`), and the controller's scheduler
(``SerialScheduling``, :func:`make_scheduler`), which cuts the collection into work units only
after every worker has sent its collection, reads it: a group is one unit, every other test a
unit of its own (xdist's ``LoadScopeScheduling`` hands out the largest units first).
"""
from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path
from typing import Iterable, Optional

import pytest

FAULTS = "faults"
SESSION = "session"

FAULT_FIXTURES = frozenset({"cluster"})
SESSION_FIXTURES = frozenset({"ray_session"})
SESSION_MARKERS = frozenset({"ray", "postgres"})


def group_of(item) -> Optional[str]:
    """The group ``item`` runs in, or None: it runs alone."""
    fixtures = set(getattr(item, "fixturenames", ()))
    marks = {mark.name for mark in item.iter_markers()}
    if "faults" in marks or FAULT_FIXTURES & fixtures:
        return FAULTS
    if SESSION_MARKERS & marks or SESSION_FIXTURES & fixtures:
        return SESSION
    return None


def _list_path(run_id: str) -> Path:
    return Path(tempfile.gettempdir()) / f"pytest-serial-{run_id}.txt"


def give_run_id(config) -> None:
    """On the controller of a distributed run: fix the run's id (xdist passes it to every
    worker as ``PYTEST_XDIST_TESTRUNUID``) so that the scheduler knows the file's name."""
    if getattr(config.option, "testrunuid", "") is None:
        config.option.testrunuid = uuid.uuid4().hex


def record(items: Iterable) -> None:
    """On a worker of a distributed run (none elsewhere): write ``node id<TAB>group`` of each
    grouped item, whole or not at all (every worker writes the same list)."""
    run_id, worker = os.environ.get("PYTEST_XDIST_TESTRUNUID"), os.environ.get("PYTEST_XDIST_WORKER")
    if not run_id or not worker:
        return
    path = _list_path(run_id)
    scratch = path.with_name(f"{path.name}.{worker}")
    groups = ((item.nodeid, group_of(item)) for item in items)
    scratch.write_text("".join(f"{nodeid}\t{group}\n" for nodeid, group in groups if group))
    os.replace(scratch, path)


def make_scheduler(config, log) -> Optional[object]:
    """The scheduler of ``--dist loadgroup`` runs (None for any other ``--dist``)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SerialScheduling(LoadScopeScheduling):
        """xdist's scope scheduling, the scope of a test being its group or the test alone."""

        groups: Optional[dict[str, str]] = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:
                path = _list_path(config.getoption("testrunuid"))
                try:
                    lines = path.read_text().splitlines()
                except FileNotFoundError:
                    raise RuntimeError(f"no worker wrote the groups of the tests ({path})") from None
                path.unlink()
                self.groups = dict(line.split("\t") for line in lines)
            return self.groups.get(nodeid, nodeid)

    return SerialScheduling(config, log)


# -- the hooks, for a conftest to import (tests/conftest.py runs record() in its own
# pytest_collection_modifyitems) ----------------------------------------------------------------

def pytest_configure(config):
    give_run_id(config)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist's: none without it
def pytest_xdist_make_scheduler(config, log):
    return make_scheduler(config, log)


def pytest_collection_modifyitems(config, items):
    record(items)
