"""The invariants a simulated run must keep, checked between transactions and at the end
(after every held message has been delivered and everything has restarted and recovered with
faults off):

* the committed view of every account equals the model: its initial values plus the effects of
  the transactions the decision log says committed and whose commit has reached that shard
  (a shard's own record of the outcome); so the sum of balances is conserved at quiescence,
  and uncommitted writes (in-place updates, created and deleted items) are never visible;
* strict two-phase locking holds across restarts: every item an unfinished transaction wrote
  is locked by it;
* a transaction the coordinator acknowledged as committed is committed in the log and its
  effect is present (after a full restart: durable); one acknowledged as rolled back has no
  effect; one whose outcome the client never learnt (a coordinator crash) is all-or-nothing:
  the log holds one outcome for it, and every shard's own record of it agrees;
* a transaction naming a missing item never commits;
* at quiescence no shard holds 2PC state (``leftovers()`` all zero) or a lock, and every
  shard passes SQLite's integrity check;
* no participant ever raises :class:`~batchray.errors.InternalError` (a broken invariant).

Contract: :class:`Invariants` reads the simulation's shards, decision log and model of the
accounts, records every broken invariant with ``sim.violation`` (it never raises for one),
and folds into the model what each shard has committed so far.
"""
from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

import orjson

from batchray.testing.sim.config import BASE_ID, CONTEXT_ID
from batchray.testing.sim.workload import Account, TxnRecord, shards_of


class Invariants:
    """The checks over one simulation (``sim``)."""

    def __init__(self, sim: Any) -> None:  # a Simulation
        self.sim = sim

    def committed_view(self) -> dict[int, dict[str, Any]]:
        """{item id: values} of every committed item on every shard."""
        sim = self.sim
        view: dict[int, dict[str, Any]] = {}
        for name in sim.names:
            for item_id, text in sim.shards[name].read_items(CONTEXT_ID):
                if item_id in view:
                    sim.violation(f"item {item_id - BASE_ID} read twice")
                view[item_id] = orjson.loads(text)
        return view

    def _fold(self, final: bool = False) -> list[TxnRecord]:
        """Fold what transactions committed into the model, shard by shard as their commits
        arrive (a shard's commit is final, and on any one item commits come in transaction
        order: strict two-phase locking); return the transactions not settled yet."""
        sim = self.sim
        _, decided = sim.log.unfinished()
        unfinished = {txn for txn, _ in decided}
        pending: list[TxnRecord] = []
        for record in sim.txns:
            if record.folded:
                continue
            outcomes = sim.log.decision(record.txn)
            if outcomes is None:
                batch = sim.log.batch(record.txn)
                if batch is not None and batch["state"] == "running":
                    sim.violation(f"{record.txn}: registered, but no decision after recovery")
                if record.acked is not None:
                    sim.violation(f"{record.txn}: the client was told {record.acked}, but no decision is logged")
                outcomes = {}
            values = set(outcomes.values())
            if len(values) > 1:
                sim.violation(f"{record.txn}: an atomic transaction has mixed outcomes {outcomes}")
            committed = values == {"commit"}
            if not record.checked:
                record.checked = True
                if record.acked is not None and record.acked != committed:
                    sim.violation(f"{record.txn}: the client was told committed={record.acked}, the log says {outcomes}")
                if committed and record.bad:
                    sim.violation(f"{record.txn}: names a missing item, yet committed")
                if committed and shards_of(record) - set(outcomes):
                    sim.violation(f"{record.txn}: committed without every shard it writes: {outcomes}")
            done = record.txn not in unfinished
            for name in sorted(shards_of(record) | set(outcomes)):
                if name in record.folded_shards:
                    continue
                got = sim.shards[name].outcome(record.txn)
                if got == "committed" and not committed:
                    sim.violation(f"{record.txn}: {name} committed it, the log says {outcomes}")
                elif got == "aborted" and committed:
                    sim.violation(f"{record.txn}: {name} rolled it back, the log says {outcomes}")
                elif got == "committed":
                    record.folded_shards.add(name)
                    self._apply_to_model(sim.model, record, {name})
                    sim.workload.update_pool(record, name)
                elif committed and done:
                    sim.violation(f"{record.txn}: finished in the log, but {name} has not committed it ({got})")
            if (done or final) and (not committed or record.folded_shards >= shards_of(record)):
                record.folded = True
                for _, item_id, _ in record.deletes:
                    sim.closing.discard(item_id)
            else:
                pending.append(record)
        return pending

    def _apply_to_model(self, model: dict[int, Account], record: TxnRecord, shards: set[str]) -> None:
        """Apply the effects ``record`` has on ``shards`` to ``model``."""
        sim = self.sim
        for name, item_id, balance in record.deletes:
            if name not in shards:
                continue
            account = model.pop(item_id, None)
            if account is None:
                sim.violation(f"{record.txn} deleted account {item_id - BASE_ID}, which does not exist")
            elif account.balance != balance:
                sim.violation(f"{record.txn} closed account {item_id - BASE_ID} holding {account.balance}, "
                              f"having read {balance}")
        for name, item_id, delta in record.legs:
            if name not in shards:
                continue
            account = model.get(item_id)
            if account is None:
                sim.violation(f"{record.txn} committed a change to account {item_id - BASE_ID}, which does not exist")
                continue
            account.balance += delta
            account.n += 1
            account.last = max(account.last, record.index)
        for name, item_id, balance in record.creates:
            if name in shards:
                model[item_id] = Account(balance, 1, record.index)

    def check_view(self, final: bool = False) -> None:
        """The committed view of every shard equals the model (which holds what each shard has
        committed so far); at quiescence the sum of balances is the initial one."""
        sim = self.sim
        if any(sim.shards[n] is None for n in sim.names):
            return
        pending = self._fold(final)
        expected = sim.model
        view = self.committed_view()
        total = 0
        for item_id, account in expected.items():
            values = view.get(item_id)
            if values is None:
                sim.violation(f"account {item_id - BASE_ID} is missing")
                continue
            total += values["balance"]
            want_last = sim.txns[account.last].txn if account.last >= 0 else ""
            got = (values["balance"], values["n"], values["last"])
            want = (account.balance, account.n, want_last)
            if got != want:
                sim.violation(
                    f"account {item_id - BASE_ID} on {sim.accounts.get(item_id)} is (balance, n, last)={got}, "
                    f"expected {want}"
                )
        if set(view) - set(expected):
            sim.violation(f"unexpected items {sorted(i - BASE_ID for i in set(view) - set(expected))}")
        if not pending and total != sim.total:
            sim.violation(f"sum of balances is {total}, expected {sim.total}")
        if not pending:
            self.check_quiet()

    def check_locks(self) -> None:
        """Strict two-phase locking: every item an unfinished transaction wrote stays locked by it
        (across restarts too) until its outcome is recorded."""
        sim = self.sim
        for name in sim.names:
            shard = sim.shards[name]
            if shard is None:
                continue
            for pending in shard.pending():
                for images in shard.before_images(pending["txn"]):
                    for item_id, _ in images.items:
                        if pending["txn"] not in shard.locks.holders(item_id):
                            sim.violation(
                                f"{pending['txn']} is {pending['state']} on {name}, but item "
                                f"{item_id - BASE_ID} is not locked by it: {shard.locks.holders(item_id)}"
                            )

    def check_quiet(self) -> None:
        """No 2PC state and no lock anywhere."""
        sim = self.sim
        for name in sim.names:
            shard = sim.shards[name]
            left = shard.leftovers()
            if any(left.values()):
                sim.violation(f"{name} has 2PC state left at quiescence: {left} {shard.pending()}")
            if shard.locks.lock_count():
                sim.violation(f"{name} holds {shard.locks.lock_count()} lock(s) at quiescence")

    def check_final(self) -> None:
        """At the very end: the model, every store's integrity, and every shard's own record of
        every transaction against the log."""
        sim = self.sim
        self.check_view(final=True)
        for name in sim.names:
            check = sim.shards[name].integrity_check()
            if check != "ok":
                sim.violation(f"{name} failed the integrity check: {check}")
        with contextlib.closing(sqlite3.connect(sim.log.path)) as conn:
            check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            sim.violation(f"the decision log failed the integrity check: {check}")
        # every shard's own record of every transaction agrees with the log
        for record in sim.txns:
            outcomes = sim.log.decision(record.txn) or {}
            for name in sim.names:
                got = sim.shards[name].outcome(record.txn)
                want = {"commit": "committed", "abort": "aborted"}.get(outcomes.get(name, ""))
                if got != want and not (want is None and got in (None, "aborted")):
                    sim.violation(f"{record.txn}: {name} records {got}, the log says {outcomes.get(name)}")
