"""The agent tools: JSON-schema'd calls over a client. Importing this package registers every
tool (:mod:`.registry` holds the table and the dispatcher)."""
from batchray.api.tools import codap, data, operations  # noqa: F401 - registering imports
from batchray.api.tools.registry import (TOOLS, call_tool, io_root_for, register, tool_io_root, tool_schemas,
                                         validate_args)

__all__ = ["TOOLS", "call_tool", "io_root_for", "register", "tool_io_root", "tool_schemas", "validate_args"]
