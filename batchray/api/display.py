"""How the front's objects show in a notebook and a terminal: HTML and short reprs.

* the client (:func:`client_repr`, :func:`client_html`): store, runtime, the coordinator's
  process (or "in process" on the local runtime), workers, and the Ray dashboard's link when
  Ray runs one;
* a batch result (:func:`result_html`): counts, duration, throughput and the first item errors
  as a table. :class:`~batchray.core.model.batch.BatchResult` lives in the core, which renders
  nothing: importing this module sets its ``html_renderer`` hook;
* a batch status (:class:`BatchStatusView`, :class:`BatchStatusList`): what
  ``Client.status`` returns. They are a dict and a list (so the tools serialise them as
  before) that draw a progress bar (``<progress>``), throughput, ETA, memory and state.

Contract: every value put in HTML goes through :func:`html.escape`; no store URL is shown with
its password (:func:`batchray.core.storage.postgres.url.redact`); drawing never raises (a
client whose runtime cannot answer is shown without what it could not tell).
"""
from __future__ import annotations

import html
import sys
from typing import Any, Iterable, Optional

from batchray.core.model.batch import BatchResult
from batchray.core.storage.postgres.url import redact

FIRST_ERRORS = 10
"""Item errors shown in a result's table (the rest are counted)."""

_RUNTIME_NAMES = {"RayRuntime": "ray", "LocalRuntime": "local"}
_ERROR_COLUMNS = ("index", "itemId", "field", "code", "message")


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else ("" if value is None else str(value))


def _seconds(value: Optional[float]) -> str:
    if value is None:
        return ""
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


def _bytes(value: Optional[int]) -> str:
    if value is None:
        return ""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"


def _facts_table(rows: Iterable[tuple[str, str]], title: str) -> str:
    """A two-column table; row values are HTML already escaped by the caller."""
    body = "".join(f"<tr><th style='text-align:left'>{_esc(name)}</th><td style='text-align:left'>{value}</td></tr>"
                   for name, value in rows)
    return f"<div><strong>{_esc(title)}</strong><table>{body}</table></div>"


# -- the client -------------------------------------------------------------------------------

def runtime_name(runtime: Any) -> str:
    """``ray``, ``local``, or the runtime's class name."""
    return _RUNTIME_NAMES.get(type(runtime).__name__, type(runtime).__name__)


def ray_dashboard_url() -> Optional[str]:
    """The Ray dashboard's URL when this process is connected to a Ray that runs one."""
    ray = sys.modules.get("ray")  # never imports Ray: a local-runtime client has none
    try:
        if ray is None or not ray.is_initialized():
            return None
        from ray._private.worker import get_dashboard_url

        url = get_dashboard_url()
    except Exception:  # noqa: BLE001 - no dashboard (include_dashboard=False), or an older Ray
        return None
    if not url:
        return None
    return url if "://" in url else f"http://{url}"


DISPLAY_TIMEOUT = 2.0
"""Seconds a client's display waits for the coordinator and its workers: a notebook's repr of
a client whose worker is down or stopped shows what answered instead of hanging."""


def client_facts(client: Any) -> dict[str, Any]:
    """What the client's displays show: ``{store, runtime, pid, workers, silent, shards,
    dashboard, memory}`` (``workers``: a count, ``None`` when the runtime could not say;
    ``silent``: how many of them did not answer within :data:`DISPLAY_TIMEOUT`)."""
    name = runtime_name(client.runtime)
    try:
        info = client.info(timeout=DISPLAY_TIMEOUT)
    except Exception:  # noqa: BLE001 - a display must not raise
        info = {}
    workers = info.get("workers")
    return {
        "store": redact(str(client.layout.root)),
        "runtime": name,
        "pid": info.get("pid"),
        "workers": len(workers) if isinstance(workers, list) else None,
        "silent": workers.count(None) if isinstance(workers, list) else 0,
        "shards": client.layout.shards,
        "dashboard": ray_dashboard_url() if name == "ray" else None,
        "memory": info.get("memory"),
    }


def client_repr(client: Any) -> str:
    """``<Client store=... runtime=ray workers=2>``, or ``runtime=local (in process)``."""
    name = runtime_name(client.runtime)
    store = redact(str(client.layout.root))
    if name == "local":
        return f"<Client store={store} runtime=local (in process)>"
    facts = client_facts(client)
    workers = facts["workers"]
    return f"<Client store={store} runtime={name}" + (f" workers={_workers(facts)}>" if workers is not None else ">")


def _workers(facts: dict[str, Any]) -> str:
    """The worker count, and how many of them did not answer."""
    count = _count(facts["workers"])
    return f"{count} ({facts['silent']} not answering)" if facts["silent"] else count


def client_html(client: Any) -> str:
    facts = client_facts(client)
    local = facts["runtime"] == "local"
    coordinator = f"in process (pid {facts['pid']})" if local else (
        f"pid {facts['pid']}" if facts["pid"] is not None else "not answering")
    rows = [("Store", _esc(facts["store"])), ("Runtime", _esc(facts["runtime"])),
            ("Coordinator", _esc(coordinator)),
            ("Workers", "in process" if local else _esc(_workers(facts))),
            ("Shards", _esc(_count(facts["shards"])))]
    memory = facts["memory"]
    if isinstance(memory, dict) and memory.get("limit") is not None:
        rows.append(("Memory in flight", _esc(f"{_bytes(memory.get('inUse'))} of {_bytes(memory.get('limit'))}")))
    if facts["dashboard"]:
        url = _esc(facts["dashboard"])
        rows.append(("Ray dashboard", f"<a href='{url}' target='_blank'>{url}</a>"))
    return _facts_table(rows, "batchray client")


# -- batch results ------------------------------------------------------------------------------

def _throughput(items: int, duration: float) -> Optional[float]:
    return items / duration if duration > 0 and items else None


def _errors_table(errors: list[dict[str, Any]], total: int) -> str:
    if not errors:
        return ""
    head = "".join(f"<th>{_esc(column)}</th>" for column in _ERROR_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{_esc(error.get(column))}</td>"
                                    for column in _ERROR_COLUMNS) + "</tr>"
                   for error in errors[:FIRST_ERRORS])
    more = f"<div>and {_esc(_count(total - FIRST_ERRORS))} more</div>" if total > FIRST_ERRORS else ""
    return f"<div><strong>Errors</strong> ({_esc(_count(total))})<table><tr>{head}</tr>{body}</table>{more}</div>"


def _result_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows for a result in its wire form (camelCase keys)."""
    done = sum(result.get(key) or 0 for key in ("itemsCreated", "itemsUpdated", "itemsDeleted"))
    duration = result.get("duration") or 0.0
    rate = _throughput(done, duration)
    rows = [("State", _esc(result.get("state"))), ("Success", _esc(result.get("success"))),
            ("Total items", _esc(_count(result.get("totalItems"))))]
    rows += [(label, _esc(_count(result.get(key)))) for label, key in
             (("Created", "itemsCreated"), ("Updated", "itemsUpdated"), ("Deleted", "itemsDeleted"),
              ("Failed", "itemsFailed")) if result.get(key)]
    rows += [("Chunks", _esc(_count(result.get("batchesProcessed")))), ("Duration", _esc(_seconds(duration))),
             ("Throughput", _esc(f"{rate:,.0f} items/s" if rate is not None else "")),
             ("Transaction", _esc(result.get("transactionId")))]
    error = result.get("error")
    if isinstance(error, dict):
        rows.append(("Error", _esc(f"{error.get('code', '')}: {error.get('message', '')}")))
    return rows


def result_html(result: BatchResult) -> str:
    wire = result.dump()
    return _facts_table(_result_rows(wire), "Batch result") + _errors_table(wire["errors"], len(wire["errors"]))


BatchResult.html_renderer = result_html


# -- batch statuses -------------------------------------------------------------------------------

def _progress_of(status: dict[str, Any]) -> tuple[int, int, dict[str, Any]]:
    """``(done, total, progress)``: the live progress while a batch runs (Ray), else its result's counts."""
    progress = status.get("progress") or {}
    result = status.get("result") or {}
    if result.get("success") is not None and "totalItems" in result:
        done = sum(result.get(key) or 0 for key in ("itemsCreated", "itemsUpdated", "itemsDeleted"))
        total = result.get("totalItems") or done
        return done, total, progress
    return progress.get("completed") or 0, progress.get("total") or 0, progress


def status_html(status: dict[str, Any]) -> str:
    done, total, progress = _progress_of(status)
    percent = f" ({100 * done / total:.0f}%)" if total else ""
    bar = (f"<progress value='{_esc(done)}' max='{_esc(max(total, 1))}' style='width:20em'></progress> "
           f"{_esc(_count(done))} / {_esc(_count(total))}{_esc(percent)}")
    rows = [("Batch", _esc(status.get("batchId"))), ("State", _esc(status.get("state"))),
            ("Kind", _esc(status.get("kind"))), ("Progress", bar)]
    if status.get("undoneBy"):
        rows.append(("Undone by", _esc(status["undoneBy"])))
    if progress.get("failed"):
        rows.append(("Failed", _esc(_count(progress["failed"]))))
    if progress.get("throughput"):
        rows.append(("Throughput", _esc(f"{progress['throughput']:,.0f} items/s")))
    if progress.get("etaSeconds") is not None and status.get("state") == "running":
        rows.append(("ETA", _esc(_seconds(progress["etaSeconds"]))))
    if status.get("queuePosition") is not None:
        rows.append(("Queue position", _esc(status["queuePosition"])))
    memory = status.get("memory")
    if isinstance(memory, dict) and memory.get("limit") is not None:
        rows.append(("Memory in flight", _esc(f"{_bytes(memory.get('inUse'))} of {_bytes(memory.get('limit'))}")))
    result = status.get("result") or {}
    html_out = _facts_table(rows, "Batch status")
    if result.get("success") is not None:
        html_out += _facts_table(_result_rows(result), "Result")
        errors = result.get("errors") or []
        html_out += _errors_table(errors, len(errors))
    return html_out


class BatchStatusView(dict):
    """A batch's status as ``Client.status(batch_id)`` returns it: the status dict (so it is
    JSON as it was), drawn in a notebook with a progress bar."""

    def _repr_html_(self) -> str:
        return status_html(self)


class BatchStatusList(list):
    """The recent batches as ``Client.status()`` returns them: a list of status dicts, drawn
    in a notebook as a table."""

    def _repr_html_(self) -> str:
        columns = ("batchId", "state", "kind", "queue", "submittedAt", "finishedAt")
        head = "".join(f"<th>{_esc(column)}</th>" for column in columns)
        body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{_esc(row.get(column))}</td>"
                                        for column in columns) + "</tr>" for row in self)
        return f"<div><strong>Recent batches</strong><table><tr>{head}</tr>{body}</table></div>"


def as_status(value: dict[str, Any] | list[dict[str, Any]]) -> BatchStatusView | BatchStatusList:
    """A runtime's status answer as the displayable dict (or list of them)."""
    if isinstance(value, list):
        return BatchStatusList(BatchStatusView(row) for row in value)
    return BatchStatusView(value)
