"""A store directory's layout (batchray/core/storage/store.py, ``StoreLayout``), and the shard count
of every store.

* A path that is no directory, or a directory whose ``store.json`` is damaged, is refused
  with a structured error (``VALIDATION`` or ``STORE``) that names it, and nothing is changed.
* Openers racing to create one new store agree on its shard count: the one ``store.json``
  publishes (the first written), whatever each asked for.
* A shard count that is no whole number from 1 to 256 is a ``VALIDATION`` error on ``shards``
  for every store, before anything is created.
"""
from __future__ import annotations

import json
import threading

import pytest

from batchray.core.storage.backends import open_backend
from batchray.core.storage.store import StoreLayout
from batchray.errors import BatchrayError, StoreError, ValidationError


@pytest.mark.parametrize("text, why", [
    ("{not json", "not JSON"),
    ("", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"format": 1}', "shards None"),
    ('{"format": 1, "shards": 0}', "shards 0"),
    ('{"format": 1, "shards": "2"}', "shards '2'"),
    ('{"format": 1, "shards": true}', "shards True"),
])
def test_a_damaged_store_json_is_a_store_error_and_is_left_as_it_is(tmp_path, text, why):
    (tmp_path / "store.json").write_text(text)
    with pytest.raises(StoreError) as caught:
        open_backend(tmp_path)
    assert why in caught.value.message and "store.json" in caught.value.message
    assert caught.value.details["path"] == str(tmp_path / "store.json")
    assert (tmp_path / "store.json").read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.json"]


def test_a_path_that_is_no_directory_is_refused(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("data")
    with pytest.raises(ValidationError, match="is not a directory") as caught:
        open_backend(path)
    assert caught.value.details["field"] == "store"
    with pytest.raises(StoreError, match="cannot open the store directory"):
        open_backend(path / "below")
    assert path.read_text() == "data" and sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
    with pytest.raises(ValidationError, match="home directory") as caught:  # an INTERNAL RuntimeError before
        open_backend("~no-such-user-of-this-system/store")
    assert caught.value.details["field"] == "store"


@pytest.mark.parametrize("trial", range(30))
def test_openers_racing_to_create_a_store_agree_on_its_shard_count(tmp_path, trial):
    root = tmp_path / "store"
    start = threading.Barrier(4)
    opened: dict[int, object] = {}

    def open_with(shards: int) -> None:
        start.wait()
        try:
            opened[shards] = StoreLayout(root, shards).shards
        except BatchrayError as exc:
            opened[shards] = exc

    threads = [threading.Thread(target=open_with, args=(n,)) for n in (1, 2, 3, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    fixed = json.loads((root / "store.json").read_text())["shards"]
    assert opened[fixed] == fixed, opened
    for asked, got in opened.items():
        if asked != fixed:  # told the count the store was created with, not given its own
            assert isinstance(got, ValidationError) and f"created with {fixed} shards" in got.message, opened
    assert sorted(p.name for p in root.iterdir()) == ["store.json"]


@pytest.mark.parametrize("shards", [0, -3, 257, 2.5, True, "3"])
def test_a_shard_count_that_is_no_whole_number_from_1_to_256_is_refused_before_anything_is_made(tmp_path, shards):
    """0 made a store of the default 2 shards, 2.5 a store whose store.json no opener could
    use, and "3" an INTERNAL TypeError."""
    with pytest.raises(ValidationError) as caught:
        open_backend(tmp_path / "store", shards)
    assert caught.value.details["field"] == "shards" and "whole number from 1 to 256" in caught.value.message
    assert not (tmp_path / "store").exists()
    pytest.importorskip("psycopg")
    with pytest.raises(ValidationError) as caught:  # refused before a server is asked (none answers here)
        open_backend("postgresql://u@127.0.0.1:1/db?schema=s", shards)
    assert caught.value.details["field"] == "shards"
