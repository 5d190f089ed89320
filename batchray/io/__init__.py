"""Files in and out: CSV, JSON Lines, Parquet (streamed with pyarrow) and CODAP documents
(:mod:`.codap`). Imports the core; never Ray, never the tool surface.

:func:`import_file` and :func:`export_file` (with :class:`ImportResult` and
:class:`ExportResult`) are the entry points, loaded on first use so that importing a module of
this package (a CODAP reader, say) loads no more than it needs. The modules:

* :mod:`~batchray.io.importer` — :func:`import_file`: checks, type inference, schema creation
  and the import plan; :mod:`~batchray.io.document_import` — the same for CODAP documents;
  :mod:`~batchray.io.import_transaction` — one import as one ``create_items`` transaction;
* :mod:`~batchray.io.exporter` — :func:`export_file`: CSV, JSON Lines and Parquet writers;
  :mod:`~batchray.io.document_export` — CODAP documents;
* :mod:`~batchray.io.sources` — a file read in record batches (the :class:`~batchray.io.sources.Source` base) and
  its formats: :mod:`~batchray.io.csv_source`, :mod:`~batchray.io.jsonl_source`,
  :mod:`~batchray.io.parquet_source`; :mod:`~batchray.io.conversions` — column types and values;
* :mod:`~batchray.io.formats` — formats; :mod:`~batchray.io.paths` — which paths may be read
  and written (``allowed_root``, ``overwrite``);
  :mod:`~batchray.io.results` — what an import or export reports;
* :mod:`~batchray.io.runtime` — the one seam to the front object (a Client on either runtime);
* :mod:`~batchray.io.codap` — CODAP v2 documents: model, reader, writer, components.
"""
from __future__ import annotations

from batchray.lazy import lazy_exports

_EXPORTS = {
    "import_file": "batchray.io.importer",
    "export_file": "batchray.io.exporter",
    "ImportResult": "batchray.io.results",
    "ExportResult": "batchray.io.results",
}


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)

__all__ = sorted(_EXPORTS)
