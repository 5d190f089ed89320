"""The embedded store: one SQLite file per shard, written in place with an undo log."""
