"""batchray's Grafana dashboard, shipped as package data (``batchray.json`` beside this module).

The dashboard's panels query the series batchray exports through Ray's metrics API, by the
names Ray's Prometheus endpoint gives them (Ray prefixes application metrics with ``ray_``):
throughput, items by outcome, batches running and queued, memory in use against the budget,
lock conflicts and 2PC phase durations (see ``docs/dashboards.md``). It selects a Prometheus
data source (``$datasource``) and Ray sessions (``$SessionName``) like Ray's own dashboards.

* :func:`dashboard_text` / :func:`dashboard`: the JSON, as shipped / parsed.
* :func:`queried_series`: the metric names the panels' ``expr`` query (what a test checks
  against a scrape of Ray's endpoint).
* :func:`main`: ``batchray dashboard [--output PATH]`` and ``python -m batchray.api.dashboards``
  print it, or write it to a file for Grafana's import.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Optional

DASHBOARD_FILE = "batchray.json"
SERIES_PREFIX = "ray_batchray_"
_SERIES = re.compile(r"\b" + SERIES_PREFIX + r"[a-z_]+\b")


def dashboard_text() -> str:
    """The dashboard JSON, exactly as shipped."""
    return resources.files(__package__).joinpath(DASHBOARD_FILE).read_text(encoding="utf-8")


def dashboard() -> dict[str, Any]:
    return json.loads(dashboard_text())


def panel_exprs(board: Optional[dict[str, Any]] = None) -> list[str]:
    """Every panel target's PromQL expression, in panel order."""
    board = dashboard() if board is None else board
    return [target["expr"] for panel in board["panels"] for target in panel.get("targets", ())]


def queried_series(board: Optional[dict[str, Any]] = None) -> set[str]:
    """The batchray series the panels query (histogram series with their ``_bucket``,
    ``_sum`` or ``_count`` suffix, as Prometheus exposes them)."""
    return {name for expr in panel_exprs(board) for name in _SERIES.findall(expr)}


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--output", "-o", help="write the dashboard JSON to this file (default: print it)")
    return parser


def write(output: Optional[str]) -> int:
    """Print the dashboard, or write it to ``output`` (replacing a file there, whole or not at
    all); the exit status. A path that cannot be written (its folder missing or not writable)
    is a :class:`~batchray.errors.DocumentError` (``unwritable``) naming it."""
    text = dashboard_text()
    if output is None:
        sys.stdout.write(text)
    else:
        from batchray.io.paths import write_aside

        write_aside(Path(output), lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=True)
        print(f"wrote the batchray Grafana dashboard to {output}", file=sys.stderr)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(
        prog="python -m batchray.api.dashboards", description="print batchray's Grafana dashboard JSON"))
    return write(parser.parse_args(argv).output)
