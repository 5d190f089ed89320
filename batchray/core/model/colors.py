"""Colour text: what a ``color`` attribute takes, :func:`is_color`.

CODAP shows a value of a colour attribute as a colour when ``parseColor(value, {colorNames:
true})`` (``v3/src/utilities/color-utils.ts``, on colord 2.9) reads one:

* a CSS colour name (CSS Color 4's named colours and ``transparent``, any case), read by
  colord's names plugin (``plugins/names.ts``) from the text exactly as given: ``" navy "`` is
  text, not a colour;
* otherwise what colord's own parsers read from the text with its surrounding space trimmed
  (``parse.ts``: ``input.trim()``): a hex colour of 3, 4, 6 or 8 digits (``colorModels/hex.ts``),
  an ``rgb()``/``rgba()`` function of three numbers, all percentages or none, and an optional
  alpha, comma- or space-separated (``colorModels/rgbString.ts``), or an ``hsl()``/``hsla()``
  function of a hue (``deg``, ``rad``, ``grad`` or ``turn``, or none), two percentages and an
  optional alpha (``colorModels/hslString.ts``). Numbers out of range are clamped there, so
  ``rgb(300, 0, 0)`` is a colour.

Any other text is shown as text, so batchray refuses it for a colour attribute; the value is
stored as given.
"""
from __future__ import annotations

import re

CSS_COLOR_NAMES = frozenset("""
aliceblue antiquewhite aqua aquamarine azure beige bisque black blanchedalmond blue blueviolet
brown burlywood cadetblue chartreuse chocolate coral cornflowerblue cornsilk crimson cyan
darkblue darkcyan darkgoldenrod darkgray darkgreen darkgrey darkkhaki darkmagenta darkolivegreen
darkorange darkorchid darkred darksalmon darkseagreen darkslateblue darkslategray darkslategrey
darkturquoise darkviolet deeppink deepskyblue dimgray dimgrey dodgerblue firebrick floralwhite
forestgreen fuchsia gainsboro ghostwhite gold goldenrod gray green greenyellow grey honeydew
hotpink indianred indigo ivory khaki lavender lavenderblush lawngreen lemonchiffon lightblue
lightcoral lightcyan lightgoldenrodyellow lightgray lightgreen lightgrey lightpink lightsalmon
lightseagreen lightskyblue lightslategray lightslategrey lightsteelblue lightyellow lime
limegreen linen magenta maroon mediumaquamarine mediumblue mediumorchid mediumpurple
mediumseagreen mediumslateblue mediumspringgreen mediumturquoise mediumvioletred midnightblue
mintcream mistyrose moccasin navajowhite navy oldlace olive olivedrab orange orangered orchid
palegoldenrod palegreen paleturquoise palevioletred papayawhip peachpuff peru pink plum
powderblue purple rebeccapurple red rosybrown royalblue saddlebrown salmon sandybrown seagreen
seashell sienna silver skyblue slateblue slategray slategrey snow springgreen steelblue tan teal
thistle tomato turquoise violet wheat white whitesmoke yellow yellowgreen transparent
""".split())
"""CSS Color 4's 148 named colours and ``transparent``, as colord's names plugin reads them."""

_JS_SPACE = ("\t\n\v\f\r \u00a0\u1680" + "".join(map(chr, range(0x2000, 0x200B)))
             + "\u2028\u2029\u202f\u205f\u3000\ufeff")
"""What JavaScript's ``String.prototype.trim`` and a regular expression's ``\\s`` take as space
(ECMAScript's WhiteSpace and LineTerminator; Python's own ``\\s`` and ``strip`` differ)."""
# re.ASCII below: case folds ASCII letters only, as JavaScript's /i does (Python's would match 'ſ' to 's')
_S = f"[{_JS_SPACE}]"
_NUMBER = r"([+-]?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+))"
"""colord's ``[+-]?\\d*\\.?\\d+`` (JavaScript's ``\\d`` is ASCII digits only), written so that
no text splits it two ways: the same texts without time quadratic in a long run of digits."""
_ALPHA = rf"{_NUMBER}(%)?{_S}*"
_RGB_COMMAS = re.compile(rf"rgba?\({_S}*{_NUMBER}(%)?{_S}*,{_S}*{_NUMBER}(%)?{_S}*,{_S}*{_NUMBER}(%)?{_S}*"
                         rf"(?:,{_S}*{_ALPHA})?\)", re.IGNORECASE | re.ASCII)
_RGB_SPACES = re.compile(rf"rgba?\({_S}*{_NUMBER}(%)?{_S}+{_NUMBER}(%)?{_S}+{_NUMBER}(%)?{_S}*"
                         rf"(?:/{_S}*{_ALPHA})?\)", re.IGNORECASE | re.ASCII)
_HUE = rf"{_NUMBER}(?:deg|rad|grad|turn)?"
_HSL_COMMAS = re.compile(rf"hsla?\({_S}*{_HUE}{_S}*,{_S}*{_NUMBER}%{_S}*,{_S}*{_NUMBER}%{_S}*"
                         rf"(?:,{_S}*{_ALPHA})?\)", re.IGNORECASE | re.ASCII)
_HSL_SPACES = re.compile(rf"hsla?\({_S}*{_HUE}{_S}+{_NUMBER}%{_S}+{_NUMBER}%{_S}*"
                         rf"(?:/{_S}*{_ALPHA})?\)", re.IGNORECASE | re.ASCII)
_HEX = re.compile(r"#(?:[0-9a-f]{3,4}|[0-9a-f]{6}|[0-9a-f]{8})", re.IGNORECASE | re.ASCII)


def is_color(text: str) -> bool:
    """Whether ``text`` is a colour CODAP shows (see the module)."""
    if text.lower() in CSS_COLOR_NAMES:
        return True
    text = text.strip(_JS_SPACE)
    if _HEX.fullmatch(text) or _HSL_COMMAS.fullmatch(text) or _HSL_SPACES.fullmatch(text):
        return True
    rgb = _RGB_COMMAS.fullmatch(text) or _RGB_SPACES.fullmatch(text)
    return rgb is not None and rgb.group(2) == rgb.group(4) == rgb.group(6)  # numbers and percentages not mixed


__all__ = ["CSS_COLOR_NAMES", "is_color"]
