"""batchray: transactional batch operations on Ray over CODAP-style data.

Layout (dependencies go one way, down):

* entry points — :mod:`batchray.client` (``connect``), :mod:`batchray.tools`, :mod:`batchray.cli`;
* ``actors/`` — the Ray actors, thin shells over the core;
* the core, which imports no Ray — the operation model (:mod:`~batchray.model`), the CODAP
  schema (:mod:`~batchray.schema`), planning (:mod:`~batchray.planner`, :mod:`~batchray.engine`),
  two-phase commit (:mod:`~batchray.twophase`, :mod:`~batchray.decision_log`), participants
  (:mod:`~batchray.participant`, :mod:`~batchray.sqlite_shard`), locks, queries, expressions,
  and the test helpers in :mod:`batchray.testing`.
"""
from .errors import (
    BatchrayError,
    CancelledError,
    ConflictError,
    InDoubtError,
    LockConflict,
    NotFoundError,
    SchemaError,
    TransactionAborted,
    TransientError,
    ValidationError,
)
from .model import BatchResult, BatchState, BatchStatus, ItemError, Operation, TransactionOptions
from .schema import Attribute, AttributeType, Collection, Component, DataContext

__version__ = "0.1.0"


def connect(store="./batchray-data", **options):
    """Connect to a store through Ray; see :func:`batchray.client.connect`."""
    from .client import connect as _connect

    return _connect(store, **options)


__all__ = [
    "Attribute",
    "AttributeType",
    "BatchResult",
    "BatchState",
    "BatchStatus",
    "BatchrayError",
    "CancelledError",
    "Collection",
    "Component",
    "ConflictError",
    "DataContext",
    "InDoubtError",
    "ItemError",
    "LockConflict",
    "NotFoundError",
    "Operation",
    "SchemaError",
    "TransactionAborted",
    "TransactionOptions",
    "TransientError",
    "ValidationError",
    "__version__",
    "connect",
]
