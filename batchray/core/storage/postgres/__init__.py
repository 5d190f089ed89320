"""The cluster store: shards as PostgreSQL tables, votes as ``PREPARE TRANSACTION``."""
