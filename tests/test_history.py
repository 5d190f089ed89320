"""The bank-history checker (batchray.testing.history) on hand-made histories: good ones pass,
and each kind of bad one is caught, named, and pinned to the operation at fault."""
from __future__ import annotations

import json

import pytest

from batchray.testing.history import HistoryWriter, check, check_files, load

INITIAL = {"1": 10, "2": 10, "3": 10}  # total 30


class H:
    """A history under construction: ``t(...)`` and ``r(...)`` add one operation each."""

    def __init__(self) -> None:
        self.entries: list[dict] = []
        self.clock = 0.0

    def _add(self, process: str, type_: str, f: str, key: str, **extra) -> None:
        self.clock += 1.0
        self.entries.append({"process": process, "time": self.clock, "type": type_, "f": f, "key": key, **extra})

    def t(self, key: str, deltas: dict, end: str | None = "ok", process: str = "p0", txn: str | None = None) -> "H":
        self._add(process, "invoke", "transfer", key, value={"deltas": deltas})
        if end is not None:
            self._add(process, end, "transfer", key, txn=txn or f"txn-{key}")
        return self

    def r(self, key: str, balances: dict | None, end: str = "ok", process: str = "p1") -> "H":
        self._add(process, "invoke", "read", key)
        self._add(process, end, "read", key, value={"balances": balances} if balances is not None else None)
        return self


def kinds(result) -> list[str]:
    return sorted(a.kind for a in result.anomalies)


def test_a_good_history_passes():
    h = (H().t("a", {"1": -5, "2": 5})                        # ok
         .r("r1", {"1": 5, "2": 15, "3": 10})
         .t("b", {"2": -20, "3": 20}, end="fail")              # an overdraft, rolled back
         .t("c", {"3": -3, "1": 3}, end="unknown")             # the store committed it
         .t("d", {"1": -1, "3": 1}, end=None, process="p2")    # its client was killed: not applied
         .r("r2", {"1": 8, "2": 15, "3": 7})
         .r("r3", None, end="fail"))                           # a failed read is not judged
    outcomes = {"a": "completed", "b": "rolled_back", "c": "completed", "d": "absent"}
    result = check(h.entries, initial=INITIAL, final={"1": 8, "2": 15, "3": 7}, outcomes=outcomes)
    assert result.valid, result.summary()
    assert dict(result.transfers) == {"ok": 1, "fail": 1, "unknown": 2}
    assert (result.unknown_committed, result.unknown_not_committed, result.killed, result.committed) == (1, 1, 1, 2)
    assert dict(result.reads) == {"ok": 2, "fail": 1}
    assert "anomalies: 0" in result.summary()


def test_an_unknown_transfer_the_store_rolled_back_counts_for_nothing():
    h = H().t("a", {"1": -5, "2": 5}, end="unknown")
    result = check(h.entries, initial=INITIAL, final=INITIAL, outcomes={"a": "rolled_back"})
    assert result.valid, result.summary()
    assert result.committed == 0


def test_a_read_that_does_not_sum_to_the_total():
    h = H().t("a", {"1": -5, "2": 5}).r("r", {"1": 5, "2": 10, "3": 10})  # saw half a transfer
    result = check(h.entries, initial=INITIAL, final={"1": 5, "2": 15, "3": 10}, outcomes={"a": "completed"})
    assert kinds(result) == ["read-total"]
    assert result.anomalies[0].key == "r"


def test_a_negative_balance_in_a_read_and_at_the_end():
    h = H().t("a", {"1": -15, "2": 15}).r("r", {"1": -5, "2": 25, "3": 10})
    result = check(h.entries, initial=INITIAL, final={"1": -5, "2": 25, "3": 10}, outcomes={"a": "completed"})
    assert kinds(result) == ["negative-balance", "negative-balance"]


def test_a_read_that_misses_an_account():
    result = check(H().r("r", {"1": 10, "2": 20}).entries, initial=INITIAL)
    assert kinds(result) == ["incomplete-read"]


def test_a_lost_update():
    # two transfers acknowledged, the final balances show only one of them
    h = H().t("a", {"1": -5, "2": 5}).t("b", {"1": -5, "3": 5}, process="p1")
    result = check(h.entries, initial=INITIAL, final={"1": 5, "2": 15, "3": 10},
                   outcomes={"a": "completed", "b": "completed"})
    assert kinds(result) == ["lost-update", "phantom-update"]  # account 3 short, account 1 too rich
    assert {"account 3" in a.detail for a in result.anomalies if a.kind == "lost-update"} == {True}


def test_a_phantom_update_from_a_transfer_applied_twice():
    h = H().t("a", {"1": -5, "2": 5})
    result = check(h.entries, initial=INITIAL, final={"1": 0, "2": 20, "3": 10}, outcomes={"a": "completed"})
    assert kinds(result) == ["lost-update", "phantom-update"]


def test_an_acknowledged_transfer_missing_from_the_store():
    h = H().t("a", {"1": -5, "2": 5})
    result = check(h.entries, initial=INITIAL, final=INITIAL, outcomes={"a": "rolled_back"})
    assert "acknowledged-missing" in kinds(result)
    # and the balances lack it too
    assert "lost-update" in kinds(result)


def test_a_failed_transfer_the_store_committed():
    h = H().t("a", {"1": -5, "2": 5}, end="fail")
    result = check(h.entries, initial=INITIAL, final={"1": 5, "2": 15, "3": 10}, outcomes={"a": "completed"})
    assert kinds(result) == ["failed-but-committed"]  # counted as committed: the balances agree


def test_an_unknown_transfer_must_be_resolved():
    h = H().t("a", {"1": -5, "2": 5}, end="unknown").t("b", {"2": -1, "3": 1}, end=None, process="p9")
    result = check(h.entries, initial=INITIAL, final=INITIAL, outcomes={"a": "running"})
    assert kinds(result) == ["unresolved", "unresolved"]


def test_half_of_an_unknown_transfer_is_caught():
    # the store says committed, but only the withdrawal made it
    h = H().t("a", {"1": -5, "2": 5}, end="unknown")
    result = check(h.entries, initial=INITIAL, final={"1": 5, "2": 10, "3": 10}, outcomes={"a": "completed"})
    assert kinds(result) == ["final-total", "lost-update"]


def test_malformed_histories():
    base = H().t("a", {"1": -5, "2": 5})
    twice = base.entries + [dict(base.entries[-1], type="fail", time=99.0)]
    assert kinds(check(twice, initial=INITIAL, outcomes={"a": "completed"})) == ["malformed"]
    orphan = [{"process": "p", "time": 1.0, "type": "ok", "f": "transfer", "key": "z", "txn": "t"}]
    assert kinds(check(orphan, initial=INITIAL)) == ["malformed"]
    not_conserving = H().t("a", {"1": -5, "2": 4}).entries
    assert kinds(check(not_conserving, initial=INITIAL, outcomes={"a": "completed"})) == ["malformed"]
    unknown_account = H().t("a", {"1": -5, "9": 5}).entries
    assert kinds(check(unknown_account, initial=INITIAL, outcomes={"a": "completed"})) == ["malformed"]
    assert kinds(check([{"type": "bogus", "key": "x", "f": "read"}], initial=INITIAL)) == ["malformed"]


def test_completions_may_be_logged_out_of_clock_order():
    # two clients whose clocks disagree: a completion timed before its invoke still matches
    h = H().t("a", {"1": -5, "2": 5})
    h.entries[1]["time"] = 0.5
    result = check(h.entries, initial=INITIAL, final={"1": 5, "2": 15, "3": 10}, outcomes={"a": "completed"})
    assert result.valid, result.summary()


def test_writer_and_loader_round_trip(tmp_path):
    path = tmp_path / "h.jsonl"
    with HistoryWriter(path, "p0") as w:
        w.invoke("transfer", "a", {"deltas": {"1": -5, "2": 5}})
        w.complete("ok", "transfer", "a", txn="update-1")
        w.invoke("read", "r")
        w.complete("ok", "read", "r", {"balances": {"1": 5, "2": 15, "3": 10}})
        w.invoke("transfer", "b", {"deltas": {"2": -1, "3": 1}})  # then the client is killed
    with open(path, "a") as handle:
        handle.write('{"process": "p0", "type": "ok", "f": "tra')  # a line cut short at the end
    entries = load([path])
    assert [e["type"] for e in entries] == ["invoke", "ok", "invoke", "ok", "invoke"]
    result = check_files([path], initial=INITIAL, final={"1": 5, "2": 14, "3": 11},
                         outcomes={"a": "completed", "b": "completed"})
    assert result.valid, result.summary()
    assert result.killed == 1 and result.committed == 2
    with pytest.raises(ValueError):
        w.complete("invoke", "read", "x")

    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n" + json.dumps({"type": "invoke"}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load([bad])
