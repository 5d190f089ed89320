"""What runs report: :class:`SimResult` for one seed and :class:`Totals` over many.

Contract: a result is ``ok`` when it holds no violation; :meth:`SimResult.summary` names a
failing seed's violations and the command that replays it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from batchray.testing.sim.config import Faults, SimConfig

@dataclass
class SimResult:
    seed: int
    config: SimConfig
    shards: int = 0
    txns: int = 0
    committed: int = 0
    aborted: int = 0
    unknown: int = 0  # the client never learnt the outcome (coordinator crash)
    in_doubt: int = 0  # left in doubt by phase 2 at least once
    faults: Counter = field(default_factory=Counter)
    observed: Counter = field(default_factory=Counter)  # how the shards took late messages
    kinds: Counter = field(default_factory=Counter)  # transactions by kind and outcome
    violations: list[str] = field(default_factory=list)
    trace_hash: str = ""
    state_hash: str = ""
    events: int = 0
    trace: list[tuple] = field(default_factory=list)  # the whole trace with keep_trace, else the tail
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations

    def replay_command(self) -> str:
        extra = " --no-faults" if self.config.faults == Faults.none() else ""
        return f"python -m batchray.testing.sim --seed {self.seed} --txns {self.config.txns}{extra} --trace"

    def summary(self) -> str:
        head = (
            f"seed {self.seed}: {self.txns} txns on {self.shards} shards, {self.committed} committed, "
            f"{self.aborted} rolled back, {self.unknown} unknown to the client, {self.in_doubt} left in doubt; "
            f"trace {self.trace_hash[:16]}"
        )
        if self.ok:
            return head
        lines = [head, f"{len(self.violations)} violation(s):"] + [f"  - {v}" for v in self.violations[:20]]
        lines.append(f"replay: {self.replay_command()}")
        return "\n".join(lines)


@dataclass
class Totals:
    seeds: int = 0
    txns: int = 0
    committed: int = 0
    aborted: int = 0
    unknown: int = 0
    in_doubt: int = 0
    faults: Counter = field(default_factory=Counter)
    observed: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    failures: list[SimResult] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, result: SimResult) -> None:
        self.seeds += 1
        self.txns += result.txns
        self.committed += result.committed
        self.aborted += result.aborted
        self.unknown += result.unknown
        self.in_doubt += result.in_doubt
        self.faults.update(result.faults)
        self.observed.update(result.observed)
        self.kinds.update(result.kinds)
        if not result.ok:
            self.failures.append(result)

    @property
    def violations(self) -> int:
        return sum(len(r.violations) for r in self.failures)

    def report(self) -> str:
        rate = self.seeds / self.seconds if self.seconds else 0.0
        lines = [
            f"{self.seeds} seeds x {self.txns // max(self.seeds, 1)} txns = {self.txns} transactions in "
            f"{self.seconds:.1f}s ({rate:.1f} seeds/s, {1000 * self.seconds / max(self.txns, 1):.2f} ms/txn)",
            f"outcomes: {self.committed} committed, {self.aborted} rolled back, {self.unknown} unknown to the client, "
            f"{self.in_doubt} left in doubt by phase 2",
            "transactions: " + ", ".join(f"{k} {v}" for k, v in sorted(self.kinds.items())),
            "faults: " + ", ".join(f"{k}={v}" for k, v in sorted(self.faults.items())),
            "late messages: " + ", ".join(f"{k} {v}" for k, v in sorted(self.observed.items())),
            f"violations: {self.violations} in {len(self.failures)} seed(s)",
        ]
        for result in self.failures[:5]:
            lines.append(result.summary())
        return "\n".join(lines)
