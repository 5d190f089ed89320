"""Names a package exports but loads on first use (PEP 562), so that importing the package, or a
module under it, does not load what those names need (Ray for ``batchray.connect``, pyarrow for
``batchray.io.import_file``). Imports nothing of batchray: any layer may use it."""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(namespace: dict[str, Any], exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for the package whose globals are ``namespace``: ``exports``
    maps each name to the module that defines it; a name is imported on first access and then
    kept in ``namespace``."""
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted([*namespace, *exports])

    return __getattr__, __dir__
