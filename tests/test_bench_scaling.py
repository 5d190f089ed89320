"""The scaling scenarios' harness (``bench.suite._scaling``), with stand-in clients (no Ray):
the worker counts take turns, each turn on a client and store of its own that is shut down
(and its store removed) before the next starts, so that no other store's actors are alive
while a count is measured; each count keeps its best rate."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from bench.suite import Sizes, _scaling


@dataclass
class StandInSuite:
    root: str
    sizes: Sizes = field(default_factory=lambda: Sizes(scaling_repeats=2))
    scaling: dict[str, dict[int, float]] = field(default_factory=dict)
    alive: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def client(self, name: str, **options: Any) -> dict[str, Any]:
        os.makedirs(self.path(name))
        client = {"name": name, **options}
        self.alive[name] = client
        self.started.append((name, options))
        return client

    def close_client(self, name: str) -> None:
        self.alive.pop(name)

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)


def test_each_turn_runs_alone_on_a_fresh_store_and_each_count_keeps_its_best(tmp_path):
    suite = StandInSuite(str(tmp_path))
    seen: list[tuple[int, list[str]]] = []

    def load(client: dict[str, Any]) -> float:
        seen.append((client["workers"], sorted(suite.alive)))
        assert os.path.isdir(suite.path(client["name"]))
        turn = sum(1 for workers, _ in seen if workers == client["workers"])
        return 1000.0 * client["workers"] + (10.0 if turn == 1 else 0.0)  # the first turn is the best

    rates = _scaling(suite, "cpu-bound", (1, 2, 4), load, shards=4)

    assert [workers for workers, _ in seen] == [1, 2, 4, 1, 2, 4]  # the counts take turns
    assert all(alive == [f"cpu-bound-{workers}-{turn}"] for turn in range(2)
               for workers, alive in seen[3 * turn:3 * turn + 3])  # only the measured client is alive
    assert len({name for name, _ in suite.started}) == 6 and all(o["shards"] == 4 for _, o in suite.started)
    assert suite.alive == {} and os.listdir(tmp_path) == []  # every client shut down, its store removed
    assert rates == suite.scaling["cpu-bound"] == {1: 1010.0, 2: 2010.0, 4: 4010.0}
