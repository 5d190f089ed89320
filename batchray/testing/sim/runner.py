"""Many seeds: :func:`run_seeds` (in worker processes when asked) and the command line.

Contract: :func:`run_seeds` totals the results in seed order; with ``jobs`` above one it
runs seeds in spawned processes, returning the trace of failing seeds only. :func:`main` is
``python -m batchray.testing.sim`` and exits 1 when a seed breaks an invariant, printing the
command that replays it.
"""
from __future__ import annotations

import argparse
import time
from typing import Any, Iterator, Optional

from batchray.testing.sim.config import Faults, SimConfig
from batchray.testing.sim.results import SimResult, Totals
from batchray.testing.sim.simulation import Simulation, simulate


def run_seeds(seeds: range | list[int], config: Optional[SimConfig] = None, *, jobs: int = 1,
              progress: Optional[Any] = None, stop_on_failure: bool = False) -> Totals:
    """Run many seeds (in ``jobs`` processes when more than one) and total them."""
    totals = Totals()
    started = time.perf_counter()
    if jobs <= 1:
        results: Iterator[SimResult] = (simulate(s, config) for s in seeds)
        pool = None
    else:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(jobs)
        results = pool.imap(_simulate_quiet, [(s, config) for s in seeds], chunksize=8)
    finished = False
    try:
        for result in results:
            totals.add(result)
            if progress is not None:
                progress(totals, result)
            if stop_on_failure and not result.ok:
                break
        else:
            finished = True
    finally:
        if pool is not None:
            if finished:  # let the processes end and be reaped: their CPU then counts as the caller's children's
                pool.close()
            else:
                pool.terminate()
            pool.join()
    totals.seconds = time.perf_counter() - started
    return totals


def _simulate_quiet(args: tuple[int, Optional[SimConfig]]) -> SimResult:
    seed, config = args
    result = simulate(seed, config)
    result.trace = result.trace if not result.ok else []
    return result


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m batchray.testing.sim",
        description="Seeded simulation of two-phase commit over SQLite shards with crashes, restarts, "
        "lost, delayed and duplicated messages; checks the invariants for every seed.",
    )
    parser.add_argument("--seeds", type=int, default=300, help="how many seeds to run (default 300)")
    parser.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--seed", type=int, help="run this one seed only (a replay)")
    parser.add_argument("--txns", type=int, default=50, help="transactions per seed (default 50)")
    parser.add_argument("--jobs", type=int, default=1, help="processes to run seeds in (default 1)")
    parser.add_argument("--trace", action="store_true", help="with --seed: print the whole trace")
    parser.add_argument("--keep", action="store_true", help="with --seed: keep the store files and print where")
    parser.add_argument("--no-faults", action="store_true", help="run without any fault")
    parser.add_argument("--stop", action="store_true", help="stop at the first failing seed")
    args = parser.parse_args(argv)
    config = SimConfig(txns=args.txns, faults=Faults.none() if args.no_faults else Faults())

    if args.seed is not None:
        sim = Simulation(args.seed, config, keep_trace=args.trace, keep_files=args.keep)
        result = sim.run()
        if args.trace:
            for number, fields in enumerate(result.trace):
                print(f"{number:6d} " + " ".join(str(f) for f in fields))
        print(result.summary())
        print(f"{result.seconds:.2f}s, faults: " + ", ".join(f"{k}={v}" for k, v in sorted(result.faults.items())))
        print(f"state {result.state_hash}")
        if args.keep:
            print(f"files kept in {sim.root}")
        return 0 if result.ok else 1

    seeds = range(args.start, args.start + args.seeds)
    last = [time.perf_counter()]

    def progress(totals: Totals, result: SimResult) -> None:
        if not result.ok:
            print(f"FAILED {result.summary()}", flush=True)
        now = time.perf_counter()
        if now - last[0] > 10:
            last[0] = now
            print(f"... {totals.seeds} seeds, {len(totals.failures)} failing", flush=True)

    totals = run_seeds(seeds, config, jobs=args.jobs, progress=progress, stop_on_failure=args.stop)
    print(totals.report())
    if totals.failures:
        first = totals.failures[0]
        print(f"first failing seed: {first.seed}; replay it with:\n  {first.replay_command()}")
        return 1
    return 0
