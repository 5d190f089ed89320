"""The query language: CODAP's search grammar, evaluated in Python or compiled to SQL.

A query selects items by their attribute values, as CODAP's ``itemSearch[Diet==plants]``
does, extended with ``&&``, ``||``, ``!`` and parentheses (CODAP's exact grammar and
JavaScript comparisons, for CODAP plugin API requests, are :mod:`batchray.core.model.codap_search`)::

    Diet == plants && (weight.w > 10 || `Life span` >= 20) && !(Habitat == "land")

Grammar (EBNF; whitespace may appear between any two symbols)::

    query       = "*" | or_expr ;                      (* "*": every item, as in CODAP *)
    or_expr     = and_expr , { "||" , and_expr } ;
    and_expr    = unary , { "&&" , unary } ;
    unary       = { "!" } , primary ;                 (* a "!" not followed by "=" *)
    primary     = "(" , or_expr , ")" | comparison ;
    comparison  = attribute , operator , [ value ]     (* no value: the empty value *)
                | literal , operator , identifier ;  (* "5 < age" is "age > 5" *)
    literal     = number | "true" | "false" ;         (* bare, as a bare word reads *)
    operator    = "==" | "!=" | "<=" | ">=" | "<" | ">" ;
    attribute   = identifier | quoted ;
    identifier  = name_char , { name_char } ;         (* letters, digits, "_" and "." *)
    value       = quoted | bare_word ;
    quoted      = "`" , { char | escape } , "`"       (* no unescaped closing quote *)
                | '"' , { char | escape } , '"'
                | "'" , { char | escape } , "'" ;
    escape      = "\\" , ( "n" | "t" | "r" | "b" | "f" | "u" , 4 * hex_digit | char ) ;
    bare_word   = bare_char , { bare_char } ;         (* trimmed; see below *)
    bare_char   = ? any character except "(", ")", "<", ">", "=", and the starts of
                    "&&", "||" and "!=" ? ;

As in CODAP's searches (``v3/src/data-interactive/resource-parser-utils.ts``), an empty right
side means the empty value (``age ==`` is ``age == ""``, null), and a bare number or boolean may
stand on the left of an unquoted attribute name (``5 < age``, ``-1.5 <= temp``); an attribute named like a number
is then written quoted on the left (`` `5` < age ``). Any of the three quotes may quote a name or a value. A trimmed bare word is read as:
``true`` / ``false`` (any case) -> boolean; ``null`` (any case) -> null;
``[+-]?(digits[.digits]|.digits)([eE][+-]?digits)?`` -> a number (an int when it has no
``.`` or exponent and fits in 64 bits, else a float); anything else -> the string itself,
so ``Diet == plants and seeds`` compares with ``"plants and seeds"``. A quoted value is
always a string, and ``""`` means null. An unknown escape ``\\c`` stands for ``c``.
Chains of ``&&`` / ``||`` are built as balanced trees (the operators are associative), so
long chains stay shallow. Queries are limited to :data:`MAX_LENGTH` characters and
:data:`MAX_DEPTH` levels of parentheses and ``!``; NUL characters and unpaired surrogates
are refused.

Semantics (shared by :func:`evaluate` and :func:`to_sql`). Every value, stored or written
in the query, falls into one class:

* null: missing, ``None`` or ``""``;
* boolean: ``True`` / ``False``, or the strings ``"true"`` / ``"false"`` in any ASCII case
  (CODAP keeps booleans as such strings);
* number: an int or float, or a string spelled as a JSON number (``-?(0|[1-9]d*)(.d+)?
  ([eE][+-]?d+)?``, no surrounding spaces) such as ``"12"`` or ``"-1.5e3"``: as in CODAP,
  a numeric string compares as a number;
* string: any other string (arrays and objects count as their compact JSON text).

``==`` holds when both sides are in the same class and are equal (numbers numerically,
strings exactly and case-sensitively; null equals null). ``!=`` is exactly ``not ==``, so
a null value is unequal to every non-null literal. ``<``, ``<=``, ``>``, ``>=`` hold only
between two numbers or two strings (code-point order); any other pair - null or boolean
on either side, or a number against a string - is False.

:func:`to_sql` compiles the same semantics to a parameterised SQL expression for SQLite or
PostgreSQL (user text only ever travels as a parameter); its docstring lists the few
places where the database can disagree with :func:`evaluate`.

Modules: :mod:`~batchray.core.model.query.syntax` (the tree, limits, tree walks),
:mod:`~batchray.core.model.query.parser` (text -> tree), :mod:`~batchray.core.model.query.evaluation`
(value classes, Python evaluation) and :mod:`~batchray.core.model.query.sql` (SQL compilation).
"""
from batchray.core.model.query.evaluation import classify, evaluate
from batchray.core.model.query.parser import parse
from batchray.core.model.query.sql import (
    SQLITE_DEPTH_BUDGET,
    SQLITE_PARSER_BUDGET,
    json_path,
    postgresql_column,
    sqlite_column,
    to_sql,
)
from batchray.core.model.query.syntax import (MAX_DEPTH, MAX_LENGTH, OPERATORS, And, Comparison, Everything, Node, Not, Or,
                                              attributes)

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
    "OPERATORS",
    "SQLITE_DEPTH_BUDGET",
    "SQLITE_PARSER_BUDGET",
    "And",
    "Comparison",
    "Everything",
    "Node",
    "Not",
    "Or",
    "attributes",
    "classify",
    "evaluate",
    "json_path",
    "parse",
    "postgresql_column",
    "sqlite_column",
    "to_sql",
]
