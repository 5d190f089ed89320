"""Colour values (batchray.core.model.colors): what a ``color`` attribute takes, as CODAP shows a
colour (``parseColor(value, {colorNames: true})`` in ``v3/src/utilities/color-utils.ts``: the
CSS colour names and ``transparent``, hex colours of 3, 4, 6 or 8 digits, ``rgb()`` and ``hsl()``)."""
from __future__ import annotations

import pytest

from batchray.core.model.schema import Attribute, ValueProblem, coerce_value
from tests.local_runtime import local_client

COLOR = Attribute(name="hue", type="color")


@pytest.mark.parametrize("value", ["red", "RebeccaPurple", "transparent", "LightGoldenrodYellow", "grey",
                                   "#fff", "#FFFA", "#a0b0c0", "#a0b0c0ff", " #fff\n", "\ufeff#abc", "rgb(1,2,3)",
                                   "rgba(1, 2, 3, 0.5)", "RGB(1,2,3)", "rgb(1 2 3 / 50%)", "rgb(10%, 20%, 30%, 40%)",
                                   "rgb(300, -4, 2.5)", "rgb(.5,2.25,3)", " rgb(1,2,3) ", "hsl(120, 50%, 50%)",
                                   "hsla(120deg, 50%, 50%, .5)", "hsl(1turn 5% 5% / .2)", "hsl(-3.5rad, 0%, 100%)"])
def test_a_colour_codap_shows_is_a_colour_as_given(value):
    assert coerce_value(COLOR, value) == value


@pytest.mark.parametrize("value", ["notacolor", "gren", "bluee", "Colour", "#12345", "#1234567", "#ggg", "#", 12,
                                   True])
def test_a_word_that_names_no_colour_and_a_hex_of_another_length_are_refused(value):
    """Any word of 3 to 30 letters was a colour (a typo such as 'gren' was stored as one, which
    CODAP shows as text), and so were 5 and 7 hex digits, which no colour has."""
    with pytest.raises(ValueProblem, match="expected a color"):
        coerce_value(COLOR, value)


@pytest.mark.parametrize("value", [" navy ", "red ", "rgb(1%, 2, 3%)", "rgb(1, 2)", "rgb(a, b, c)", "rgb(1, 2, 3,)",
                                   "rgb(1.,2,3)", "rgb(1, 2 3)", "rgb(\u0661,2,3)", "hsl(120, 50, 50)",
                                   "hsl(120px, 50%, 50%)", "h\u017fl(1, 2%, 3%)", "rgb()", "\x1c#fff", "rgb(1,2,3) x"])
def test_what_codaps_colour_parsers_do_not_read_is_refused(value):
    """colord 2.9 as CODAP uses it (``v3/src/utilities/color-utils.ts``): a colour name is read
    untrimmed by the names plugin (``plugins/names.ts``), the other forms after JavaScript's
    ``trim`` (``parse.ts``) by ``colorModels/rgbString.ts`` (three numbers, all percentages or
    none: ``match[2] !== match[4]`` is refused) and ``colorModels/hslString.ts`` (saturation and
    lightness in %); ``\\d`` and ``/i`` are ASCII there. The contents of ``rgb()`` and ``hsl()``
    were not checked, and a name with spaces around it was taken."""
    with pytest.raises(ValueProblem, match="expected a color"):
        coerce_value(COLOR, value)


def test_a_long_run_of_digits_or_spaces_is_read_in_linear_time():
    """colord's number pattern ``\\d*\\.?\\d+`` splits a run of digits many ways; written
    unambiguously, a 200,000-digit refusal is as quick as a short one (a bound, not a timing)."""
    import time

    started = time.monotonic()
    with pytest.raises(ValueProblem):
        coerce_value(COLOR, "rgb(" + "1" * 200_000 + " x")
    assert coerce_value(COLOR, "rgb(1," + " " * 200_000 + "2, 3)").startswith("rgb(")
    assert time.monotonic() - started < 5


def test_a_create_refuses_a_word_that_names_no_colour_on_every_path(tmp_path):
    pa = pytest.importorskip("pyarrow")
    with local_client(tmp_path / "store", shards=1) as client:
        client.create_data_context("Paint", [{"name": "pots", "attrs": [{"name": "hue", "type": "color"}]}])
        for rows in ([{"hue": "red"}, {"hue": "gren"}], pa.Table.from_pylist([{"hue": "red"}, {"hue": "gren"}])):
            refused = client.create_items("Paint", "pots", rows)
            assert [(e.index, e.field, e.code) for e in refused.errors] == [(1, "hue", "INVALID_VALUE")]
        assert client.get_items("Paint") == []
