"""The front: :class:`~batchray.api.client.Client` (``batchray.connect``), the agent tools
(:mod:`.tools`), the CLI, the MCP server and the demo. The top layer: it may import everything
else (the core, io, and the Ray runtime in ``actors/``); nothing imports it."""
# Every structured error the front answers with has its passwords redacted: importing the URL
# module installs that redaction (batchray.errors.install_secret_redaction), also for stores
# that never open a PostgreSQL connection.
import batchray.core.storage.postgres.url  # noqa: E402,F401
