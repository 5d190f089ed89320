"""Showing a batch's progress: a ``tqdm`` bar (a widget in Jupyter) and a user's callback.

A runtime reports progress as dicts ``{total, completed, failed, throughput, etaSeconds, ...}``
to :meth:`ProgressDisplay.update`; :meth:`ProgressDisplay.close` reports the final counts from
the batch's result, so the bar and the callback always end at the batch's true totals.
Counts shown never go backwards.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from batchray.core.model.batch import BatchResult


class ProgressDisplay:
    """A bar (when ``bar``) and a ``callback`` for one batch; inactive when neither is asked."""

    def __init__(self, total: Optional[int], kind: str, *, bar: bool,
                 callback: Optional[Callable[[dict], Any]] = None) -> None:
        self.callback = callback
        self.seen = 0
        self.bar = None
        if bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="item", desc=kind.split("_")[0], dynamic_ncols=True)

    @property
    def active(self) -> bool:
        return self.bar is not None or self.callback is not None

    def update(self, progress: dict[str, Any]) -> None:
        done = progress["completed"] + progress["failed"]
        if done < self.seen:
            return
        if self.bar is not None:
            if progress.get("total") and self.bar.total != progress["total"]:
                self.bar.total = progress["total"]
            self.bar.update(done - self.seen)
            if progress.get("etaSeconds") is not None:
                self.bar.set_postfix(eta=f"{progress['etaSeconds']:.0f}s", refresh=False)
        self.seen = done
        if self.callback is not None:
            self.callback(dict(progress))

    def close(self, result: BatchResult) -> None:
        final = {"total": result.total_items, "completed": result.items_created + result.items_updated +
                 result.items_deleted, "failed": len(result.errors), "throughput": 0.0, "state": result.state.value}
        if self.callback is not None and final["completed"] + final["failed"] >= self.seen:
            self.callback(final)
        if self.bar is not None:
            self.bar.update(max(0, final["completed"] + final["failed"] - self.seen))
            self.bar.close()
