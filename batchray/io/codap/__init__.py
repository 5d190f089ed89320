"""CODAP documents: reading v2 ``.codap`` files into plans and writing them back.

Independent of any store:

* :mod:`~batchray.io.codap.model` — the dataclasses (``Document``, ``ContextSpec``,
  ``CollectionSpec``, ``AttrSpec``, ``ComponentSpec``, ``GroupedCase``) and constants;
* :mod:`~batchray.io.codap.reader` — ``read_document``, ``loads_document``, ``parse_document``;
* :mod:`~batchray.io.codap.writer` — ``write_document``, ``document_to_v2``;
* :mod:`~batchray.io.codap.components` — component storage read into properties and back;
* :mod:`~batchray.io.codap.graph_storage` — a graph's storage completed with what CODAP's graph
  importer reads;
* :mod:`~batchray.io.codap.names` — names batchray's rule refuses, cleaned;
* :mod:`~batchray.io.codap.hierarchy` — ``order_collections``, ``group_cases``;
* :mod:`~batchray.io.codap.links` — ``_links_`` entries and relinking;
* :mod:`~batchray.io.codap.values` — JavaScript value semantics and stored values.
"""
