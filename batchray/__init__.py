"""batchray: transactional batch operations on Ray over CODAP-style data.

Layout (dependencies go one way; each package's docstring says what it may import):

* :mod:`batchray.errors` — the one exceptions module, imported by every layer;
* :mod:`batchray.core` — no Ray, no file formats, no tools: the model, the transaction
  protocol, storage, planning and running (with an in-process runtime);
* :mod:`batchray.io` — files in and out (CSV, JSON Lines, Parquet, CODAP documents);
* ``actors/`` — the Ray runtime: coordinator, worker and progress actors over the core;
* :mod:`batchray.api` — the front object (``batchray.connect``), the tools, CLI and MCP server;
* :mod:`batchray.testing` — fault injection, the simulator and the history checker.

The names below are loaded on first use, so ``import batchray.core`` loads no Ray.
"""
from __future__ import annotations

from batchray.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    **{name: "batchray.errors" for name in (
        "BatchrayError", "CancelledError", "ConflictError", "InDoubtError", "LockConflict", "NotFoundError",
        "SchemaError", "TransactionAborted", "TransientError", "ValidationError")},
    **{name: "batchray.core.model.batch" for name in (
        "BatchResult", "BatchState", "BatchStatus", "ItemError", "Operation", "RunOptions", "TransactionOptions")},
    **{name: "batchray.core.model.schema" for name in (
        "Attribute", "AttributeType", "Collection", "Component", "DataContext")},
    **{name: "batchray.api.raydata" for name in (
        "ItemsDatasink", "ItemsDatasource", "read_dataset", "write_dataset")},
    "connect": "batchray.api.client",
    "Client": "batchray.api.client",
}


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)

__all__ = sorted([*_EXPORTS, "__version__"])
