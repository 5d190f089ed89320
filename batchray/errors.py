"""The one exceptions module of batchray.

Every error batchray raises on purpose is a :class:`BatchrayError`. Each carries a stable
machine-readable ``code``, a human ``message`` and a ``details`` dict, and turns into the
structured JSON that the tool surface returns (:meth:`BatchrayError.to_dict`)::

    BatchrayError                       code            retryable
    ├── ValidationError                 VALIDATION      no   bad input; nothing was changed
    │   ├── SchemaError                 SCHEMA          no   unknown context/collection/attribute
    │   ├── QueryError                  QUERY           no   malformed query (names a position)
    │   ├── ExpressionError             EXPRESSION      no   malformed or failing "=expr"
    │   ├── PlanError                   PLAN            no   cycle / missing dependency / target
    │   └── DocumentError               DOCUMENT        no   a file or CODAP document refused
    ├── NotFoundError                   NOT_FOUND       no   batch, item or case does not exist
    ├── ConflictError                   CONFLICT        no   undo refused: items changed since;
    │                                                        a schema changed since it was planned
    ├── TransientError                  (retryable)     yes  may succeed if tried again
    │   ├── LockConflict                LOCK_CONFLICT   yes  lost a wait-die race / lock timeout
    │   ├── StaleEpochError             STALE_EPOCH     yes  a replaced participant tried to act
    │   ├── ParticipantUnavailable      UNAVAILABLE     yes  a worker/shard did not answer
    │   └── ResourceExhausted           RESOURCE_EXHAUSTED yes  a server limit used up by other work
    ├── TransactionAborted              ABORTED         no   the batch was rolled back
    ├── InDoubtError                    IN_DOUBT        no   outcome not yet known; recovery decides
    ├── CancelledError                  CANCELLED       no   cancelled by a user
    ├── StoppedOnError                  STOPPED_ON_ERROR no  non-atomic, stopped at its first bad item
    ├── BatchTimeout                    TIMEOUT         yes  a batch or operation ran out of time
    ├── StoreError                      STORE           no   the store failed (disk full, I/O)
    ├── StoreInUse                      STORE_IN_USE    no   another live owner serves the store
    └── InternalError                   INTERNAL        no   an invariant broke: please file a bug

Validation errors name where the problem is: ``details`` holds ``index`` (the item's position
in the request), ``field`` (the attribute or parameter) and, for batches of errors, ``errors``
(a list of such dicts).

Secrets: :meth:`BatchrayError.to_dict` passes its message and every text in its details through
one redaction, installed by the layer that knows connection strings
(:func:`batchray.core.storage.postgres.url.redact`, with :func:`install_secret_redaction` when
that module is imported); so no structured error carries a password.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable, Optional


class BatchrayError(Exception):
    """Root of every error batchray raises on purpose."""

    code = "ERROR"
    retryable = False

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = {k: v for k, v in details.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        """The structured form returned by tools: ``{code, message, details, retryable}``."""
        return {
            "code": self.code,
            "message": _redact(self.message),
            "details": json_safe(self.details),
            "retryable": self.retryable,
        }

    def __reduce__(self):  # keep details across pickling (Ray ships exceptions between processes)
        return (_rebuild, (type(self), self.message, self.details))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, {self.details!r})"


_redact: Callable[[str], str] = lambda text: text
"""The redaction of secrets applied to every text of a structured error (see the module docstring)."""


def install_secret_redaction(redact: Callable[[str], str]) -> None:
    """Make ``redact`` the redaction :meth:`BatchrayError.to_dict` applies to every text."""
    global _redact
    _redact = redact


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


MAX_NESTING = 64
"""The most levels of objects and arrays batchray takes in a value or writes into an error's
details (a value's own level the first). Real input nests a few levels; JSON encoders hold
about 254 (orjson), and a rejected row's values are written with its error, so a value nested
deeper than an encoder holds would fail the write of that error, and with it the rest of its
chunk, not the row alone."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """``text`` as valid Unicode, which UTF-8 and so JSON can hold: each unpaired surrogate
    (``"\\ud800"``, which a JSON escape or a ``surrogateescape`` decoding gives) written as
    its escape, ``\\ud800``; any other text as it is."""
    if text.isascii() or not _SURROGATE.search(text):
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def json_safe(value: Any, redact: bool = True, _level: int = 1) -> Any:
    """``value`` with every number JSON encoders cannot hold (an infinity, NaN, an integer
    outside 64 bits), every value JSON has no form for (a ``Decimal``, a date, bytes, a set,
    any other object) and every key that is not text written as text (Python's ``repr``), and,
    when ``redact``, every text redacted of secrets: details echo the input they are about,
    and a tool's answer must stay valid JSON and carry no password. ``redact=False`` keeps
    texts as given (a rejected row's values). An object or array past :data:`MAX_NESTING`
    levels is written as a text that says so (``"<list nested deeper than 64 levels>"``).
    Every text, keys included, is made valid Unicode (:func:`valid_text`)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return valid_text(_redact(value) if redact else value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else repr(value)  # a subclass (numpy's) as a float
    if isinstance(value, int):
        return value if _INT64_MIN <= value <= _INT64_MAX else str(value)
    if isinstance(value, (dict, list, tuple)) and _level > MAX_NESTING:
        return f"<{type(value).__name__} nested deeper than {MAX_NESTING} levels>"
    if isinstance(value, dict):
        return {valid_text(_redact(k) if redact else k) if isinstance(k, str) else repr(k):
                json_safe(v, redact, _level + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, redact, _level + 1) for v in value]
    return repr(value)


def _rebuild(cls, message, details):
    return cls(message, **details)


class ValidationError(BatchrayError):
    """Bad input, found before anything was written."""

    code = "VALIDATION"


class SchemaError(ValidationError):
    """A data context, collection or attribute that does not exist or cannot be created."""

    code = "SCHEMA"


class QueryError(ValidationError):
    """A malformed query; ``details['position']`` is the 0-based offset of the problem."""

    code = "QUERY"


class ExpressionError(ValidationError):
    """A malformed ``=expr`` value, or one that fails for an item."""

    code = "EXPRESSION"


class PlanError(ValidationError):
    """The operations cannot be ordered: a cycle, a missing dependency or an unknown target."""

    code = "PLAN"


class DocumentError(ValidationError):
    """An import file or CODAP document that cannot be read."""

    code = "DOCUMENT"


class NotFoundError(BatchrayError):
    code = "NOT_FOUND"


class ConflictError(BatchrayError):
    code = "CONFLICT"


class TransientError(BatchrayError):
    """May succeed if tried again; recovery strategy ``retry`` retries only these."""

    code = "TRANSIENT"
    retryable = True


class LockConflict(TransientError):
    """A younger transaction met a lock held by an older one (wait-die), or waited too long."""

    code = "LOCK_CONFLICT"


class StaleEpochError(TransientError):
    """A message carried an older epoch than the participant's current one (fencing)."""

    code = "STALE_EPOCH"


class ParticipantUnavailable(TransientError):
    code = "UNAVAILABLE"


class ResourceExhausted(TransientError):
    """The store's server refused work for want of a resource that other work holds and gives
    back (PostgreSQL's ``max_prepared_transactions`` slots, its connection slots): nothing of the
    batch stays; try again later."""

    code = "RESOURCE_EXHAUSTED"


class TransactionAborted(BatchrayError):
    """The batch was rolled back; ``details['cause']`` holds the error that caused it."""

    code = "ABORTED"


class InDoubtError(BatchrayError):
    """The batch's outcome is not known yet, or has not reached every participant yet;
    recovery (or the settler) finishes it there."""

    code = "IN_DOUBT"


class CancelledError(BatchrayError):
    code = "CANCELLED"


class StoppedOnError(BatchrayError):
    """A non-atomic batch run with ``continue_on_error=False`` stopped at its first rejected
    item or failed chunk: no chunk was sent after it; what its chunks applied until then is
    committed (``details['notSent']``: the chunks left unsent, when known)."""

    code = "STOPPED_ON_ERROR"


class BatchTimeout(BatchrayError):
    code = "TIMEOUT"
    retryable = True


class StoreInUse(BatchrayError):
    """The store has a live owner (the Ray cluster and coordinator serving it) that this driver
    cannot join; ``details.owner`` names it and ``details.join`` the ``address=`` that joins it.
    Nothing was taken over: the owner keeps serving the store."""

    code = "STORE_IN_USE"


class StoreError(BatchrayError):
    """The store failed underneath batchray (disk full, read-only, corrupted)."""

    code = "STORE"


class InternalError(BatchrayError):
    """An invariant broke. This should never happen; please file a bug with the details."""

    code = "INTERNAL"


def failure_error(errors: list[dict[str, Any]], what: str = "the batch",
                  default: Optional[type] = None) -> dict[str, Any]:
    """The structured error of a failed result that reports only per-item, per-row or
    per-operation errors (``{index?, row?, operation?, field?, code, message}``, as a non-atomic
    batch or import, or a transaction with recovery strategy ``skip`` do): the first error's
    code when it is one of batchray's codes, else ``default``'s (``VALIDATION``), and the errors
    (50 at most) in ``details``."""
    codes = {cls.code: cls for cls in _subclasses(BatchrayError)}
    if not errors:
        return TransactionAborted(f"{what} did not complete").to_dict()
    first = errors[0] if isinstance(errors[0], dict) else {"message": str(errors[0])}
    cls = codes.get(first.get("code"), default or ValidationError)
    keys = ("operation", "row", "index", "field")
    where = ", ".join(f"{key} {first[key]!r}" for key in keys if first.get(key) is not None)
    message = f"{len(errors)} error(s) in {what}; first" + (f" ({where})" if where else "") + f": {first.get('message')}"
    details = {key: first.get(key) for key in keys}
    error = cls(message, **details, errors=errors[:50]).to_dict()
    error["retryable"] = bool(first.get("retryable", error["retryable"]))
    return error


def _subclasses(cls: type) -> list[type]:
    out = [cls]
    for sub in cls.__subclasses__():
        out += _subclasses(sub)
    return out


def error_payload(exc: BaseException) -> dict[str, Any]:
    """``{success: false, error: {...}}`` for any exception; unexpected ones become INTERNAL."""
    if not isinstance(exc, BatchrayError):
        exc = InternalError(f"unexpected {type(exc).__name__}: {exc}")
    return {"success": False, "error": exc.to_dict()}
