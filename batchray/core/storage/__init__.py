"""Where data is kept: store layouts and URLs, the catalog and readers, the decision log, and
the participants of each backend (:mod:`.sqlite`, :mod:`.postgres`). Imports the model and
the protocol (:mod:`batchray.core.txn`), never planning or running."""
