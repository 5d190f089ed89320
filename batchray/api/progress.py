"""Showing a batch's progress: a ``tqdm`` bar (a widget in Jupyter) and a user's callback.

A runtime reports progress as dicts ``{total, completed, failed, throughput, etaSeconds, ...}``
to :meth:`ProgressDisplay.update`; :meth:`ProgressDisplay.close` reports the final counts from
the batch's result, so the bar and the callback always end at the batch's true totals: the
callback's last call is always the final one, with the batch's final ``state``. Counts shown
while the batch runs never go backwards (a report below one already shown is skipped); the
final counts may be below them (a rolled-back batch keeps nothing of what it applied).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from batchray.core.model.batch import BatchResult


class ProgressDisplay:
    """A bar (when ``bar``) and a ``callback`` for one batch; inactive when neither is asked.

    The bar's total is the batch's count of items when it has one. An update's or a delete's
    plan counts its selectors, not the items they select (:data:`SELECTOR_KINDS`), so its bar
    counts without a total and shows no ETA (it showed ``0/1`` and then swapped between no total
    and the selectors' count); so does any bar once the items done pass its total."""

    SELECTOR_KINDS = ("update_items", "delete_items")

    def __init__(self, total: Optional[int], kind: str, *, bar: bool,
                 callback: Optional[Callable[[dict], Any]] = None) -> None:
        self.callback = callback
        self.seen = 0
        self.bar = None
        self.counted = kind not in self.SELECTOR_KINDS  # the totals the batch reports count its items
        if bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total if self.counted else None, unit="item", desc=kind.split("_")[0],
                            dynamic_ncols=True)

    @property
    def active(self) -> bool:
        return self.bar is not None or self.callback is not None

    def update(self, progress: dict[str, Any]) -> None:
        done = progress["completed"] + progress["failed"]
        if done < self.seen:
            return
        if self.bar is not None:
            if self.counted and progress.get("total") and done > progress["total"]:
                self.counted = False  # more done than the total: the total is no count of items
                self.bar.total = None
            elif self.counted and progress.get("total") and self.bar.total != progress["total"]:
                self.bar.total = progress["total"]
            self.bar.update(done - self.seen)
            if self.counted and progress.get("etaSeconds") is not None:
                self.bar.set_postfix(eta=f"{progress['etaSeconds']:.0f}s", refresh=False)
        self.seen = done
        if self.callback is not None:
            self.callback(dict(progress))

    def close(self, result: BatchResult) -> None:
        final = final_progress(result.model_dump(mode="json", by_alias=True, include={
            "transaction_id", "total_items", "items_created", "items_updated", "items_deleted", "items_failed", "state"}))
        if self.callback is not None:
            self.callback(final)
        if self.bar is not None:
            self.bar.set_postfix(refresh=False)  # the last ETA reported: none is left
            self.bar.update(max(0, final["completed"] + final["failed"] - self.seen))
            self.bar.close()


def final_progress(result: dict[str, Any]) -> dict[str, Any]:
    """The progress a batch ended with, from its result as JSON (``BatchResult.dump()``, or the
    result a batch's status holds): ``{batchId, total, completed, failed, throughput, state}``."""
    return {"batchId": result.get("transactionId"), "total": result.get("totalItems"),
            "completed": sum(result.get(key) or 0 for key in ("itemsCreated", "itemsUpdated", "itemsDeleted")),
            "failed": result.get("itemsFailed") or 0, "throughput": 0.0, "state": result.get("state")}


class ProgressLog:
    """A ``callback`` that keeps the progress a batch reported, for a caller that reads it after
    the batch (a tool's ``progressCallback``): at most ``limit`` snapshots, spread evenly over
    the batch, the last one (the batch's final counts) always kept."""

    def __init__(self, limit: int = 100) -> None:
        self.limit = max(2, limit)
        self._kept: list[dict[str, Any]] = []
        self._every = 1  # keep one report in this many (doubled whenever the list fills)
        self._seen = 0
        self._last: Optional[dict[str, Any]] = None

    def __call__(self, progress: dict[str, Any]) -> None:
        self._last = dict(progress)
        if self._seen % self._every == 0:
            self._kept.append(self._last)
            if len(self._kept) >= 2 * self.limit:
                self._kept = self._kept[::2]
                self._every *= 2
        self._seen += 1

    def snapshots(self) -> list[dict[str, Any]]:
        kept = list(self._kept)
        if self._last is not None and (not kept or kept[-1] is not self._last):
            kept.append(self._last)
        if len(kept) > self.limit:
            step = (len(kept) - 1) / (self.limit - 1)
            kept = [kept[round(i * step)] for i in range(self.limit)]
        return kept

