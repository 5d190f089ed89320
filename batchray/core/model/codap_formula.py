"""``caseFormulaSearch[...]``: CODAP's formula language, on batchray's expression engine.

CODAP (``v3/src/data-interactive/resource-parser-utils.ts``, ``evaluateCaseFormula``)
evaluates the formula once per case of the collection, with that case's values in scope, and
keeps the cases for which it is truthy. The subset batchray reads is
:mod:`batchray.core.model.expressions`' language with CODAP's spellings mapped onto it: ``=``
compares for equality as in CODAP's formulas (so does ``==``), ``≠ ≤ ≥`` are ``!= <= >=``,
``and``/``or``/``not``, arithmetic, and the common functions (``abs round floor ceil sqrt min max
len upper lower trim concat if coalesce``...). Names are the attributes of the collection and of
its parents; a case reads them from its first item (all its items agree on them).

A formula that does not compile fails the request (CODAP: the error is the answer). A case for
which the formula cannot be evaluated (an empty value where a number is needed, say) does not
match: CODAP's formula functions give an empty result there rather than stopping the search.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from batchray.core.model.expressions import compile_expression
from batchray.core.model.expressions.lexer import NUMBER_LITERAL_RE
from batchray.errors import ExpressionError, ValidationError

_SPELLINGS = {"≠": "!=", "≤": "<=", "≥": ">="}


def codap_formula_to_expression(formula: str) -> str:
    """CODAP's formula text in batchray's expression syntax (outside quoted text and names).

    Inside quoted text a backslash escapes the next character (``"say \\"x=1\\""``), as the
    expression language reads it, so an escaped quote does not end the text."""
    out: list[str] = []
    quote = None
    escaped = False
    for i, ch in enumerate(formula):
        if quote is not None:
            out.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\" and quote != "`":
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch in "\"'`":
            quote = ch
            out.append(ch)
        elif ch in _SPELLINGS:
            out.append(_SPELLINGS[ch])
        elif ch == "=" and (i == 0 or formula[i - 1] not in "=!<>") and formula[i + 1:i + 2] != "=":
            out.append("==")
        else:
            out.append(ch)
    return "".join(out)


_SAFE_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""A name CODAP's formulas write bare: what its ``safeSymbolName`` leaves as it is
(``v3/src/models/formula/utils/name-mapping-utils.ts``); any other is written in backticks."""


def renamed_in_formula(formula: str, old: str, new: str) -> str:
    """``formula`` (CODAP's display form) with each reference to attribute ``old`` naming
    ``new`` instead, the rest of the text as it was, as CODAP rewrites a formula's display form
    when an attribute it reads is renamed (``v3/src/models/formula/formula-manager.ts``,
    ``updateFormulaDisplayExpression``; ``canonicalization-utils.ts``, ``canonicalToDisplay``).

    A reference is a symbol: a bare name, or one in backticks (where a backslash escapes a
    backtick or a backslash, as in CODAP); a name called as a function (``mean(x)``), quoted
    text and number literals are not. ``new`` is written bare when CODAP writes it so, else in
    backticks. Names in quoted text that CODAP's lookup functions resolve (``lookupByKey("ctx",
    "attr", ...)``) are not followed."""
    out: list[str] = []
    i, n = 0, len(formula)
    while i < n:
        c = formula[i]
        if c == "\\" and i + 1 < n:  # an escape pair outside a name is copied as it is, as CODAP does
            out.append(formula[i:i + 2])
            i += 2
        elif c in "\"'":
            j = i + 1
            while j < n and formula[j] != c:
                j += 2 if formula[j] == "\\" else 1
            out.append(formula[i:j + 1])
            i = j + 1
        elif c == "`":
            j, name = i + 1, []
            while j < n and formula[j] != "`":
                if formula[j] == "\\" and j + 1 < n:
                    j += 1
                name.append(formula[j])
                j += 1
            i = _symbol(out, formula, i, min(j + 1, n), "".join(name), old, new)
        elif c.isdigit() or (c == "." and formula[i + 1:i + 2].isdigit()):
            m = NUMBER_LITERAL_RE.match(formula, i)
            out.append(m.group())
            i = m.end()
        elif c.isalpha() or c in "_$":
            j = i + 1
            while j < n and (formula[j].isalnum() or formula[j] in "_$"):
                j += 1
            i = _symbol(out, formula, i, j, formula[i:j], old, new)
        else:
            out.append(c)
            i += 1
    return "".join(out)


_CALLED = re.compile(r"\s*\(")
"""What follows a function's name."""


def _symbol(out: list[str], formula: str, start: int, end: int, name: str, old: str, new: str) -> int:
    """Write the name at ``formula[start:end]`` to ``out``, as ``new`` when it is a symbol
    naming ``old`` (not a function's name: a ``(`` follows); returns ``end``."""
    called = _CALLED.match(formula, end) is not None
    if name != old or called:
        out.append(formula[start:end])
    elif _SAFE_SYMBOL.fullmatch(new):
        out.append(new)
    else:
        out.append("`" + new.replace("\\", "\\\\").replace("`", "\\`") + "`")
    return end


def case_formula_matches(formula: str, names: Sequence[str], cases: Sequence[dict[str, Any]],
                         values_by_item: Mapping[int, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The cases (``build_cases`` dicts, in order) for which ``formula`` is truthy."""
    if not isinstance(formula, str) or not formula.strip():
        raise ValidationError("caseFormulaSearch needs a formula", field="caseFormulaSearch")
    expression = compile_expression("=" + codap_formula_to_expression(formula.strip()))
    unknown = sorted(set(expression.attributes) - set(names))
    if unknown:
        raise ExpressionError(f"unknown attribute {unknown[0]!r} in the formula", attribute=unknown[0],
                              field="caseFormulaSearch")
    matched = []
    for case in cases:
        first = values_by_item[case["itemIds"][0]]
        try:
            result = expression.evaluate({n: first.get(n) for n in expression.attributes})
        except ExpressionError:
            continue
        if result not in (None, False, 0, "") and result != "false":
            matched.append(case)
    return matched


__all__ = ["case_formula_matches", "codap_formula_to_expression", "renamed_in_formula"]
