"""``python -m bench``: every scenario of the performance issue against its baseline, in one run.

    python -m bench [--quick] [--only NAME[,NAME...]] [--json PATH] [--plot PATH] [--repeats N]

(results under bench/results/ are not tracked by git)

Prints a table per scenario (each figure beside its target, with the machine's core count),
a summary of the targets, and one JSON object of everything (also written to ``--json``);
draws throughput against workers (1, 2, 4) for the scaling scenarios (``--plot``, PNG).
Scenarios: see ``bench.suite.SCENARIOS`` (``--list``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

from .common import machine, print_table
from .suite import SCENARIOS, Sizes, Suite, plot_scaling


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about a tenth)")
    parser.add_argument("--only", help="comma-separated scenario names (see --list)")
    parser.add_argument("--json", dest="json_path", help="write all results to this file")
    parser.add_argument("--plot", default="bench/results/scaling.png", help="PNG of throughput against workers")
    parser.add_argument("--repeats", type=int, help="runs per measurement, best kept (default 2; 1 with --quick)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, (title, _) in SCENARIOS.items():
            print(f"{name:<20} {title}")
        return 0
    names = list(SCENARIOS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in SCENARIOS]
        if unknown:
            parser.error(f"unknown scenario(s) {', '.join(unknown)}; one of {', '.join(SCENARIOS)}")
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.repeats:
        sizes.repeats = args.repeats
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    suite = Suite(sizes)
    started = time.perf_counter()
    results: dict[str, dict] = {}
    try:
        for name in names:
            title, scenario = SCENARIOS[name]
            t0 = time.perf_counter()
            load_before = os.getloadavg()[0]
            try:
                rows, extra = scenario(suite)
            except Exception as exc:  # noqa: BLE001 - one broken scenario must not hide the others
                traceback.print_exc()
                results[name] = {"title": title, "error": f"{type(exc).__name__}: {exc}"}
                print(f"\n== {title}: FAILED ({exc})", flush=True)
                continue
            seconds = round(time.perf_counter() - t0, 1)
            print_table(f"{title} [{seconds} s]", rows)
            load = [round(load_before, 2), round(os.getloadavg()[0], 2)]  # the machine's other work
            results[name] = {"title": title, "results": rows, "seconds": seconds, "loadAverage": load, **extra}
    finally:
        suite.close()
    plot = None
    if suite.scaling:
        os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
        plot = plot_scaling(suite.scaling, args.plot)
    total = round(time.perf_counter() - started, 1)
    summary = [
        {**row, "metric": f"{results[name]['title'].split('.')[0]}. {row['metric']}"}
        for name in names if "results" in results.get(name, {})
        for row in results[name]["results"] if "target" in row
    ]
    if summary:
        print_table(f"summary: {sum(r['ok'] for r in summary)} of {len(summary)} targets met, {total} s", summary)
    document = {
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "cores": os.cpu_count(),
        "quick": args.quick,
        "sizes": vars(sizes),
        "seconds": total,
        "plot": plot,
        "scenarios": results,
    }
    text = json.dumps(document, default=str)
    print(text)
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(document, f, indent=1, default=str)
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
