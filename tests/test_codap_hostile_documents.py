"""CODAP documents whose fields have values of the wrong JSON type: the reader refuses them with a
:class:`~batchray.errors.DocumentError` naming where (``wrong_type``), or reads them, and the
writer drops what cannot be written; never another exception."""
from __future__ import annotations

import json

import pytest

from batchray.errors import DocumentError
from batchray.io.codap.reader import loads_document, read_document
from batchray.io.codap.writer import document_to_v2
from test_codap_document import SAMPLES, reason_of, two_levels, write_json


# ---------------------------------------------------------------------------------------------
# hostile documents: fields of the wrong JSON type
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mutate, location", [
    (lambda d: d["contexts"][0]["collections"][0].__setitem__("name", ["People"]),
     "contexts[0].collections[0]"),
    (lambda d: d["components"].append({"type": "DG.TableView", "componentStorage": {"attributeWidths": 5}}),
     "components[0].componentStorage"),
    (lambda d: d["components"].append({"type": "DG.GraphView", "componentStorage": {
        "plotModels": [{"plotClass": {"x": 1}}]}}), "components[0].componentStorage.plotModels[0]"),
])
def test_fields_of_the_wrong_type_are_wrong_type(tmp_path, mutate, location):
    data = two_levels()
    mutate(data)
    with pytest.raises(DocumentError) as excinfo:
        read_document(write_json(tmp_path, data))
    assert reason_of(excinfo) == "wrong_type", excinfo.value.message
    assert excinfo.value.details["location"] == location


def test_a_link_whose_id_is_no_id_is_dropped_when_written(tmp_path):
    data = two_levels()
    data["contexts"][0]["contextStorage"] = {"_links_": {"x": {"type": "DG.Attribute", "id": [7]}}}
    data["components"] = [{"type": "DG.TextView", "componentStorage": {
        "_links_": {"y": {"type": "DG.Attribute", "id": {"a": 1}}}, "text": "t"}}]
    out = document_to_v2(read_document(write_json(tmp_path, data)))
    assert out["contexts"][0]["contextStorage"].get("_links_") == {}
    assert out["components"][0]["componentStorage"].get("_links_", {}) == {}


_FUZZ_VALUES = [None, 0, -1, 1.5, "", "x", True, [], {}, [1], {"a": 1}, "[]", 2**70, 1e308]


def _json_paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _json_paths(inner, path + (key,))
    elif isinstance(value, list):
        for i, inner in enumerate(value[:3]):
            yield from _json_paths(inner, path + (i,))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", SAMPLES)
def test_fields_of_any_type_give_a_document_error_or_a_document(name, seed):
    """Any field of a real document given a value of another JSON type: the reader and the
    writer give a DocumentError or a document, never another exception."""
    import copy
    import random

    from batchray.io.codap.components import stored_storage

    from codap_files import FIXTURES_DIR

    base = json.loads((FIXTURES_DIR / name).read_text(encoding="utf-8"))
    paths = [p for p in _json_paths(base) if p]
    rng = random.Random(seed)
    for attempt in range(400):
        data = copy.deepcopy(base)
        changed = []
        for _ in range(rng.randint(1, 3)):
            path, value = rng.choice(paths), copy.deepcopy(rng.choice(_FUZZ_VALUES))
            node = data
            try:
                for key in path[:-1]:
                    node = node[key]
                node[path[-1]] = value
            except (TypeError, KeyError, IndexError):
                continue  # an earlier change took the path away
            changed.append((path, value))
        try:
            doc = loads_document(json.dumps(data))
            document_to_v2(doc)
            for comp in doc.components:
                stored_storage(comp.raw)
        except DocumentError:
            pass
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"{name}, seed {seed}, attempt {attempt}: {changed} raised {exc!r}")
