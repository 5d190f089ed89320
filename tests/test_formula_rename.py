"""Formulas follow a renamed attribute, as in CODAP.

CODAP keeps a formula in a canonical form that names attributes by id, and rewrites its
display form when an attribute it reads is renamed (``v3/src/models/formula/formula-manager.ts``,
``updateFormulaDisplayExpression``, through ``canonicalToDisplay`` in
``v3/src/models/formula/utils/canonicalization-utils.ts``): symbols take the new name, written in
backticks when CODAP's ``safeSymbolName`` would change it (``name-mapping-utils.ts``: a leading
digit, or a character outside ``[a-zA-Z0-9_]``), and function names, quoted text and the rest
of the text are kept as written. batchray stores the display form, so a rename rewrites it the
same way; before, a renamed attribute left formulas naming an attribute that no longer exists
(an exported document's formulas then failed in CODAP).
"""
from __future__ import annotations

import json

import pytest

from local_runtime import local_client
from batchray.core.model.codap_formula import renamed_in_formula


@pytest.mark.parametrize("formula, new, expected", [
    ("Mass * 2", "Weight", "Weight * 2"),
    ("Mass*2+Mass", "Weight", "Weight*2+Weight"),
    ("`Mass` / 1000", "Weight", "Weight / 1000"),
    ("Mass / 1000", "Mass in kg", "`Mass in kg` / 1000"),
    ("Mass / 1000", "2nd", "`2nd` / 1000"),
    ("Mass / 1000", "a`b\\c", "`a\\`b\\\\c` / 1000"),
    ("mean(Mass) - Mass", "W", "mean(W) - W"),
    ("Massive + Mass", "W", "Massive + W"),
    ('"Mass" + Mass', "W", '"Mass" + W'),
    ("'it''s Mass' + Mass", "W", "'it''s Mass' + W"),
    ('"say \\"Mass\\"" + Mass', "W", '"say \\"Mass\\"" + W'),
    ("2e3 * Mass", "W", "2e3 * W"),
    ("2Mass", "W", "2W"),
    ("if(Mass > 3, 'big', 'small')", "W", "if(W > 3, 'big', 'small')"),
    ("Mass ≥ 5 and Mass ≠ 7", "W", "W ≥ 5 and W ≠ 7"),
])
def test_a_symbol_takes_the_new_name_and_nothing_else_changes(formula, new, expected):
    assert renamed_in_formula(formula, "Mass", new) == expected


def test_a_function_named_as_the_attribute_is_not_renamed():
    # canonicalToDisplay: 'mean(mean) + "mean"' is a valid formula with an attribute called mean
    assert renamed_in_formula('mean(mean) + "mean"', "mean", "avg") == 'mean(avg) + "mean"'


def test_a_number_literal_is_read_whole():
    assert renamed_in_formula("1.e5 + e5 * 2E3", "e5", "x") == "1.e5 + x * 2E3"


def test_a_name_in_backticks_with_escapes_is_read_as_codap_reads_it():
    assert renamed_in_formula("`a\\`b` + 1", "a`b", "c") == "c + 1"
    assert renamed_in_formula("`Mass in kg` * 1000", "Mass in kg", "grams") == "grams * 1000"


CONTEXT = [{"name": "Animals", "attrs": [
    {"name": "Mass", "type": "numeric"},
    {"name": "Grams", "type": "numeric", "formula": "Mass * 1000"},
    {"name": "Label", "formula": 'concat("Mass: ", Mass)'}]},
    {"name": "Parts", "parent": "Animals", "attrs": [{"name": "Share", "formula": "Mass / mean(Mass)"}]}]


@pytest.fixture
def client(tmp_path):
    with local_client(tmp_path / "store") as client:
        assert client.create_data_context("Zoo", CONTEXT).success
        yield client


def _formulas(client) -> dict[str, str]:
    ctx = client.catalog.context("Zoo")[1]
    return {name: attr.formula for name, attr in ctx.attributes().items() if attr.formula}


def test_renaming_an_attribute_rewrites_the_context_s_formulas(client):
    result = client.schema_operations("Zoo", [{"action": "update", "target": "attribute", "attribute": "Mass",
                                               "spec": {"name": "Mass (kg)"}}])
    assert result.success, result.error
    assert _formulas(client) == {"Grams": "`Mass (kg)` * 1000", "Label": 'concat("Mass: ", `Mass (kg)`)',
                                 "Share": "`Mass (kg)` / mean(`Mass (kg)`)"}


def test_renames_in_one_request_apply_in_order(client):
    result = client.schema_operations("Zoo", [
        {"action": "update", "target": "attribute", "attribute": "Mass", "spec": {"name": "M"}},
        {"action": "update", "target": "attribute", "attribute": "Grams", "spec": {"name": "Mass"}},
        {"action": "create", "target": "attribute", "collection": "Animals", "attribute": "Tons",
         "spec": {"name": "Tons", "formula": "Mass / 1000000"}}])
    assert result.success, result.error
    # Grams now reads M; Tons, made after Grams took the name Mass, reads that attribute
    assert _formulas(client) == {"Mass": "M * 1000", "Label": 'concat("Mass: ", M)', "Share": "M / mean(M)",
                                 "Tons": "Mass / 1000000"}


def test_a_rename_through_the_plugin_api_rewrites_formulas_and_the_exported_document(client, tmp_path):
    answer = client.codap({"action": "update", "resource": "dataContext[Zoo].collection[Animals].attribute[Mass]",
                           "values": {"name": "Weight"}})
    assert answer["success"], answer
    got = client.codap({"action": "get", "resource": "dataContext[Zoo].collection[Animals].attribute[Grams]"})
    assert got["values"]["formula"] == "Weight * 1000"
    out = tmp_path / "zoo.codap"
    assert client.export_file("Zoo", out).success
    document = json.loads(out.read_text())
    formulas = {a["name"]: a.get("formula") for ctx in document["contexts"] for c in ctx["collections"]
                for a in c["attrs"] if a.get("formula")}
    assert formulas == {"Grams": "Weight * 1000", "Label": 'concat("Mass: ", Weight)', "Share": "Weight / mean(Weight)"}
