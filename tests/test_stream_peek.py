"""A generator that ends within the read-ahead is planned and sent whole, as a list is
(:func:`batchray.core.plan.rows.read_ahead`): the same stored items, result, errors and
progress as the same items given as a list; a longer or slow one streams as before."""
from __future__ import annotations

import pytest

from batchray.core.plan.rows import read_ahead
from tests.local_runtime import local_client

SCHEMA = [{"name": "People", "attrs": [{"name": "name", "type": "categorical"},
                                        {"name": "age", "type": "numeric", "min": 0}]}]


def _rows(n: int, bad: tuple[int, ...] = ()) -> list[dict]:
    return [{"name": f"p{i}", "age": -1 if i in bad else i} for i in range(n)]


def _counted(rows: list[dict], pulled: list[int]):
    for i, row in enumerate(rows):
        pulled.append(i)
        yield row


def test_a_stream_that_ends_within_the_read_ahead_becomes_a_tuple():
    rows = _rows(10)
    assert read_ahead((r for r in rows), 100, 60.0) == tuple(rows)
    assert read_ahead((r for r in rows), 10, 60.0) == tuple(rows)  # exactly the limit: it ends there
    assert read_ahead(iter([]), 100, 60.0) == ()


def test_a_longer_stream_stays_a_stream_with_the_same_rows_in_order():
    pulled: list[int] = []
    rows = _rows(50)
    ahead = read_ahead(_counted(rows, pulled), 20, 60.0)
    assert not hasattr(ahead, "__len__")
    assert pulled == list(range(21))  # read ahead up to the limit (and one more) only
    assert list(ahead) == rows


def test_a_slow_stream_is_read_no_further_than_the_first_row_past_the_time_limit():
    pulled: list[int] = []
    ticks = iter(range(100))  # the clock moves one second per reading: the start, then each row
    ahead = read_ahead(_counted(_rows(10), pulled), 100, 2.5, clock=lambda: next(ticks))
    assert pulled == [0, 1, 2] and not hasattr(ahead, "__len__")
    assert list(ahead) == _rows(10)


def _stored(client, context: str) -> list[tuple[int, dict]]:
    return sorted((item["id"], item["values"]) for item in client.get_items(context))


@pytest.mark.parametrize("atomic, bad", [(True, ()), (True, (3,)), (False, (3, 8))])
def test_a_small_generator_stores_and_reports_what_its_list_does(tmp_path, atomic, bad):
    outcomes = {}
    for kind in ("list", "generator"):
        with local_client(tmp_path / kind, shards=2) as client:
            assert client.create_data_context("Ctx", SCHEMA).success
            rows = _rows(10, bad)
            events: list[dict] = []
            result = client.create_items("Ctx", "People", rows if kind == "list" else (r for r in rows),
                                         atomic=atomic, callback=events.append)
            last = events[-1] if events else {}
            outcomes[kind] = (
                result.success, result.items_created, result.item_ids, result.total_items,
                [(e.index, e.field, e.code) for e in result.errors],
                _stored(client, "Ctx"), (last.get("total"), last.get("completed"), last.get("failed")),
                result.state, client.runtime.log.batch(result.transaction_id)["state"],
            )
    assert outcomes["generator"] == outcomes["list"]
    success, created = outcomes["list"][0], outcomes["list"][1]
    assert created == (0 if atomic and bad else 10 - len(bad))
    assert success == (not bad)


def test_a_generator_longer_than_the_read_ahead_stores_every_item_in_order(tmp_path, monkeypatch):
    import batchray.api.client as client_module

    monkeypatch.setattr(client_module, "STREAM_READ_AHEAD", 7)
    with local_client(tmp_path / "store", shards=2) as client:
        assert client.create_data_context("Ctx", SCHEMA).success
        result = client.create_items("Ctx", "People", (r for r in _rows(20)), batch_size=4)
        assert result.success and result.items_created == 20
        assert [v["name"] for _, v in _stored(client, "Ctx")] == [f"p{i}" for i in range(20)]


def test_a_generator_that_fails_while_read_ahead_writes_nothing(tmp_path):
    def broken():
        yield from _rows(3)
        raise RuntimeError("the source broke")

    with local_client(tmp_path / "store", shards=2) as client:
        assert client.create_data_context("Ctx", SCHEMA).success
        with pytest.raises(RuntimeError, match="the source broke"):
            client.create_items("Ctx", "People", broken())
        assert client.count_items("Ctx") == 0
        assert client.runtime.log.batches_in("running") == []


@pytest.mark.ray
def test_on_ray_a_small_generator_is_sent_whole_and_stores_what_its_list_does(make_client):
    client = make_client("peek")
    assert client.create_data_context("List", SCHEMA).success
    assert client.create_data_context("Gen", SCHEMA).success
    rows = _rows(10)
    by_list = client.create_items("List", "People", rows)
    by_generator = client.create_items("Gen", "People", (r for r in rows))
    assert by_list.success and by_generator.success
    assert by_generator.items_created == by_list.items_created == 10
    assert [v for _, v in _stored(client, "Gen")] == [v for _, v in _stored(client, "List")]
    bad = client.create_items("Gen", "People", (r for r in _rows(10, (4,))))
    assert not bad.success and [(e.index, e.field) for e in bad.errors] == [(4, "age")]
    assert client.count_items("Gen") == 10


def test_without_waiting_a_generator_is_not_read_ahead(tmp_path, monkeypatch):
    """``wait=False`` returns the batch id at once: its generator is fed as a stream, as before."""
    with local_client(tmp_path / "store", shards=2) as client:
        assert client.create_data_context("Ctx", SCHEMA).success
        seen = []
        run = client.runtime.run

        def spy(plan, *args, **kwargs):
            seen.append(plan.holds_input)
            return run(plan, *args, **kwargs)

        monkeypatch.setattr(client.runtime, "run", spy)
        batch_id = client.create_items("Ctx", "People", (r for r in _rows(10)), wait=False)
        assert client.wait(batch_id).items_created == 10
        client.create_items("Ctx", "People", (r for r in _rows(10)))
        assert seen == [False, True]
