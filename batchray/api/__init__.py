"""The front: :class:`~batchray.api.client.Client` (``batchray.connect``), the agent tools
(:mod:`.tools`), the CLI, the MCP server and the demo. The top layer: it may import everything
else (the core, io, and the Ray runtime in ``actors/``); nothing imports it."""
