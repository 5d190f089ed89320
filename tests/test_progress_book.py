"""ProgressBook (batchray/core/run/progress.py): running counts, throughput and the finished
batches it keeps, event by event (no Ray; fast)."""
from __future__ import annotations

import random

from batchray.core.run.progress import ProgressBook


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_running_batches_and_their_throughput_are_counted_and_finished_ones_are_not():
    clock = _Clock()
    book = ProgressBook(clock=clock)
    book.start("a", 100, "create_items")
    book.start("b", 50, "create_items")
    assert book.running() == 2 and book.total_throughput() == 0
    clock.now += 1.0
    book.report("a", 40)
    book.report("b", 10)
    assert book.total_throughput() == 50.0
    book.finish("a", "completed")
    assert book.running() == 1 and book.total_throughput() == 10.0
    assert book.get("a")["state"] == "completed" and book.get("a")["completed"] == 40
    book.finish("a", "completed")  # told twice: still one finished batch
    assert book.running() == 1
    book.report("c", 5)  # increments that came before the batch's start: it is running
    assert book.running() == 2
    book.start("c", 20, "update_items")
    assert book.get("c")["completed"] == 5 and book.get("c")["total"] == 20 and book.running() == 2
    book.start("a", 7, "create_items")  # the id started again: running, counts anew
    assert book.running() == 3 and book.get("a")["completed"] == 0


def test_the_most_recently_finished_are_kept_and_running_batches_never_dropped():
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    book = ProgressBook(keep=5, clock=_Clock())
    running: set[str] = set()
    finished: list[str] = []  # in the order they finished
    for n in range(300):
        if running and rng.random() < 0.5:
            txn = rng.choice(sorted(running))
            running.discard(txn)
            book.finish(txn, rng.choice(["completed", "rolled_back"]))
            finished.append(txn)
        else:
            txn = f"t{n}"
            book.start(txn, 10, "create_items")
            running.add(txn)
            # a start trims the finished ones to the 5 that finished last
            kept = finished[-5:]
            assert all(book.get(t) is not None for t in kept), seed
            assert all(book.get(t) is None for t in finished[:-5]), seed
        assert book.running() == len(running), seed
        assert all(book.get(t)["state"] == "running" for t in running), seed


def test_a_late_increment_of_a_batch_no_longer_kept_does_not_bring_it_back_running():
    """Workers and the coordinator report apart: an increment of a batch that finished and was
    trimmed since made it a running batch again, for good (the gauge of running batches
    counted it ever after)."""
    book = ProgressBook(keep=2, clock=_Clock())
    for txn in ("a", "b", "c"):
        book.start(txn, 10, "create_items")
        book.finish(txn, "completed")
    book.start("d", 10, "create_items")  # trims "a"
    assert book.get("a") is None and book.running() == 1
    book.report("a", 3)
    assert book.get("a") is None and book.running() == 1
    book.start("a", 5, "create_items")  # started again on purpose: it runs
    assert book.running() == 2 and book.get("a")["state"] == "running"


def test_no_eta_once_the_count_passes_the_total():
    """An update's plan counts its selectors, and a query selects any number of items: once the
    count passes that total nothing is known of what is left (the ETA was clamped to 0 s)."""
    clock = _Clock()
    book = ProgressBook(clock=clock)
    book.start("u", 2, "update_items")
    clock.now += 1.0
    book.report("u", 1)
    assert book.get("u")["etaSeconds"] == 1.0
    clock.now += 1.0
    book.report("u", 500)
    assert book.get("u")["completed"] == 501 and book.get("u")["etaSeconds"] is None


def test_a_report_just_after_the_start_does_not_make_the_throughput_absurd():
    """Workers' first reports reach the progress actor right after the batch's start (or before
    it): the rate was taken over that microsecond, 10,000 items in 0.1 ms read 100,000,000
    items/s, and the moving average kept it for seconds, with an ETA of 0 s while half the
    batch was still to come."""
    clock = _Clock()
    book = ProgressBook(clock=clock)
    book.start("a", 200_000, "create_items")
    clock.now += 0.0001
    book.report("a", 10_000)
    for _ in range(10):  # then 100,000 items/s, reported every 0.1 s
        clock.now += 0.1
        book.report("a", 10_000)
    progress = book.get("a")
    assert 50_000 <= progress["throughput"] <= 200_000, progress
    assert progress["etaSeconds"] is not None and 0.5 <= progress["etaSeconds"] <= 2.0, progress
    book.report("b", 10_000)  # increments before the start: the same
    clock.now += 0.1
    book.report("b", 10_000)
    assert book.get("b")["throughput"] <= 200_000, book.get("b")


def test_a_batch_that_stops_reporting_reads_as_slowing_down_not_at_its_last_rate():
    """A batch waiting (for a lock, for memory, for input) reports nothing: its throughput
    stayed at the last rate read and its ETA stood still, 7 s for as long as it waited. Past
    ``tau`` seconds of quiet its rate decays, and its ETA grows; the next report reads the rate
    over the quiet time."""
    clock = _Clock()
    book = ProgressBook(clock=clock)
    book.start("w", 1000, "create_items")
    for _ in range(3):  # 100 items/s
        clock.now += 1.0
        book.report("w", 100)
    live = book.get("w")
    assert live["throughput"] > 50 and live["etaSeconds"] < 14, live
    clock.now += book.tau  # quiet, but no longer than a slow chunk may take
    assert book.get("w")["throughput"] == live["throughput"]
    clock.now += 30.0  # waiting
    stalled = book.get("w")
    assert stalled["throughput"] < 1 and stalled["etaSeconds"] > 700, stalled
    assert book.total_throughput() < 1
    clock.now += 1.0
    book.report("w", 100)  # moving again: 100 items over the 33 s since the last rate
    assert 1 < book.get("w")["throughput"] < 10, book.get("w")
    book.finish("w", "failed")
    assert book.get("w")["etaSeconds"] is None
