"""Before-images pickled packed come back as they were given (batchray.core.txn.image_packing)."""
from __future__ import annotations

import pickle
import random

import ray.cloudpickle as cloudpickle

from batchray.core.txn.chunks import BeforeImages
from batchray.core.txn.image_packing import PACK_AT, PackedImages, packed, unpacked

SEED = 20261206


def _text(rng: random.Random) -> str:
    alphabet = ['a', '"', '\\', '\n', '\t', 'é', '€', '😀', '\x00', '{', '}']
    return "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 5, 40])))


def test_long_lists_of_images_are_packed_and_come_back_equal():
    rng = random.Random(SEED)
    for case in range(60):
        count = rng.choice([PACK_AT, PACK_AT + 1, rng.randint(PACK_AT, 3000)])
        with_none = rng.random() < 0.4
        items = [(rng.choice([rng.randrange(2 ** 53), -rng.randrange(2 ** 20), 0, 2 ** 63 - 1]),
                  None if with_none and rng.random() < 0.3 else _text(rng)) for _ in range(count)]
        assert isinstance(packed(items), PackedImages), f"seed {SEED}, case {case}"
        images = BeforeImages(case, created=[(1, 2, 3)], items=items, docs=[("doc", None), ("k", "v")], affected=count,
                              errors=[{"index": 1}], vote=rng.choice([None, True, False]), partial=rng.random() < 0.5)
        for dumps in (pickle.dumps, cloudpickle.dumps):
            back = pickle.loads(dumps(images, protocol=5))
            assert back == images, f"seed {SEED}, case {case}"
            assert all(type(item) is tuple for item in back.items)


def test_what_is_not_a_long_list_of_id_text_pairs_is_pickled_as_it_is():
    """Short lists, and any shape the packed form could not give back exactly (lists for tuples,
    three fields, a float or a too big id, bytes for text): left as they are, and equal after
    the round trip."""
    good = [(i, f"v{i}") for i in range(PACK_AT)]
    cases = {
        "short": good[:-1],
        "a list for a tuple": good[:-1] + [[5, "x"]],
        "three fields": good[:-1] + [(5, "x", 1)],
        "a float id": good[:-1] + [(5.0, "x")],
        "an id past 64 bits": good[:-1] + [(2 ** 64, "x")],
        "bytes for a text": good[:-1] + [(5, b"x")],
        "a number for a text": good[:-1] + [(5, 7)],
    }
    for name, items in cases.items():
        assert packed(items) is items, name
        assert unpacked(packed(items)) is items, name
        images = BeforeImages(1, items=items)
        assert pickle.loads(pickle.dumps(images, protocol=5)) == images, name
    assert isinstance(packed(good), PackedImages)
