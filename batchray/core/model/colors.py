"""Colour text: what a ``color`` attribute takes, :func:`is_color`.

CODAP shows a value of a colour attribute as a colour when ``parseColor(value, {colorNames:
true})`` (``v3/src/utilities/color-utils.ts``, on the colord library) reads one: a CSS colour
name (CSS Color 4's named colours, any case, and ``transparent``), a hex colour of 3, 4, 6 or 8
digits, or an ``rgb()``/``rgba()``/``hsl()``/``hsla()`` function. Any other text is shown as
text, so batchray refuses it for a colour attribute; the value is stored as given (surrounding
space allowed).
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

_COLOR_TEXT = re.compile(r"#(?:[0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})|(?:rgb|hsl)a?\([^()]{1,60}\)")


def is_color(text: str) -> bool:
    """Whether ``text`` (surrounding space aside) is a colour CODAP shows (see the module)."""
    text = text.strip()
    return text.lower() in CSS_COLOR_NAMES or _COLOR_TEXT.fullmatch(text) is not None


__all__ = ["CSS_COLOR_NAMES", "is_color"]
