"""Names from CODAP documents that batchray's name rule refuses, and the names it gives them.

CODAP v3 keeps a v2 document's names as written: ``v3/src/v2/codap-v2-data-set-importer.ts``
passes each context's, collection's and attribute's ``name`` to the new model unchanged, control
characters included, and shows the ``title`` (``v2NameTitleToV3Title`` in
``v3/src/models/data/v2-model.ts``; the title falls back to the name). batchray's rule
(:data:`~batchray.core.model.schema.NAME_PATTERN`) allows every character CODAP keeps but three:
NUL (PostgreSQL text cannot hold it) and the square brackets, which delimit CODAP resource
strings such as ``dataContext[Mammals].collection[Mammals]``; and a name has 200 characters at
most. :func:`clean_name` gives such a name one batchray can store, as near to CODAP's as can be:

* NUL is dropped; ``[`` becomes ``(`` and ``]`` becomes ``)`` (``Speed [mph]`` is
  ``Speed (mph)``);
* a name longer than 200 characters is cut to 200;
* a name left empty is ``_``.

The reader keeps the original spelling as the object's title (what CODAP shows) when the document
gives no title, makes the cleaned name unique among its siblings (``name_2``...) and notes every
change in ``Document.warnings``. Names within the rule are never changed.
"""
from __future__ import annotations

import re
from typing import Iterable

from batchray.core.model.schema import NAME_PATTERN

MAX_NAME = 200
_VALID = re.compile(NAME_PATTERN)
_BRACKETS = str.maketrans({"[": "(", "]": ")", "\x00": None})


def is_valid_name(name: str) -> bool:
    """Whether batchray stores ``name`` as it is."""
    return bool(_VALID.match(name))


def clean_name(name: str) -> str:
    """``name`` if batchray stores it as it is, else the name batchray gives it (module docstring)."""
    if is_valid_name(name):
        return name
    cleaned = name.translate(_BRACKETS)[:MAX_NAME]
    return cleaned if cleaned else "_"


def unique_name(name: str, taken: Iterable[str]) -> str:
    """``name``, or ``name_2``, ``name_3``... the first not in ``taken`` (cut to fit 200 characters)."""
    used = set(taken)
    if name not in used:
        return name
    n = 2
    while True:
        suffix = f"_{n}"
        candidate = name[:MAX_NAME - len(suffix)] + suffix
        if candidate not in used:
            return candidate
        n += 1


__all__ = ["MAX_NAME", "clean_name", "is_valid_name", "unique_name"]
