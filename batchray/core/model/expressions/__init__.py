"""The safe expression language behind ``=expr`` update values.

A value such as ``"=balance - 5"`` or ``"=round(price * 1.1, 2)"`` is an *expression*: it is
compiled once with :func:`compile_expression` and then evaluated per item over that item's
``values`` dict with :meth:`Expression.evaluate`::

    >>> expr = compile_expression("=round(price * 1.1, 2)")
    >>> sorted(expr.attributes)
    ['price']
    >>> expr.evaluate({"price": "10"})
    11.0

How it is parsed
----------------
User text is never handed to ``eval``, ``exec`` or ``compile``, and not to ``ast.parse``
either: a small hand-written tokenizer and Pratt (precedence-climbing) parser read it. That
choice, over walking a whitelist of Python ``ast`` nodes, is deliberate:

* the grammar is not Python's: ``&&``/``||``/``!``, ``^`` as power, backtick-quoted names and
  ``if(...)`` as a function would all need rewriting before ``ast`` could read them, and every
  rewrite shifts the column offsets that errors must report;
* the parser only knows the constructs listed below, so anything else (attribute access,
  subscripts, lambdas, comprehensions, keyword arguments, ...) is a syntax error at an exact
  0-based ``position`` in the text as given, leading ``=`` included;
* nesting is counted while parsing, so deeply nested input fails with
  :class:`~batchray.errors.ExpressionError` long before Python's own recursion limit.

The parse tree is then turned into a tree of closures (constant sub-expressions are folded at
compile time), so evaluation does no dispatch on node types.

Grammar, loosest binding first
------------------------------
=====================================  ==================================================
``a or b``, ``a || b``                 true if either is truthy (short-circuit)
``a and b``, ``a && b``                true if both are truthy (short-circuit)
``not a``, ``!a``                      negation; binds looser than comparisons (as in Python:
                                       ``not a == b`` is ``not (a == b)``)
``== != <> < <= > >=``                 comparisons; chains like ``0 <= x < 10`` mean
                                       ``0 <= x and x < 10``
``+ -``                                addition / subtraction (``+`` joins text, see below)
``* / // %``                           multiply, divide, floor-divide, modulo (Python's rules)
``-a``, ``+a``                         unary minus / plus
``a ** b``, ``a ^ b``                  power, right-associative, binds tighter than unary
                                       minus: ``-2 ** 2`` is ``-4``
=====================================  ==================================================

Operands: numbers (``12``, ``1.5``, ``.5``, ``1e3``), strings in single or double quotes (escapes
``\\n \\t \\r \\\\ \\' \\"``), ``true``/``false`` (also ``True``/``False``/``TRUE``/``FALSE``),
``null`` (also ``NULL``/``None``), parentheses, attribute names (``balance``, ``prénom``; any
other name goes in backticks, e.g. `weight.w` or `unit price`, with a backtick inside written
twice) and function calls. Function names are case-insensitive:

``abs(x)`` ``round(x, n=0)`` ``floor(x)`` ``ceil(x)`` ``sqrt(x)`` ``min(x, ...)`` ``max(x, ...)``
``len(s)`` ``upper(s)`` ``lower(s)`` ``trim(s)`` ``concat(s, ...)`` ``str(x)`` ``number(x)``
``int(x)`` ``coalesce(x, ...)`` ``if(cond, then, else=null)``

Values and types
----------------
* Numbers are Python ``int`` and ``float``. Strings that spell a number (``"12"``, ``" 3.5 "``,
  ``"-1e3"``) count as numbers wherever a number is needed, as in CODAP; ``true``/``false``
  count as 1/0. ``+`` adds when both sides are numbers (or numeric strings) and otherwise joins
  text when one side is non-numeric, non-empty text (``first + " " + last``).
* ``/`` of two integers that divide exactly stays an integer (``6 / 3`` is ``2``); otherwise it
  is a float. ``round(x)`` rounds half away from zero and returns an integer; ``round(x, n)``
  rounds the decimal digits as written (``round(1.005, 2)`` is ``1.01``).
* Results must stay within float range (about ``1.8e308``); ``**`` is checked *before* it is
  computed, so ``9 ** 9 ** 9`` is refused at once instead of eating memory.
* A missing attribute (key absent) reads as ``null``. ``null`` (and empty text, CODAP's
  missing value) may be tested with ``==``/``!=``, ``if``, ``and``/``or``/``not`` and
  ``coalesce``; any operator or function that needs a value raises
  :class:`~batchray.errors.ExpressionError` naming the attribute. ``coalesce`` skips ``null``
  and ``""``.
* Truthiness: ``null``, ``false``, ``0`` and text that is empty, ``"false"`` or a numeric
  string equal to 0 are false; everything else is true. Logical operators return booleans.
* Text equality and ordering are case-sensitive; ordering text against a number is an error.

Errors
------
Every failure, at compile time or at evaluation, is an
:class:`~batchray.errors.ExpressionError` whose ``details`` carry ``position`` (0-based offset
into the text as given), ``expression`` and, where it applies, ``attribute`` and ``function``.

Modules
-------
* :mod:`~batchray.core.model.expressions.values`: limits, coercion, truthiness, error helpers;
* :mod:`~batchray.core.model.expressions.lexer`: text -> tokens;
* :mod:`~batchray.core.model.expressions.parser`: tokens -> parse tree (Pratt parser);
* :mod:`~batchray.core.model.expressions.functions`: the operators and built-in functions;
* :mod:`~batchray.core.model.expressions.compiler`: parse tree -> tree of closures;
* :mod:`~batchray.core.model.expressions.expression`: :class:`Expression`,
  :func:`compile_expression`, :func:`is_expression`.
"""
from batchray.core.model.expressions.expression import Expression, compile_expression, is_expression
from batchray.core.model.expressions.values import MAX_DEPTH, MAX_LENGTH, MAX_MAGNITUDE, MAX_TEXT_LENGTH

__all__ = [
    "Expression",
    "compile_expression",
    "is_expression",
    "MAX_LENGTH",
    "MAX_DEPTH",
    "MAX_MAGNITUDE",
    "MAX_TEXT_LENGTH",
]
