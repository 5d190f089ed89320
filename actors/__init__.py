"""The Ray runtime: the driver-side :class:`~actors.runtime.RayRuntime` (one implementation of
:class:`batchray.core.run.runtime.Runtime`) and the actors, thin shells over the batchray core.
Imports the core (and io); never :mod:`batchray.api`, which imports it.

* :class:`~actors.runtime.RayRuntime` — starts or joins Ray and the store's coordinator, puts
  chunks in the object store, hands the coordinator refs, reads committed data directly;
* :class:`~actors.coordinator.TransactionCoordinator` — owns two-phase commit through the
  durable decision log, admits batches, dispatches chunk object refs to workers;
* :class:`~actors.worker.WorkerActor` — owns shards, applies chunks, votes, commits, aborts;
* :class:`~actors.progress.ProgressActor` — aggregates per-chunk progress and exports metrics;
* :mod:`actors.metrics` — the coordinator's Ray metrics (2PC phase durations, lock conflicts,
  batches queued); ``docs/dashboards.md`` for the Grafana dashboard over them.

Each method unpacks its message, calls the core, and returns.
"""
