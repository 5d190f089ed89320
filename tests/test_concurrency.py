"""Concurrent batches on Ray: a bank of accounts under concurrent transfers, the hot bank with
driver processes, and parallelism.

What these tests show:

* **Bank.** Several drivers at once (threads of this test; two of them through a second client
  on the same store) run transfers: one atomic batch of two expression updates,
  ``{"balance": "=balance - 5"}`` on one account and ``"=balance + 5"`` on another, where
  ``balance`` is numeric with ``min: 0``. A transfer that would overdraw is rolled back (the
  shard checks the computed value under the item's lock); one that loses a wait-die race
  beyond its ``maxRetries`` fails with a retryable error and the driver submits it again.
  Afterwards: the total is conserved, no balance is negative, the final balances are exactly
  the initial ones plus the deltas of the committed transfers (no lost or phantom update), no
  driver hung, and no lock or transaction state is left on any shard.
* **Parallelism.** Two long batches on disjoint items (each on its own shard, the shards on
  different workers, every applied chunk taking 50 ms) run at the same time: their running
  intervals overlap and together they take clearly less than one after the other. (Batches
  whose chunks spread over every shard would not speed up here: a worker applies one chunk at
  a time, see ``shard_apply_delay``.)
"""
from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest

pytestmark = pytest.mark.ray

ACCOUNTS = 6
INITIAL = 15  # three withdrawals empty an account: overdrafts happen
AMOUNT = 5
DRIVERS = 4
TRANSFERS = 15  # per driver
DELAY = 0.05


def _leftovers(client) -> dict:
    import ray

    return ray.get(client.runtime.coordinator.leftovers.remote())


def test_concurrent_transfers_conserve_money_and_never_overdraw(open_store):
    bank = open_store("bank", workers=2, shards=2)
    assert bank.create_data_context("Bank", [{"name": "Accounts", "attrs": [
        {"name": "owner"}, {"name": "balance", "type": "numeric", "min": 0}]}]).success
    created = bank.create_items("Bank", "Accounts", [{"owner": f"a{k}", "balance": INITIAL} for k in range(ACCOUNTS)],
                                batch_size=-(-ACCOUNTS // 2))  # a chunk per shard (one chunk would go to one)
    accounts = created.item_ids
    assert len(accounts) == ACCOUNTS
    shards = {bank.layout.shard_of(a) for a in accounts}
    assert len(shards) == 2  # transfers cross shards: two chunks, two participants
    other = open_store("bank")  # a second driver process's view: same store, same coordinator

    outcomes: Counter = Counter()
    deltas: Counter = Counter()
    failures: list = []
    lock = threading.Lock()

    def driver(number: int, client) -> None:
        rng = random.Random(number)
        try:
            for _ in range(TRANSFERS):
                source, target = rng.sample(accounts, 2)
                updates = [{"selector": {"itemId": source}, "values": {"balance": f"=balance - {AMOUNT}"}},
                           {"selector": {"itemId": target}, "values": {"balance": f"=balance + {AMOUNT}"}}]
                for attempt in range(1, 51):
                    result = client.update_items("Bank", updates, atomic=True, max_retries=2, progress=False)
                    if result.success:
                        with lock:
                            outcomes["committed"] += 1
                            deltas[source] -= AMOUNT
                            deltas[target] += AMOUNT
                        break
                    assert result.state.value == "rolled_back", result
                    codes = {e.code for e in result.errors}
                    if result.error and result.error.get("retryable"):
                        assert result.error["code"] == "LOCK_CONFLICT", result.error
                        with lock:
                            outcomes["lock conflicts retried"] += 1
                        time.sleep(rng.uniform(0, 0.02 * attempt))
                        continue
                    assert codes == {"VALIDATION"}, result  # the withdrawal would go below min: 0
                    assert any(e.field == "balance" and "minimum" in e.message for e in result.errors)
                    with lock:
                        outcomes["overdraft rolled back"] += 1
                    break
                else:
                    raise AssertionError(f"transfer {source}->{target} kept losing lock races")
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=driver, args=(n, bank if n % 2 else other), daemon=True)
               for n in range(DRIVERS)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    elapsed = time.perf_counter() - started
    assert not any(t.is_alive() for t in threads), "a driver hung"
    if failures:
        raise failures[0]

    final = {item["id"]: item["values"]["balance"] for item in bank.get_items("Bank")}
    print(f"\n{DRIVERS * TRANSFERS} transfers in {elapsed:.1f} s: {dict(outcomes)}; balances {sorted(final.values())}")
    assert outcomes["committed"] + outcomes["overdraft rolled back"] == DRIVERS * TRANSFERS
    assert outcomes["committed"] > 0
    assert sum(final.values()) == ACCOUNTS * INITIAL  # conserved
    assert min(final.values()) >= 0  # never overdrawn
    assert {a: final[a] - INITIAL for a in accounts} == {a: deltas[a] for a in accounts}  # every commit, once
    assert all(not any(counts.values()) for counts in _leftovers(bank).values()), _leftovers(bank)


def test_batches_on_disjoint_items_run_in_parallel(open_store):
    client = open_store("parallel", workers=2, shards=2, shard_apply_delay=DELAY)
    assert client.create_data_context("Par", [{"name": "Rows", "attrs": [{"name": "n", "type": "numeric"}]}]).success
    ids = client.create_items("Par", "Rows", [{"n": 0} for _ in range(400)], batch_size=200).item_ids
    by_shard: dict[str, list[int]] = {}
    for i in ids:
        by_shard.setdefault(client.layout.shard_of(i), []).append(i)
    owners = {shard: w["pid"] for w in client.info()["workers"] for shard in w["epochs"]}
    (shard_a, part_a), (shard_b, part_b) = sorted(by_shard.items())
    assert owners[shard_a] != owners[shard_b]  # the two shards live in different worker processes

    def updates(part):
        return [{"selector": {"itemId": i}, "values": {"n": "=n + 1"}} for i in part]

    # one after the other: 20 chunks of 10 at 50 ms each, twice
    started = time.perf_counter()
    for part in (part_a, part_b):
        assert client.update_items("Par", updates(part), batch_size=10).success
    one_after_other = time.perf_counter() - started

    # at the same time
    started = time.perf_counter()
    txns = [client.update_items("Par", updates(part), batch_size=10, wait=False) for part in (part_a, part_b)]
    results = [client.wait(txn) for txn in txns]
    together = time.perf_counter() - started
    assert all(r.success and r.items_updated == len(p) for r, p in zip(results, (part_a, part_b)))
    a, b = (client.status(txn) for txn in txns)
    assert a["startedAt"] < b["finishedAt"] and b["startedAt"] < a["finishedAt"]  # they overlapped
    print(f"\ntwo 1 s batches on disjoint items: {one_after_other:.2f} s one after the other, "
          f"{together:.2f} s at the same time")
    assert one_after_other >= 2 * 20 * DELAY
    assert together < 0.75 * one_after_other
    assert {item["values"]["n"] for item in client.get_items("Par")} == {2}


# -- the hot bank: contention waits instead of failing --------------------------------------------

HOT_ACCOUNTS = 10
HOT_INITIAL = 10_000  # no overdraft: every batch must commit


def _hot_bank(open_store, tmp_path, name: str, drivers: int, seed: int) -> None:
    """The hot bank with its drivers as OS processes, each connecting as a new user does
    (``batchray.connect(store=...)``) and so joining the store's owner: this test's client,
    on the Ray session the tests share (no cluster of their own). They are started first, so
    that their imports overlap the store's set-up."""
    from batchray.testing.hot_bank import create_bank, judge
    from tests.fault_rig import _ray_env
    from tests.hot_bank_driver import DriverProcesses

    started = time.perf_counter()
    children = DriverProcesses(str(open_store.root / name), drivers, tmp_path / "histories", env=_ray_env())
    try:
        bank = open_store(name, workers=2, shards=2)  # the owner, while the children import
        children.start()
        children.connect()  # they join the owner while the bank is created
        accounts = create_bank(bank, HOT_ACCOUNTS, HOT_INITIAL)
        assert len({bank.layout.shard_of(a) for a in accounts}) == 2  # batches cross shards
        connects = children.connected()
        run = children.run(accounts, batches=20, seed=seed)
    finally:
        children.close()
    verdict = judge(run, bank, accounts, HOT_INITIAL)
    print(f"\nhot bank, seed {seed}: {drivers} driver processes (connected in {max(connects):.1f} s) x 20 batches "
          f"of 4 transfers over {HOT_ACCOUNTS} accounts in {run.seconds:.1f} s ({time.perf_counter() - started:.1f} s "
          f"in all): {run.committed} committed, {run.failed} failed {dict(run.codes)}; {verdict.summary()}")
    assert run.failed == 0, (seed, run.codes, run.first_errors)
    assert run.committed == drivers * 20
    assert verdict.valid, (seed, verdict.summary())
    assert all(not any(counts.values()) for counts in _leftovers(bank).values()), _leftovers(bank)


def test_hot_bank_every_batch_commits_with_default_options(open_store, tmp_path):
    """4 driver processes x 20 atomic batches (4 transfers = 8 ``=balance +- n`` updates by
    itemId) over 10 shared accounts, default options: every batch commits (ordered locks wait
    instead of dying), the total is conserved and every balance is the committed transfers'."""
    _hot_bank(open_store, tmp_path, "hot4", drivers=4, seed=12)


@pytest.mark.soak
def test_hot_bank_with_eight_drivers(open_store, tmp_path):
    """The same with 8 driver processes; by hand: ``pytest -m soak tests/test_concurrency.py``."""
    _hot_bank(open_store, tmp_path, "hot8", drivers=8, seed=13)


def test_a_batch_waiting_for_a_lock_says_which_batch_holds_it(open_store):
    """On Ray: batch B waits for an item that slow batch A holds; ``get_batch_status`` of B
    names the item and A while it waits, and B commits after A."""
    client = open_store("waits", workers=2, shards=2, shard_apply_delay=1.0)
    assert client.create_data_context("W", [{"name": "Rows", "attrs": [{"name": "n", "type": "numeric"}]}]).success
    ids = client.create_items("W", "Rows", [{"n": 0} for _ in range(4)], batch_size=2).item_ids
    by_shard: dict[str, list[int]] = {}
    for i in ids:
        by_shard.setdefault(client.layout.shard_of(i), []).append(i)
    first, second = (by_shard[s][0] for s in sorted(by_shard))  # A locks `first`, then sleeps, then `second`
    bump = {"n": "=n + 1"}
    a = client.update_items("W", [{"selector": {"itemId": i}, "values": bump} for i in (first, second)], wait=False)
    deadline = time.monotonic() + 30
    while client.status(a)["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)  # A's first chunk holds `first` for a second
    b = client.update_items("W", [{"selector": {"itemId": first}, "values": bump}], wait=False)
    waits = None
    while waits is None:
        assert time.monotonic() < deadline, client.status(b)
        waits = (client.tool("get_batch_status", {"batchId": b}).get("waitingFor") or {}).get("locks")
        time.sleep(0.02)
    assert waits == [{"participant": client.layout.shard_of(first), "item": first, "mode": "X", "heldBy": [a],
                      "queuedBehind": []}]
    results = [client.wait(a), client.wait(b)]
    assert all(r.success for r in results), results
    values = {item["id"]: item["values"]["n"] for item in client.get_items("W")}
    assert values[first] == 2 and values[second] == 1
