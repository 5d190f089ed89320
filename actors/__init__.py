"""Ray actors: thin shells over the batchray core.

* :class:`~actors.coordinator.TransactionCoordinator` — owns two-phase commit through the
  durable decision log, admits batches, dispatches chunk object refs to workers;
* :class:`~actors.worker.WorkerActor` — owns shards, applies chunks, votes, commits, aborts;
* :class:`~actors.progress.ProgressActor` — aggregates per-chunk progress and exports metrics.

Each method unpacks its message, calls the core, and returns.
"""
