"""The core: everything batchray does without Ray, file formats or tools.

Layers, each importing only those before it (and :mod:`batchray.errors`)::

    model  ->  txn  ->  storage  ->  plan  ->  run

* :mod:`~batchray.core.model` — the CODAP data model: schema, values, cases, resources,
  queries, expressions, and the batch request/result types;
* :mod:`~batchray.core.txn` — the transaction protocol: the participant interface, chunks and
  messages, the two-phase-commit driver, locks, the memory budget, crash points;
* :mod:`~batchray.core.storage` — participants and logs that keep data: SQLite and PostgreSQL
  shards, the decision log, store layouts and backends;
* :mod:`~batchray.core.plan` — turning requests into plans of chunks;
* :mod:`~batchray.core.run` — executing plans: the executor, the coordinator service, the
  in-process runtime.

Nothing here imports Ray, pyarrow or the tool surface (``tests/test_layers.py`` checks it).
"""
