"""The Grafana dashboard (``batchray dashboard``) queries series that Ray's endpoint exports.

A Ray of its own, in a subprocess (the shared session has no metrics export port, and the
port is fixed when Ray starts), with ``_metrics_export_port`` on a free loopback port, runs
a small store through every series the dashboard shows:

* a non-atomic create, one item a chunk, with one invalid item (items ``completed`` and ``failed``);
* two update batches on the same item, the younger (selecting by a query) submitted while the
  older (selecting by ids, two chunks) holds the item's lock (each applied chunk takes a second,
  ``shard_apply_delay``): wait-die makes the younger one meet a lock conflict
  (``batchray_lock_conflicts_total``);
* every batch's 2PC phases (``batchray_phase_seconds``), batches running and queued, memory.

Then it scrapes ``http://127.0.0.1:PORT/metrics`` until every series the dashboard's panel
``expr``s name appears (Ray exports every few seconds: polled, at most 60 s). Without Ray
only the dashboard's own checks run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from batchray.api.dashboards import dashboard, dashboard_text, panel_exprs, queried_series

REPO_ROOT = Path(__file__).resolve().parent.parent
SERIES = {
    "ray_batchray_throughput_items_per_second", "ray_batchray_items_total",
    "ray_batchray_batches_running", "ray_batchray_batches_queued",
    "ray_batchray_memory_in_use_bytes", "ray_batchray_memory_budget_bytes",
    "ray_batchray_lock_conflicts_total", "ray_batchray_phase_seconds_bucket",
    "ray_batchray_phase_seconds_sum", "ray_batchray_phase_seconds_count",
}

SCRIPT = textwrap.dedent('''
    import json, socket, sys, threading, time, urllib.request

    import ray

    import batchray

    store, wanted = sys.argv[1], set(json.loads(sys.argv[2]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace="batchray",
             log_to_driver=False, _metrics_export_port=port)
    client = batchray.connect(store, workers=1, shards=1, progress=False, shard_apply_delay=1.0)
    assert client.create_data_context("Dash", [{"name": "Rows", "attrs": [{"name": "n", "type": "numeric"}]}]).success
    created = client.create_items("Dash", "Rows", [{"n": 1}, {"n": "not a number"}, {"n": 3}],
                                  atomic=False, batch_size=1)
    assert created.items_created == 2 and len(created.errors) == 1, created

    def update(selectors, value):
        client.update_items("Dash", [{"selector": s, "values": {"n": value}} for s in selectors],
                            max_retries=1, batch_size=1)

    # the older batch is two chunks (a batch of one chunk at one participant would commit in
    # one phase, its lock gone before the modelled 1 s of apply time ends): it holds the item's
    # lock through its applies until phase 2
    older = threading.Thread(target=update, args=([{"itemId": i} for i in created.item_ids], 10))
    older.start()
    time.sleep(0.4)  # the older batch's first chunk holds the item's lock for its 1 s apply
    # a batch that finds its items while running (a query) dies rather than wait (wait-die);
    # one whose items are known when planned would wait its turn and meet no conflict
    update([{"query": "n == 1"}], 20)
    older.join()

    seen, deadline = set(), time.time() + 60
    while time.time() < deadline:
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        except OSError:
            body = ""
        # Ray stops exporting a gauge that was not set for a while: count a series once seen
        seen |= {line.split("{")[0].split(" ")[0] for line in body.splitlines() if line.startswith("ray_batchray_")}
        if wanted <= seen:
            break
        time.sleep(1)
    client.shutdown()
    ray.shutdown()
    print("SEEN " + json.dumps(sorted(seen)))
''')


def test_the_dashboard_queries_the_series_batchray_exports():
    board = dashboard()
    assert json.loads(dashboard_text()) == board
    assert queried_series(board) == SERIES
    titles = [panel["title"] for panel in board["panels"]]
    assert titles == ["Throughput", "Items by outcome", "Batches running and queued",
                      "Memory in use against the budget", "Lock conflicts", "2PC phase durations"]
    assert any("by (outcome)" in e for e in panel_exprs(board))
    assert any("by (phase, le)" in e for e in panel_exprs(board))
    assert {panel["id"] for panel in board["panels"]} == set(range(1, 7))


def test_batchray_dashboard_prints_or_writes_the_json(tmp_path, capsys):
    from batchray.api.cli import main

    assert main(["dashboard"]) == 0
    assert json.loads(capsys.readouterr().out) == dashboard()
    target = tmp_path / "batchray.json"
    assert main(["dashboard", "--output", str(target)]) == 0
    assert json.loads(target.read_text()) == dashboard()


def test_a_dashboard_path_that_cannot_be_written_is_a_structured_error(tmp_path, capsys):
    from batchray.api.cli import main

    target = tmp_path / "no-such-folder" / "board.json"
    assert main(["dashboard", "--output", str(target)]) == 1
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["code"] == "DOCUMENT" and error["details"]["reason"] == "unwritable", error
    assert str(target) in error["message"] and not (tmp_path / "no-such-folder").exists()


@pytest.mark.ray
def test_every_series_the_dashboard_queries_is_on_rays_metrics_endpoint(tmp_path):
    pytest.importorskip("ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_metrics_report_interval_ms": "1000",  # Ray's default 10 s between reports: the test waited for them
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    wanted = sorted(queried_series())
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "store"), json.dumps(wanted)],
                          env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    lines = [line for line in done.stdout.splitlines() if line.startswith("SEEN ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    seen = set(json.loads(lines[-1][len("SEEN "):]))
    assert set(wanted) - seen == set(), f"missing from Ray's endpoint: {sorted(set(wanted) - seen)}"


class _Metric:
    """A stand-in for a ``ray.util.metrics`` object: its last value (a counter: its sum)."""

    made: dict = {}

    def __init__(self, name, description="", tag_keys=(), **options):
        self.value = None
        _Metric.made[name] = self

    def set(self, value, tags=None):
        self.value = value

    def inc(self, value=1, tags=None):
        self.value = (self.value or 0) + value


def test_the_throughput_gauge_falls_to_zero_when_the_last_running_batch_ends(monkeypatch):
    """The progress actor's gauges, read as Ray would export them: the throughput of the running
    batches, which is 0 once none runs (it kept the last batch's rate, the panel showing items
    per second while nothing ran)."""
    pytest.importorskip("ray")
    import ray.util.metrics

    from actors.progress import ProgressActor

    monkeypatch.setattr(ray.util.metrics, "Gauge", _Metric)
    monkeypatch.setattr(ray.util.metrics, "Counter", _Metric)
    clock = [1000.0]
    actor = ProgressActor.__ray_actor_class__()
    actor.book.clock = lambda: clock[0]
    throughput = _Metric.made["batchray_throughput_items_per_second"]
    actor.apply([("start", ("a", 100, "create_items")), ("start", ("b", 100, "create_items"))])
    clock[0] += 1.0
    actor.apply([("report", ("a", 40, 0, "create_items")), ("report", ("b", 10, 0, "create_items"))])
    assert throughput.value == 50.0
    actor.apply([("finish", ("a", "completed"))])
    assert throughput.value == 10.0 and _Metric.made["batchray_batches_running"].value == 1
    actor.apply([("restart", ("b",))])  # b runs again from its start: no rate yet
    assert throughput.value == 0
    clock[0] += 1.0
    actor.apply([("report", ("b", 30, 0, "create_items")), ("finish", ("b", "rolled_back"))])
    assert throughput.value == 0 and _Metric.made["batchray_batches_running"].value == 0
    assert _Metric.made["batchray_items_total"].value == 80


def test_the_memory_budget_is_reported_before_any_batch_runs(tmp_path):
    """The coordinator service tells its progress hook the budget's limit when it starts, so the
    dashboard's budget series is there before the first batch (a store whose batches all take
    the direct lane never passes one through the service)."""
    from service_harness import in_process_services

    class Memory:
        def __init__(self):
            self.reports = []

        def memory(self, in_use, limit=None):
            self.reports.append((in_use, limit))

    with in_process_services(tmp_path, "M", Memory) as (engine, make_service):
        service, progress = make_service()
        assert progress.reports == [(0, service.budget.limit)]
