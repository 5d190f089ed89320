"""Planning: requests become :class:`~batchray.core.plan.plan.Plan` objects, streams of
chunks addressed to participants. Reads the catalog through :mod:`batchray.core.storage`;
runs nothing."""
