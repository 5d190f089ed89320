"""A long list of item before-images in a form that pickles as three buffers.

A chunk that changes or deletes items returns ``(id, old JSON or None)`` for each
(:class:`~batchray.core.txn.chunks.BeforeImages`); on Ray the worker's answer carries them to
the object store, pickled. Pickled as tuples, each costs a tuple, an int and a string of its
own: 0.26 s for an update of 500,000 bench items, 9 % of the worker's samples in ``py-spy``
of a million-item query update on two shards (scenario 4 of ``python -m bench``). Packed, the ids are one
array of 64-bit ints, the texts one string and their lengths one array (-1 for no text):
0.15 s, packing included. Unpacking costs about twice what loading the tuples did, paid only
by whoever reads the images back.
"""
from __future__ import annotations

import itertools
from array import array
from operator import itemgetter
from typing import Any, Optional

PACK_AT = 256
"""The fewest images worth packing: below it the tuples pickle as fast."""


class PackedImages:
    """``(ids, lengths, text)`` of a list of ``(int id, str or None)`` before-images."""

    __slots__ = ("ids", "lengths", "text")

    def __init__(self, ids: bytes, lengths: bytes, text: str) -> None:
        self.ids, self.lengths, self.text = ids, lengths, text

    def __reduce__(self) -> tuple[Any, ...]:
        return PackedImages, (self.ids, self.lengths, self.text)

    def unpacked(self) -> list[tuple[int, Optional[str]]]:
        """The images as they were given to :func:`packed`."""
        ids, lengths = array("q"), array("q")
        ids.frombytes(self.ids)
        lengths.frombytes(self.lengths)
        text = self.text
        if min(lengths, default=0) >= 0:
            ends = list(itertools.accumulate(lengths))
            return list(zip(ids, map(text.__getitem__, map(slice, [0, *ends[:-1]], ends))))
        out: list[tuple[int, Optional[str]]] = []
        at = 0
        for item_id, length in zip(ids, lengths):
            if length < 0:
                out.append((item_id, None))
            else:
                out.append((item_id, text[at:at + length]))
                at += length
        return out


def packed(items: list[Any]) -> Any:
    """``items`` as a :class:`PackedImages` when there are at least :data:`PACK_AT` of them and
    each is an ``(int, str or None)`` pair whose id fits 64 bits; else ``items`` as they are."""
    if len(items) < PACK_AT or any(type(item) is not tuple or len(item) != 2 for item in items):
        return items
    try:
        ids = array("q", map(itemgetter(0), items))
        texts = list(map(itemgetter(1), items))
        try:
            text = "".join(texts)  # raises for a None (no row before) or a non-string
            lengths = array("q", map(len, texts))
        except TypeError:
            if not all(t is None or type(t) is str for t in texts):
                return items
            text = "".join(t for t in texts if t is not None)
            lengths = array("q", [-1 if t is None else len(t) for t in texts])
    except (TypeError, OverflowError):  # an id not an int, or past 64 bits: pickled as they are
        return items
    return PackedImages(ids.tobytes(), lengths.tobytes(), text)


def unpacked(items: Any) -> list[Any]:
    """What :func:`packed` was given."""
    return items.unpacked() if isinstance(items, PackedImages) else items
