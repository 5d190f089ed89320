"""The simulated client's workload: which transactions run, and the records the checks keep.

Most transactions move money between 2 to 4 accounts on different shards (``UpdateItems``);
some open an account on one shard funded from another (``CreateItems``), some close one
(``DeleteItems``) into an account on another shard: **every transaction conserves the sum of
the balances**. Half of them write explicit values computed from values read just before
(``{"balance": 995, ...}``), half write expressions (``{"balance": "=balance - 5"}``).

Contract: :meth:`Workload.plan` fills a :class:`TxnRecord` with the transaction's effects and
returns its chunks; it draws only from the simulation's work generator, so a seed plans the
same transactions on every run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import orjson

from batchray.core.txn.chunks import CreateItems, DeleteItems, PlannedChunk, UpdateItems
from batchray.testing.sim.config import BASE_ID, CONTEXT_ID


@dataclass
class TxnRecord:
    """One transaction of the workload: what it writes, what the client was told, and how far
    the checks have folded its commits into the model."""

    index: int
    txn: str
    ts: int
    legs: list[tuple[str, int, int]]  # updates: (shard, item id, delta)
    bad: bool
    creates: list[tuple[str, int, int]] = field(default_factory=list)  # (shard, new id, balance)
    deletes: list[tuple[str, int, int]] = field(default_factory=list)  # (shard, id, balance read)
    acked: Optional[bool] = None  # what the client was told: committed, rolled back, or nothing
    checked: bool = False  # its logged outcome was checked against what the client was told
    folded_shards: set[str] = field(default_factory=set)  # shards whose commit is in the model
    folded: bool = False  # settled: nothing more will change


@dataclass
class Account:
    """The model of one account: the values every shard must show once its commits are in."""

    balance: int
    n: int = 0
    last: int = -1  # index of the last committed transaction that touched it


def told(acked: Optional[bool]) -> str:
    """What the client was told, in words."""
    return {True: "committed", False: "rolled back", None: "unknown"}[acked]


def shards_of(record: TxnRecord) -> set[str]:
    """The shards a transaction writes on."""
    return {name for name, _, _ in record.legs + record.creates + record.deletes}


class Workload:
    """Plans the transactions of one simulation (``sim``), and keeps the pool of accounts it
    picks from (``sim.accounts``, ``sim.by_shard``, ``sim.closing``) up to date."""

    def __init__(self, sim: Any) -> None:  # a Simulation
        self.sim = sim

    def can_read(self, name: str, item_id: int) -> bool:
        """Whether the client may compute an explicit new value from a read of this account.

        Explicit values are computed from values read before the transaction, so they are only
        right if nobody can change those values first: the client reads an account only while
        no transaction holds it (one in doubt might commit while this one retries, and the write
        would then overwrite that commit: a lost update of the client's own making)."""
        shard = self.sim.shards[name]
        return shard is not None and not shard.locks.holders(item_id)

    def read(self, name: str, item_id: int) -> Optional[dict[str, Any]]:
        """The committed values of one account, or None when it does not exist."""
        rows = list(self.sim.shards[name].read_items(CONTEXT_ID, ids=[item_id]))
        return orjson.loads(rows[0][1]) if rows else None

    def patch(self, txn: str, name: str, item_id: int, delta: int, explicit: bool) -> dict[str, Any]:
        if explicit:
            values = self.read(name, item_id)
            if values is not None:
                return {"balance": values["balance"] + delta, "n": values["n"] + 1, "last": txn}
        return {"balance": f"=balance {'-' if delta < 0 else '+'} {abs(delta)}", "n": "=n + 1", "last": txn}

    def plan(self, record: TxnRecord) -> tuple[list[PlannedChunk], str]:
        """The chunks of one transaction: a transfer (most), an account opened with money from
        another, or an account closed into another. Each conserves the sum of balances."""
        sim = self.sim
        rng = sim.work_rng
        chunk_ids = iter(range(1, 100))
        planned: list[PlannedChunk] = []
        roll = rng.random()
        explicit = rng.random() < 0.5
        closable = [
            (name, item_id) for name in sim.names for item_id in sim.by_shard[name]
            if item_id not in sim.closing and len([i for i in sim.by_shard[name] if i not in sim.closing]) > 1
        ]
        if roll < 0.08:
            # open an account on one shard, funded from an account on another
            source, target = rng.sample(sim.names, 2)
            item_id = rng.choice(sim.by_shard[source])
            amount = rng.randint(1, 50)
            new_id = BASE_ID + 10_000 + record.index
            explicit = explicit and self.can_read(source, item_id)
            record.legs.append((source, item_id, -amount))
            record.creates.append((target, new_id, amount))
            planned.append(PlannedChunk(source, UpdateItems(next(chunk_ids), CONTEXT_ID, ids=[item_id],
                                        patches=[self.patch(record.txn, source, item_id, -amount, explicit)]), 64, 1))
            row = orjson.dumps({"balance": amount, "n": 1, "last": record.txn}).decode()
            planned.append(PlannedChunk(target, CreateItems(next(chunk_ids), [new_id], [row]), 64, 1))
            kind = "open"
        elif roll < 0.16 and closable:
            # close an account: read its balance, delete it, and move the balance to another
            source, item_id = rng.choice(closable)
            target = rng.choice([n for n in sim.names if n != source])
            other = rng.choice(sim.by_shard[target])
            values = self.read(source, item_id) if self.can_read(source, item_id) else None
            if values is None:
                return self.plan_transfer(record, explicit, chunk_ids)
            balance = values["balance"]
            explicit = explicit and self.can_read(target, other)
            sim.closing.add(item_id)
            record.deletes.append((source, item_id, balance))
            record.legs.append((target, other, balance))
            planned.append(PlannedChunk(source, DeleteItems(next(chunk_ids), CONTEXT_ID, ids=[item_id]), 64, 1))
            planned.append(PlannedChunk(target, UpdateItems(next(chunk_ids), CONTEXT_ID, ids=[other],
                                        patches=[self.patch(record.txn, target, other, balance, explicit)]), 64, 1))
            kind = "close"
        else:
            return self.plan_transfer(record, explicit, chunk_ids)
        return planned, kind + ("-explicit" if explicit else "-expr")

    def plan_transfer(self, record: TxnRecord, explicit: bool, chunk_ids: Iterator[int]) -> tuple[list[PlannedChunk], str]:
        sim = self.sim
        rng = sim.work_rng
        k = rng.randint(2, min(4, len(sim.names)))
        names = sorted(rng.sample(sim.names, k))
        accounts = [rng.choice(sim.by_shard[name]) for name in names]
        if rng.random() < 0.25:
            # a second account on one of the shards, in a chunk of its own: several chunks for
            # one participant (the last one may carry the vote)
            name = rng.choice(names)
            others = [i for i in sim.by_shard[name] if i not in accounts]
            if others:
                position = rng.randrange(len(names) + 1)
                names.insert(position, name)
                accounts.insert(position, rng.choice(others))
        deltas = [rng.randint(-50, 50) for _ in range(len(names) - 1)]
        deltas.append(-sum(deltas))
        explicit = explicit and all(self.can_read(n, i) for n, i in zip(names, accounts))
        record.legs.extend(zip(names, accounts, deltas))
        planned = [
            PlannedChunk(name, UpdateItems(next(chunk_ids), CONTEXT_ID, ids=[item_id],
                                           patches=[self.patch(record.txn, name, item_id, delta, explicit)]), 64, 1)
            for name, item_id, delta in record.legs
        ]
        return planned, "transfer-" + ("explicit" if explicit else "expr")

    def update_pool(self, record: TxnRecord, name: str) -> None:
        """The accounts the workload picks from: with the ones ``record`` opened or closed on ``name``."""
        sim = self.sim
        for shard, item_id, _ in record.creates:
            if shard == name:
                sim.accounts[item_id] = name
                sim.by_shard[name].append(item_id)
        for shard, item_id, _ in record.deletes:
            if shard == name and item_id in sim.by_shard[name]:
                sim.by_shard[name].remove(item_id)
