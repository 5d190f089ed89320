"""Files in and out: CSV, JSON Lines, Parquet (streamed with pyarrow) and CODAP documents
(:mod:`.codap`). Imports the core; never Ray, never the tool surface."""
