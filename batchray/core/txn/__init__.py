"""The transaction protocol: the participant interface and its steps, chunks and messages,
the two-phase-commit driver, locks, the memory budget and crash points. Imports
:mod:`batchray.core.model` and :mod:`batchray.errors` only."""
