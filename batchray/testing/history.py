"""Client histories of a bank workload, and the checker that judges them.

A workload's clients log every operation they run as JSON Lines, one object per line, in the
manner of Jepsen: an ``invoke`` line before the call, then one completion line:

* ``ok``: the call returned success (a transfer the store acknowledged as committed; a read
  and the balances it saw);
* ``fail``: the call returned a definite failure (a transfer rolled back: an overdraft, a lost
  lock race; a read that raised: reads change nothing, so a failed one is not judged);
* ``unknown``: the client cannot tell (an error, a timeout, a coordinator that died under it).
  A client killed between its ``invoke`` and the completion leaves no completion at all; the
  checker treats that as ``unknown`` too.

Every line has ``process`` (the client), ``type``, ``f`` (``transfer`` or ``read``), ``key``
(an id unique to the operation, also the transfer's idempotency key) and ``time``. A transfer's
``invoke`` carries ``value: {"deltas": {account: amount}}`` (amounts summing to zero); its
completion carries ``txn`` (the batch id, when known) and ``error``. A read's ``ok`` carries
``value: {"balances": {account: balance}}``.

The outcome of an operation the client could not learn is settled afterwards from the store:
after recovery, the batch that carries the operation's key is looked up (the decision log's
registry, ``client.status(txn)``) and its state (``completed``, ``rolled_back``, or ``absent``
when no batch was ever registered for it) goes into ``outcomes``. :func:`check` then proves:

* **the bank invariant**: every ``ok`` read saw every account, the balances summing to the
  initial total, none negative;
* **no lost or phantom update**: the final balances are exactly the initial ones plus the
  deltas of the committed transfers: the ``ok`` ones and the ``unknown`` ones the store shows
  ``completed`` (so an unknown transfer is all-or-nothing: half of one would break the sum of
  the accounts it touched);
* **durability of acknowledgements**: no ``ok`` transfer is missing from the store (its batch
  must be ``completed`` there), and no ``fail`` transfer is committed there;
* every ``unknown`` transfer has a definite outcome in the store (none left in doubt).

Anything else is reported as an :class:`Anomaly`; a history is valid when there is none.
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

TYPES = ("invoke", "ok", "fail", "unknown")
COMMITTED = "completed"
NOT_COMMITTED = ("rolled_back", "absent", "cancelled")


class HistoryWriter:
    """Appends one client's operations to a JSON Lines file.

    Each line goes out in a single ``write`` to a file opened with ``O_APPEND``, so a client
    killed at any moment leaves whole lines behind (and several clients may share a file)."""

    def __init__(self, path: str | os.PathLike, process: str) -> None:
        self.path = Path(path)
        self.process = str(process)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _line(self, entry: dict[str, Any]) -> None:
        entry = {"process": self.process, "time": round(time.time(), 6), **entry}
        os.write(self._fd, (json.dumps(entry, sort_keys=True, default=str) + "\n").encode())

    def invoke(self, f: str, key: str, value: Any = None) -> None:
        self._line({"type": "invoke", "f": f, "key": key, "value": value})

    def complete(self, type: str, f: str, key: str, value: Any = None, *, txn: Optional[str] = None,
                 error: Optional[str] = None) -> None:
        if type not in TYPES[1:]:
            raise ValueError(f"a completion is ok, fail or unknown, not {type!r}")
        entry: dict[str, Any] = {"type": type, "f": f, "key": key, "value": value}
        if txn is not None:
            entry["txn"] = txn
        if error is not None:
            entry["error"] = error[:300]
        self._line(entry)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "HistoryWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def load(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """The entries of every file, in time order (stable). A last line cut short (a writer killed
    inside ``write``, which a single small append makes unlikely) is skipped; anything else that
    does not parse is an error."""
    entries: list[dict[str, Any]] = []
    for path in paths:
        lines = Path(path).read_text().split("\n")
        for number, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except ValueError:
                if number == len(lines) - 1:
                    continue  # the unterminated tail of a killed writer
                raise ValueError(f"{path}:{number + 1}: not a JSON object: {line[:200]!r}") from None
    entries.sort(key=lambda e: e.get("time", 0.0))
    return entries


@dataclass
class Anomaly:
    kind: str
    detail: str
    key: Optional[str] = None

    def __str__(self) -> str:
        return f"{self.kind}{f' [{self.key}]' if self.key else ''}: {self.detail}"


@dataclass
class CheckResult:
    """What :func:`check` found: counts, and every anomaly."""

    transfers: Counter = field(default_factory=Counter)  # ok / fail / unknown (killed included)
    unknown_committed: int = 0
    unknown_not_committed: int = 0
    killed: int = 0  # invoked, never completed
    reads: Counter = field(default_factory=Counter)  # ok / fail / unknown
    committed: int = 0  # transfers whose deltas the final balances must show
    accounts: int = 0
    total: int = 0
    anomalies: list[Anomaly] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.anomalies

    def summary(self) -> str:
        t, r = self.transfers, self.reads
        lines = [
            f"transfers: {sum(t.values())} ({t['ok']} ok, {t['fail']} failed, {t['unknown']} unknown "
            f"of which {self.killed} with the client killed; unknown resolved: {self.unknown_committed} committed, "
            f"{self.unknown_not_committed} not); {self.committed} committed in all",
            f"reads: {sum(r.values())} ({r['ok']} ok, {r['fail']} failed, {r['unknown']} unknown); "
            f"{self.accounts} accounts, total {self.total}",
            f"anomalies: {len(self.anomalies)}",
        ]
        lines += [f"  {a}" for a in self.anomalies[:20]]
        if len(self.anomalies) > 20:
            lines.append(f"  ... and {len(self.anomalies) - 20} more")
        return "\n".join(lines)


def check(
    history: Iterable[Mapping[str, Any]],
    *,
    initial: Mapping[Any, int],
    final: Optional[Mapping[Any, int]] = None,
    outcomes: Optional[Mapping[str, str]] = None,
) -> CheckResult:
    """Judge a bank history; see the module docstring.

    ``initial``: each account's balance before the workload; ``final``: after it, recovery
    done (None skips the checks that need it); ``outcomes``: each transfer's state in the
    store by its key (``completed``, ``rolled_back``, ``absent``...); required for every
    transfer whose client could not learn it, checked against the client for the others.
    Account ids are compared as strings (JSON object keys are strings)."""
    outcomes = dict(outcomes or {})
    start = {str(a): int(v) for a, v in initial.items()}
    result = CheckResult(accounts=len(start), total=sum(start.values()))
    anomalies = result.anomalies

    invoked: dict[str, Mapping[str, Any]] = {}
    completed: dict[str, Mapping[str, Any]] = {}
    entries = []
    for entry in history:
        kind, key, f = entry.get("type"), entry.get("key"), entry.get("f")
        if kind not in TYPES or f not in ("transfer", "read") or not isinstance(key, str):
            anomalies.append(Anomaly("malformed", f"unreadable entry {dict(entry)!r}"[:300],
                                     key if isinstance(key, str) else None))
            continue
        entries.append(entry)
    # invokes first, then completions: the order of lines across clients (their clocks) does
    # not matter
    for entry in entries:
        if entry["type"] == "invoke":
            if entry["key"] in invoked:
                anomalies.append(Anomaly("malformed", "invoked twice", entry["key"]))
                continue
            invoked[entry["key"]] = entry
    for entry in entries:
        kind, key, f = entry["type"], entry["key"], entry["f"]
        if kind == "invoke":
            continue
        if key not in invoked:
            anomalies.append(Anomaly("malformed", f"{kind} without an invoke", key))
            continue
        if key in completed:
            anomalies.append(Anomaly("malformed", f"completed twice ({completed[key]['type']}, then {kind})", key))
            continue
        if invoked[key].get("f") != f:
            anomalies.append(Anomaly("malformed", f"completion of a {f} for an invoked {invoked[key].get('f')}", key))
            continue
        completed[key] = entry

    expected = dict(start)
    for key, call in invoked.items():
        end = completed.get(key)
        kind = end["type"] if end is not None else "unknown"
        if call["f"] == "read":
            result.reads[kind] += 1
            if kind == "ok":
                _check_read(key, (end.get("value") or {}).get("balances"), start, result)
            continue
        result.transfers[kind] += 1
        deltas = _deltas(key, call, start, anomalies)
        if deltas is None:
            continue
        outcome = outcomes.get(key)
        if kind == "ok":
            if outcome is not None and outcome != COMMITTED:
                anomalies.append(Anomaly("acknowledged-missing",
                                         f"acknowledged as committed (txn {end.get('txn')}) but the store says {outcome}",
                                         key))
            committed = True
        elif kind == "fail":
            if outcome == COMMITTED:
                anomalies.append(Anomaly("failed-but-committed",
                                         f"reported rolled back ({end.get('error')}) but the store committed it", key))
            committed = outcome == COMMITTED
        else:
            if end is None:
                result.killed += 1
            if outcome == COMMITTED:
                result.unknown_committed += 1
                committed = True
            elif outcome in NOT_COMMITTED:
                result.unknown_not_committed += 1
                committed = False
            else:
                anomalies.append(Anomaly("unresolved", f"outcome unknown to the client and to the store ({outcome})",
                                         key))
                continue
        if committed:
            result.committed += 1
            for account, delta in deltas.items():
                expected[account] += delta

    if final is not None:
        end_balances = {str(a): v for a, v in final.items()}
        if set(end_balances) != set(start):
            anomalies.append(Anomaly("final-accounts", f"accounts {sorted(end_balances)} != {sorted(start)}"))
        for account in sorted(start):
            value = end_balances.get(account)
            if value is None:
                continue
            if value != expected[account]:
                anomalies.append(Anomaly(
                    "lost-update" if value < expected[account] else "phantom-update",
                    f"account {account}: final balance {value}, but initial {start[account]} plus the committed "
                    f"transfers make {expected[account]}"))
            if value < 0:
                anomalies.append(Anomaly("negative-balance", f"account {account} ends at {value}"))
        if sum(v for v in end_balances.values() if isinstance(v, (int, float))) != result.total:
            anomalies.append(Anomaly("final-total", f"final balances sum to {sum(end_balances.values())}, "
                                                    f"not {result.total}"))
    return result


def _deltas(key: str, call: Mapping[str, Any], start: Mapping[str, int], anomalies: list[Anomaly]) -> Optional[dict[str, int]]:
    raw = (call.get("value") or {}).get("deltas")
    if not isinstance(raw, dict) or not raw:
        anomalies.append(Anomaly("malformed", "a transfer without deltas", key))
        return None
    deltas = {str(a): d for a, d in raw.items()}
    unknown = sorted(set(deltas) - set(start))
    if unknown:
        anomalies.append(Anomaly("malformed", f"a transfer names unknown accounts {unknown}", key))
        return None
    if sum(deltas.values()) != 0:
        anomalies.append(Anomaly("malformed", f"a transfer that does not conserve money: {deltas}", key))
        return None
    return deltas


def _check_read(key: str, balances: Any, start: Mapping[str, int], result: CheckResult) -> None:
    if not isinstance(balances, dict):
        result.anomalies.append(Anomaly("malformed", "an ok read without balances", key))
        return
    seen = {str(a): v for a, v in balances.items()}
    if set(seen) != set(start):
        missing, extra = sorted(set(start) - set(seen)), sorted(set(seen) - set(start))
        result.anomalies.append(Anomaly("incomplete-read", f"missing accounts {missing}, unknown accounts {extra}", key))
        return
    negative = {a: v for a, v in seen.items() if v < 0}
    if negative:
        result.anomalies.append(Anomaly("negative-balance", f"read saw {negative}", key))
    total = sum(seen.values())
    if total != result.total:
        result.anomalies.append(Anomaly("read-total", f"read saw a total of {total}, not {result.total}: {seen}", key))


def check_files(paths: Iterable[str | os.PathLike], **kwargs: Any) -> CheckResult:
    """:func:`check` over the entries of JSON Lines files (see :func:`load`)."""
    return check(load(paths), **kwargs)


__all__ = ["Anomaly", "CheckResult", "HistoryWriter", "check", "check_files", "load"]
