"""The seeded simulator (batchray.testing.sim): invariants over many seeds, replay, power.

* ``test_ci_seeds``: 200 seeds x 50 transfer transactions over 3-4 real SQLite shards and a
  real decision log, with crashes, restarts, lost, delayed and duplicated messages; no seed
  may break an invariant. A failing seed is named with the command that replays it.
* a seed replays identically (same trace hash, same final state), in and across processes;
* the simulator is not vacuous: with a known protocol bug planted (each through public
  methods only), it finds a failing seed within a few seeds, and that seed replays.
* ``test_soak``: 10,000 seeds, by hand only (``pytest -m soak tests/test_simulator.py``).
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

import pytest

from batchray.core.txn import twophase
from batchray.errors import BatchrayError
from batchray.core.storage.sqlite.shard import SqliteShard
from batchray.testing import sim
from batchray.testing.sim import MESSAGE_FAULTS, Faults, SimConfig, Totals, run_seeds, simulate, simulation

CI_SEEDS = 200
CI_TXNS = 50
CI_CPU_SECONDS = 120


def _failures(totals: Totals) -> str:
    lines = [totals.report()]
    for result in totals.failures[:10]:
        lines.append(f"seed {result.seed} failed; replay: {result.replay_command()}")
    return "\n".join(lines)


# -- the CI run -------------------------------------------------------------------------------

def _cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def test_ci_seeds():
    """200 seeds x 50 transactions under every fault kind: zero invariant violations, within
    2 minutes of one core (CPU time, the seeds' processes' included: the wall clock of a shared
    machine says little). The seeds run in two processes (the machine's two cores)."""
    started, cpu = time.perf_counter(), _cpu_seconds()
    totals = run_seeds(range(CI_SEEDS), SimConfig(txns=CI_TXNS), jobs=2)
    elapsed, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    print(f"\n{totals.report()}\n({elapsed:.1f}s wall, {cpu:.1f}s CPU)")
    assert not totals.failures, _failures(totals)
    assert cpu < CI_CPU_SECONDS, f"{CI_SEEDS} seeds took {cpu:.0f}s of CPU, over {CI_CPU_SECONDS}s"
    assert totals.txns == CI_SEEDS * CI_TXNS
    expected = set(MESSAGE_FAULTS) | {
        "late_delivery", "bystander_crash", "coordinator_crash", "recovery_crash", "restart_all", "bad_txn",
    }
    missing = {kind for kind in expected if totals.faults[kind] == 0}
    assert not missing, f"fault kinds never injected: {sorted(missing)}\n{totals.report()}"
    # the workload must mostly commit, or durability would barely be tested
    assert totals.committed > totals.txns // 2, totals.report()
    assert totals.unknown > 0 and totals.in_doubt > 0, totals.report()


@pytest.mark.soak
@pytest.mark.timeout(0)
def test_soak(request):
    """10,000 seeds (``BATCHRAY_SOAK_SEEDS``) on every core; by hand: ``pytest -m soak``."""
    expression = request.config.getoption("markexpr") or ""
    if "soak" not in expression or "not soak" in expression:
        pytest.skip("a soak run: select it with pytest -m soak")
    seeds = int(os.environ.get("BATCHRAY_SOAK_SEEDS", "10000"))
    totals = run_seeds(range(seeds), SimConfig(txns=CI_TXNS), jobs=os.cpu_count() or 1)
    print(f"\n{totals.report()}")
    assert not totals.failures, _failures(totals)


# -- determinism and replay -------------------------------------------------------------------

def test_same_seed_same_trace():
    config = SimConfig(txns=30)
    first = simulate(11, config)
    again = simulate(11, config)
    assert first.ok, first.summary()
    assert first.events > 100
    assert first.trace_hash == again.trace_hash
    assert first.state_hash == again.state_hash
    assert first.faults == again.faults
    assert (first.committed, first.aborted, first.unknown, first.in_doubt) == (
        again.committed, again.aborted, again.unknown, again.in_doubt
    )
    assert sum(first.faults.values()) > 0
    other = simulate(12, config)
    assert other.trace_hash != first.trace_hash


def test_replay_in_another_process_is_identical():
    """The printed replay command reproduces the trace, whatever the process's hash seed."""
    result = simulate(5, SimConfig(txns=20))
    assert result.ok, result.summary()
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run(
        [sys.executable, "-m", "batchray.testing.sim", "--seed", "5", "--txns", "20"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"trace {result.trace_hash[:16]}" in out.stdout
    assert f"state {result.state_hash}" in out.stdout


def test_cli_reports_rate_faults_and_violations(capsys):
    assert sim.main(["--seeds", "3", "--txns", "10"]) == 0
    out = capsys.readouterr().out
    assert "3 seeds x 10 txns = 30 transactions" in out
    assert "seeds/s" in out and "faults: " in out
    assert "violations: 0 in 0 seed(s)" in out


def test_without_faults_every_transfer_commits():
    result = simulate(3, SimConfig(txns=40, faults=Faults.none()))
    assert result.ok, result.summary()
    assert result.committed == 40 and result.aborted == 0 and result.unknown == 0
    assert not result.faults


def test_trace_is_kept_on_request():
    result = simulate(4, SimConfig(txns=5), keep_trace=True)
    assert result.ok, result.summary()
    assert len(result.trace) == result.events
    assert result.trace[0][0] == "msg"  # the setup's first message
    assert any(event[0] == "txn" for event in result.trace)


# -- the simulator finds planted bugs -----------------------------------------------------------

def _release_locks_when_finish_fails(monkeypatch):
    """commit/abort refused (a stale epoch from a held message) still released the
    transaction's locks: the bug fixed in 'SqliteShard keeps a transaction's locks when
    commit/abort fails'."""
    for step in ("commit", "abort"):
        original = getattr(SqliteShard, step)

        def broken(self, ref, _original=original):
            try:
                return _original(self, ref)
            except BatchrayError:
                self.locks.release_all(ref.txn)
                raise

        monkeypatch.setattr(SqliteShard, step, broken)


def _forget_locks_on_restart(monkeypatch):
    """Recovery finds the prepared transactions but does not lock their items again."""
    original = SqliteShard.recover

    def broken(self):
        in_doubt = original(self)
        for entry in in_doubt:
            self.locks.release_all(entry["txn"])
        return in_doubt

    monkeypatch.setattr(SqliteShard, "recover", broken)


def _abort_keeps_writes(monkeypatch):
    """Abort forgets the undo log instead of restoring the before-images."""
    monkeypatch.setattr(SqliteShard, "abort", lambda self, ref: SqliteShard.commit(self, ref))


def _yes_after_unilateral_abort(monkeypatch):
    """A shard that rolled a transaction back on restart still votes yes for it."""
    original = SqliteShard.prepare

    def broken(self, ref):
        if self.outcome(ref.txn) == "aborted":
            return True
        return original(self, ref)

    monkeypatch.setattr(SqliteShard, "prepare", broken)


def _presumed_commit(monkeypatch):
    """Recovery commits the batches a crashed coordinator had not decided."""

    def broken(log, driver, participants):
        undecided, _ = log.unfinished()
        for batch in undecided:
            log.decide(batch["txn"], {p: "commit" for p in participants})
        return twophase.recover(log, driver, participants)

    monkeypatch.setattr(simulation, "recover", broken)


PLANTED = {
    "locks released when commit/abort fails": _release_locks_when_finish_fails,
    "locks not taken again on restart": _forget_locks_on_restart,
    "abort keeps the writes": _abort_keeps_writes,
    "yes vote after a unilateral abort": _yes_after_unilateral_abort,
    "presumed commit": _presumed_commit,
}


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_planted_bug_is_found_and_replays(bug, monkeypatch):
    PLANTED[bug](monkeypatch)
    config = SimConfig(txns=CI_TXNS)
    found = None
    for seed in range(40):
        result = simulate(seed, config)
        if not result.ok:
            found = result
            break
    assert found is not None, f"{bug}: no violation in 40 seeds"
    print(f"\n{bug}: {found.summary()}")
    assert found.replay_command() in found.summary()
    again = simulate(found.seed, config)
    assert again.trace_hash == found.trace_hash
    assert again.violations == found.violations


# -- regressions found by the simulator ---------------------------------------------------------

def test_regression_apply_prepare_waits_for_earlier_chunks(tmp_path):
    """Found by the simulator (4 of the CI range's first 100 seeds failed before the fix): a
    participant's last chunk went out as ``apply+prepare`` while an earlier chunk for the same
    participant was still being retried (a lost message, a wait-die LockConflict), so the shard
    voted before that chunk arrived; its retry then failed with InternalError ("apply after
    prepare") and the batch was rolled back. The merged vote now waits until nothing else of
    that participant is in flight; here, over the plain LocalTransport of the in-process runtime."""
    from batchray.core.txn.chunks import CreateItems, UpdateItems
    from batchray.core.storage.decision_log import DecisionLog
    from batchray.errors import ParticipantUnavailable
    from batchray.core.txn.chunks import PlannedChunk
    from batchray.core.txn.twophase import LocalTransport, TwoPhaseCommit

    shard = SqliteShard(tmp_path / "s.sqlite", name="s", lock_timeout=0)
    ids = [sim.BASE_ID + 1, sim.BASE_ID + 2]
    setup = TwoPhaseCommit(DecisionLog(tmp_path / "setup.sqlite"), LocalTransport({"s": shard}))
    assert setup.run("setup", 1, [PlannedChunk("s", CreateItems(1, ids, ['{"b": 1}', '{"b": 2}']), 64, 2)]).committed

    class FlakyFirstChunk(LocalTransport):
        """Chunk 1's first two deliveries are lost; everything else goes through."""

        lost = 0

        def submit(self, participant, step, ref, chunk=None):
            if chunk is not None and chunk.chunk_id == 1 and self.lost < 2:
                self.lost += 1
                return twophase._Ready(False, ParticipantUnavailable("lost"))
            return super().submit(participant, step, ref, chunk)

    transport = FlakyFirstChunk({"s": shard})
    driver = TwoPhaseCommit(DecisionLog(tmp_path / "log.sqlite"), transport, sleep=lambda s: None)
    planned = [
        PlannedChunk("s", UpdateItems(1, sim.CONTEXT_ID, ids=[ids[0]], patches=[{"b": "=b + 10"}]), 64, 1),
        PlannedChunk("s", UpdateItems(2, sim.CONTEXT_ID, ids=[ids[1]], patches=[{"b": "=b + 10"}]), 64, 1),
    ]
    outcome = driver.run("t1", 2, planned)
    assert transport.lost == 2
    assert outcome.committed, outcome.cause
    assert dict(shard.read_items(sim.CONTEXT_ID)) == {ids[0]: '{"b":11}', ids[1]: '{"b":12}'}
    assert not any(shard.leftovers().values()) and shard.locks.lock_count() == 0
    shard.close()
