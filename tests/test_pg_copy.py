r"""Create chunks written with COPY at a PostgreSQL participant (marker ``postgres``).

A create chunk's rows are validated before the chunk's transaction is entered and encoded into
COPY's text format inside it (:mod:`batchray.core.storage.postgres.copy_rows`). PostgreSQL is
the judge of the format: every stored ``vals`` must be the row's JSON byte for byte
(``orjson.dumps``), whatever the values hold (COPY's escapes: backslash, tab, newline, ``\.``,
``\N``; ``%``; braces and commas), and rows rejected by validation are reported with their
request index and leave the ids of the others in place. A create's undo is PostgreSQL's own
(the transaction, prepared or not, rolled back) and its before-images are id ranges: a
participant process killed after it prepared such chunks leaves them to recovery, which
commits exactly those rows; killed before, nothing of them stays.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from pg_schema import DSN, SKIP_REASON, own_schema

from batchray.core.model.schema import DataContext
from batchray.core.txn.chunks import CreateItems, TxnRef, context_range

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parent.parent
LO, _ = context_range(1)
SCHEMA = DataContext.model_validate({"name": "T", "collections": [{"name": "T", "attrs": [
    {"name": "name"}, {"name": "n", "type": "numeric"}, {"name": "ok", "type": "checkbox"}]}]}).model_dump(mode="json")

if not DSN:
    pytest.skip(SKIP_REASON, allow_module_level=True)

psycopg = pytest.importorskip("psycopg")

TRICKY = ["", "%", "%d %s %%", "100%", "a\\b", "\\.", "\\N", "tab\there", "line\nbreak", "cr\rx", 'quote "q"',
          "é ü 漢字 🙂", "{\"nested\": 1}", "}{", "},", ",{", "\x01\x1f", "\\t literally", "\u2028"]


def _rows(seed: int, count: int, with_boundary: bool) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        row = {"name": rng.choice(TRICKY) + str(i), "n": rng.choice([i, -i * 0.5, 1e300, None]), "ok": i % 2 == 0}
        if rng.random() < 0.3:
            del row["ok"]
        rows.append(row)
    if with_boundary:  # a row boundary's characters inside values: the COPY lines are cut row by row
        rows[count // 2]["name"] = "holds },{ between rows"
        rows[count // 2 + 1]["name"] = "ends in },{"  # with the closing quote: the boundary '},{"'
    return rows


@pytest.fixture
def url():
    with own_schema("pgcopy") as schema:
        yield schema.url


def _participant(url: str, **kwargs):
    from batchray.core.storage.postgres.participant import PgParticipant
    from batchray.core.storage.postgres.store import PgStore

    return PgParticipant(PgStore(url), "s", **kwargs)


def _stored(url: str) -> dict[int, tuple[str, int, int]]:
    """``{id: (vals, ver, part)}`` as PostgreSQL holds them."""
    from batchray.core.storage.postgres.url import parse_pg_url

    dsn, schema = parse_pg_url(url)
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {i: (v, ver, part) for i, v, ver, part in
                conn.execute(f'SELECT id, vals, ver, part FROM "{schema}".items ORDER BY id')}


@pytest.mark.parametrize("with_boundary", [False, True], ids=["plain", "braces-in-values"])
def test_created_rows_are_stored_as_their_json_byte_for_byte(url, with_boundary):
    seed = random.randrange(1 << 30)
    rows = _rows(seed, 300, with_boundary)
    rows[7] = {"name": "bad", "n": "not a number"}  # rejected and reported, the others stored
    ids = range(LO + 1, LO + 1 + 3 * len(rows), 3)
    participant = _participant(url)
    ref = TxnRef("t1", 1)
    images = participant.apply(ref, CreateItems(1, ids, rows, schema=SCHEMA, start_index=100))
    assert [(e["index"], e["field"]) for e in images.errors] == [(107, "n")], f"seed {seed}"
    assert images.created == [(ids[0], ids[-1], len(rows) - 1)] and images.affected == len(rows) - 1
    assert participant.prepare(ref)
    participant.commit(ref)
    stored = _stored(url)
    expected = {i: orjson.dumps(row).decode() for i, row in zip(ids, rows) if row["name"] != "bad"}
    assert {i: v for i, (v, _, _) in stored.items()} == expected, f"seed {seed}"
    assert len({(ver, part) for _, ver, part in stored.values()}) == 1, "one version and one part per chunk"
    participant.close()


@pytest.mark.parametrize("with_boundary", [False, True], ids=["plain", "braces-in-values"])
def test_rows_encoded_by_their_sender_are_stored_as_their_json_byte_for_byte(url, with_boundary):
    """Rows checked and encoded by the driver (``encoded_by_sender``: one JSON array, for rows
    that pass the checks whole), cut into COPY lines by the participant (in passes over the
    whole array, or row by row when values hold a row boundary): PostgreSQL stores each row's
    JSON as the participant's own encoding does, backslashes, tabs, newlines, ``%`` and
    non-ASCII included."""
    from batchray.core.storage.patching import encoded_by_sender
    from batchray.core.txn.chunks import EncodedRows

    seed = random.randrange(1 << 30)
    rows = _rows(seed, 300, with_boundary)
    for row in rows:
        row["n"] = None if row["n"] == 1e300 else row["n"]  # a float beyond ints' range takes the row path
    ids = range(LO + 1, LO + 1 + 3 * len(rows), 3)
    chunk = encoded_by_sender(CreateItems(1, ids, rows, schema=SCHEMA))
    assert isinstance(chunk.rows, EncodedRows), f"seed {seed}"
    participant = _participant(url)
    ref = TxnRef("t1", 1)
    images = participant.apply(ref, chunk, commit=True)
    assert images.vote and images.affected == len(rows) and images.created == [(ids[0], ids[-1], len(rows))]
    stored = _stored(url)
    assert {i: v for i, (v, _, _) in stored.items()} == {i: orjson.dumps(r).decode() for i, r in zip(ids, rows)}, \
        f"seed {seed}"
    assert len({(ver, part) for _, ver, part in stored.values()}) == 1
    participant.close()


def test_pre_encoded_rows_keep_their_text(url):
    texts = ['{"name":"raw\ttab"}', '{"name":"raw\nline"}', '{"name":"a\\\\b %d %s"}', '{"x":"\r"}', "{}"]
    participant = _participant(url)
    ref = TxnRef("t1", 1)
    participant.apply(ref, CreateItems(1, [LO + 1, LO + 2, LO + 3, LO + 4, LO + 5], texts))
    assert participant.prepare(ref)
    participant.commit(ref)
    assert [v for v, _, _ in _stored(url).values()] == texts
    participant.close()


def test_an_open_create_rolls_back_to_nothing(url):
    participant = _participant(url)
    ref = TxnRef("t1", 1)
    for chunk_id, first in enumerate(range(LO + 1, LO + 401, 100), start=1):
        participant.apply(ref, CreateItems(chunk_id, range(first, first + 100), _rows(chunk_id, 100, False),
                                           schema=SCHEMA))
    assert participant.before_images("t1")[0].created == [(LO + 1, LO + 100, 100)]
    participant.abort(ref)
    assert _stored(url) == {} and participant.leftovers()["txns"] == 0
    participant.close()


CHILD = r"""
import sys, time
from batchray.core.txn.chunks import CreateItems, TxnRef
from batchray.core.storage.postgres.participant import PgParticipant
from batchray.core.storage.postgres.store import PgStore
sys.path.insert(0, "tests")
from test_pg_copy import LO, SCHEMA, _rows
participant = PgParticipant(PgStore(sys.argv[1]), "s", recover=False)
ref = TxnRef("victim", 20)
participant.apply(ref, CreateItems(1, range(LO + 1, LO + 501), _rows(1, 500, False), schema=SCHEMA))
participant.apply(ref, CreateItems(2, range(LO + 501, LO + 1001), _rows(2, 500, True), schema=SCHEMA))
if sys.argv[2] == "prepared":
    assert participant.prepare(ref)
print("ready", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("mode,decision", [("prepared", "commit"), ("active", None)])  # abort: test_pg_prepared
def test_a_create_killed_with_its_process_is_finished_exactly_by_recovery(url, mode, decision):
    _participant(url).close()  # the schema exists before the child starts
    child = subprocess.Popen([sys.executable, "-c", CHILD, url, mode], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])})
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    assert _stored(url) == {}
    survivor = _participant(url, lock_timeout=2.0)
    if mode == "prepared":
        assert survivor.in_doubt == [{"txn": "victim", "ts": 20, "shard": "s"}]
        getattr(survivor, decision)(TxnRef("victim", 20))
    else:
        assert survivor.in_doubt == [] and survivor.outcome("victim") == "aborted"
    rows = _rows(1, 500, False) + _rows(2, 500, True)
    expected = {LO + 1 + j: orjson.dumps(row).decode() for j, row in enumerate(rows)} if decision == "commit" else {}
    assert {i: v for i, (v, _, _) in _stored(url).items()} == expected
    assert survivor.leftovers()["txns"] == 0 and survivor.pending() == []
    survivor.close()
