"""``fresh_ids(start)``: an ``allocate(n) -> first id`` for the chunker, handing out contiguous
blocks from ``start`` on, as the store's id sequence does."""
from __future__ import annotations

from typing import Callable


def fresh_ids(start: int = 1_000) -> Callable[[int], int]:
    following = [start]

    def allocate(n: int) -> int:
        first = following[0]
        following[0] += n
        return first

    return allocate
