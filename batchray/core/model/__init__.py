"""The CODAP data model and the batch types: schema (contexts, collections, attributes,
components), cases, resource strings, the query and expression languages, batch options and
results. Imports nothing of batchray but :mod:`batchray.errors`."""
