"""Colour values (batchray.core.model.colors): what a ``color`` attribute takes, as CODAP shows a
colour (``parseColor(value, {colorNames: true})`` in ``v3/src/utilities/color-utils.ts``: the
CSS colour names and ``transparent``, hex colours of 3, 4, 6 or 8 digits, ``rgb()`` and ``hsl()``)."""
from __future__ import annotations

import pytest

from batchray.core.model.schema import Attribute, ValueProblem, coerce_value
from tests.local_runtime import local_client

COLOR = Attribute(name="hue", type="color")


@pytest.mark.parametrize("value", ["red", "RebeccaPurple", " navy ", "transparent", "LightGoldenrodYellow", "grey",
                                   "#fff", "#FFFA", "#a0b0c0", "#a0b0c0ff", "rgb(1,2,3)", "rgba(1, 2, 3, 0.5)",
                                   "hsl(120, 50%, 50%)"])
def test_a_colour_codap_shows_is_a_colour_as_given(value):
    assert coerce_value(COLOR, value) == value


@pytest.mark.parametrize("value", ["notacolor", "gren", "bluee", "Colour", "#12345", "#1234567", "#ggg", "#", 12,
                                   True])
def test_a_word_that_names_no_colour_and_a_hex_of_another_length_are_refused(value):
    """Any word of 3 to 30 letters was a colour (a typo such as 'gren' was stored as one, which
    CODAP shows as text), and so were 5 and 7 hex digits, which no colour has."""
    with pytest.raises(ValueProblem, match="expected a color"):
        coerce_value(COLOR, value)


def test_a_create_refuses_a_word_that_names_no_colour_on_every_path(tmp_path):
    pa = pytest.importorskip("pyarrow")
    with local_client(tmp_path / "store", shards=1) as client:
        client.create_data_context("Paint", [{"name": "pots", "attrs": [{"name": "hue", "type": "color"}]}])
        for rows in ([{"hue": "red"}, {"hue": "gren"}], pa.Table.from_pylist([{"hue": "red"}, {"hue": "gren"}])):
            refused = client.create_items("Paint", "pots", rows)
            assert [(e.index, e.field, e.code) for e in refused.errors] == [(1, "hue", "INVALID_VALUE")]
        assert client.get_items("Paint") == []
