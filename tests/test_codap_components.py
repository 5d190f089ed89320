"""Components as CODAP v3 stores, opens and serves them: the v2 storage a document export writes
for each component type (checked against the importer each type registers, and against
``codap_rules``), and the plugin API's ``component`` resource (``component-handler.ts`` and the
per-type component handlers). Each test names the CODAP source file (concord-consortium/codap)
that defines the behaviour.
"""
from __future__ import annotations

import json

from codap_rules import problems
from local_runtime import local_client

ROWS = [{"name": "Rows", "attrs": [{"name": "size", "type": "numeric"}, {"name": "kind"}]}]


def _client(tmp_path):
    client = local_client(tmp_path / "store")
    client.create_data_context("Data", ROWS)
    client.create_items("Data", "Rows", [{"size": 1, "kind": "a"}, {"size": 3, "kind": "b"}])
    return client


def _export(client, tmp_path) -> dict:
    out = tmp_path / "doc.codap"
    client.export_file("Data", out)
    return json.loads(out.read_text(encoding="utf-8"))


def _storage(doc: dict, v2_type: str) -> dict:
    return next(c["componentStorage"] for c in doc["components"] if c["type"] == v2_type)


def test_web_views_are_written_with_what_codaps_importers_read(tmp_path):
    """``v3/src/components/web-view/web-view-registration.ts``: a web view's ``URL`` and a game's
    ``currentGameUrl`` go through ``processWebViewUrl`` (``web-view-utils.ts``: ``url.replace``)
    and an image's ``URL`` through ``URL.includes``, so one without it made the whole document
    fail to open; CODAP's exporter writes ``""`` for none. A game's URL is ``currentGameUrl`` and
    its name ``currentGameName`` (the game's URL was not written at all, so a game made through
    batchray opened blank); a guide's pages are ``items`` with ``currentItemIndex`` (not
    written either)."""
    with _client(tmp_path) as client:
        made = client.component_operations([{"action": "create", "component": c} for c in (
            {"type": "webView", "name": "page"},
            {"type": "imageComponentView", "name": "picture"},
            {"type": "game", "name": "sampler", "properties": {
                "URL": "https://example.org/sampler", "gameName": "Sampler", "dataContext": "Data"}},
            {"type": "guideView", "name": "guide", "properties": {
                "items": [{"itemTitle": "One", "url": "https://example.org/1"},
                          {"itemTitle": "Two", "url": "https://example.org/2"}], "currentItemIndex": 1}},
        )])
        assert made.success, made.errors
        doc = _export(client, tmp_path)
        assert problems(doc) == []
        assert _storage(doc, "DG.WebView")["URL"] == ""
        assert _storage(doc, "DG.ImageComponentView")["URL"] == ""
        game = _storage(doc, "DG.GameView")
        assert (game["currentGameUrl"], game["currentGameName"]) == ("https://example.org/sampler", "Sampler")
        guide = _storage(doc, "DG.GuideView")
        assert guide["items"] == [{"itemTitle": "One", "url": "https://example.org/1"},
                                  {"itemTitle": "Two", "url": "https://example.org/2"}]
        assert guide["currentItemIndex"] == 1
        with local_client(tmp_path / "again") as again:
            assert again.import_file(None, None, tmp_path / "doc.codap").success
            props = {c.type: c.properties for c in again.catalog.components().values()}
    assert (props["game"]["URL"], props["game"]["gameName"]) == ("https://example.org/sampler", "Sampler")
    assert [i["itemTitle"] for i in props["guideView"]["items"]] == ["One", "Two"]


def test_the_rules_checker_finds_web_views_codap_cannot_open():
    """The checker fails on what batchray used to write: a web view, image or game without its
    URL (``web-view-registration.ts``)."""
    for v2_type, key in (("DG.WebView", "URL"), ("DG.ImageComponentView", "URL"),
                         ("DG.GameView", "currentGameUrl")):
        doc = {"appName": "DG", "appVersion": "2.0", "appBuildNum": "0", "contexts": [],
               "components": [{"type": v2_type, "layout": {}, "componentStorage": {"name": "x"}}]}
        assert any(key in p for p in problems(doc)), v2_type
        doc["components"][0]["componentStorage"][key] = "https://example.org"
        assert problems(doc) == []


def _codap(client, action, resource, values=None):
    request = {"action": action, "resource": resource}
    if values is not None:
        request["values"] = values
    return client.codap(request)


def test_a_case_table_or_card_is_created_only_for_a_data_context(tmp_path):
    """``v3/src/components/case-tile-common/case-tile-component-handler.ts`` ``create``: without
    ``dataContext``, or naming none, CODAP refuses with ``Create <type>: dataContext required``
    (batchray made a table CODAP skips when it opens the document, and a card the export
    drops); the data context may be named by its id."""
    with _client(tmp_path) as client:
        for kind in ("caseTable", "caseCard"):
            for values in ({"type": kind}, {"type": kind, "dataContext": "Nope"}):
                assert _codap(client, "create", "component", values) == {
                    "success": False, "values": {"error": f"Create {kind}: dataContext required"}}
        assert client.catalog.components() == {}
        context_id = client.catalog.context("Data")[0]
        made = _codap(client, "create", "component", {"type": "caseCard", "dataContext": context_id})
        assert made["success"], made
        assert client.catalog.components()[made["values"]["name"]].properties["dataContext"] == "Data"


def test_get_component_answers_the_types_values_at_the_top_level(tmp_path):
    """``v3/src/data-interactive/handlers/component-handler.ts`` ``get``: the general values
    spread with the type handler's (``graph-component-handler.ts``: ``dataContext``,
    ``xAttributeName``...), not nested under ``properties``."""
    with _client(tmp_path) as client:
        assert _codap(client, "create", "component", {
            "type": "graph", "name": "g", "title": "Sizes", "dataContext": "Data", "xAttributeName": "size",
            "dimensions": {"width": 300, "height": 200}})["success"]
        values = _codap(client, "get", "component[g]")["values"]
    assert values == {"id": "g", "name": "g", "title": "Sizes", "type": "graph", "dataContext": "Data",
                      "xAttributeName": "size", "dimensions": {"width": 300, "height": 200}}


def test_update_component_keeps_its_type_and_merges_dimensions_and_position(tmp_path):
    """``v3/src/data-interactive/handlers/component-handler.ts`` ``update``: ``type`` is not
    updated (batchray turned a graph into whatever type was sent), ``dimensions`` and
    ``position`` are merged over the current ones (a width alone lost the height) and a
    string position is ignored."""
    with _client(tmp_path) as client:
        assert _codap(client, "create", "component", {
            "type": "graph", "name": "g", "dataContext": "Data", "dimensions": {"width": 300, "height": 200},
            "position": {"left": 10, "top": 20}})["success"]
        assert _codap(client, "update", "component[g]", {
            "type": "text", "dimensions": {"width": 400}, "position": {"top": 50}}) == {"success": True}
        assert _codap(client, "update", "component[g]", {"position": "center"}) == {"success": True}
        graph = client.catalog.components()["g"]
    assert graph.type == "graph"
    assert graph.dimensions == {"width": 400, "height": 200}
    assert graph.position == {"left": 10, "top": 50}


def test_a_rich_text_value_is_written_as_json_text(tmp_path):
    """``v3/src/components/text/text-registration.ts``: the plugin API's ``text`` may be a Slate
    value (``V2Text``), and CODAP's exporter writes it as ``JSON.stringify(value)``, the string
    ``ICodapV2TextStorage.text`` is; batchray wrote the object itself."""
    value = {"document": {"children": [{"type": "paragraph", "children": [{"text": "About the data"}]}]}}
    with _client(tmp_path) as client:
        assert _codap(client, "create", "component", {"type": "text", "name": "notes", "text": value})["success"]
        doc = _export(client, tmp_path)
    assert problems(doc) == []
    assert json.loads(_storage(doc, "DG.TextView")["text"]) == value


def test_a_sliders_value_set_by_an_update_is_its_global_values(tmp_path):
    # CODAP's slider shows the value of the global its _links_.model names
    # (v3/src/components/slider/slider-registration.ts): an update of a slider's value changed
    # the component's properties only, and the store and the document kept the global's old value
    client = _client(tmp_path)
    slider = {"type": "slider", "name": "s", "properties": {"globalValueName": "rate", "value": 3}}
    assert client.component_operations([{"action": "create", "component": slider}]).success
    assert client.component_operations([{"action": "update", "component": {"name": "s", "properties": {"value": 7}}}]).success
    assert client.catalog.globals()["rate"]["value"] == 7
    assert client.component_operations([{"action": "update", "component": {"name": "s", "title": "Rate"}}]).success
    assert client.catalog.globals()["rate"]["value"] == 7  # an update without a value keeps it
    assert [g["value"] for g in _export(client, tmp_path)["globalValues"] if g["name"] == "rate"] == [7]
    # a slider made, with a value, for a global that exists (its slider deleted) sets it too
    other = {"type": "slider", "name": "s2", "properties": {"globalValueName": "rate", "value": 5}}
    assert client.component_operations([{"action": "delete", "name": "s"},
                                        {"action": "create", "component": other}]).success
    assert client.catalog.globals()["rate"]["value"] == 5


def test_a_global_value_has_one_slider_as_in_codap(tmp_path):
    # slider-component-handler.ts refuses a second slider for a global value (noMultipleSliders),
    # made or moved there; batchray made it, and the two then shared one value
    client = _client(tmp_path)
    first = {"type": "slider", "name": "s", "properties": {"globalValueName": "rate", "value": 3}}
    second = {"type": "slider", "name": "t", "properties": {"globalValueName": "speed", "value": 1}}
    assert client.component_operations([{"action": "create", "component": first},
                                        {"action": "create", "component": second}]).success
    for op in ({"action": "create", "component": {**second, "name": "u", "properties": {"globalValueName": "rate"}}},
               {"action": "update", "component": {"name": "t", "properties": {"globalValueName": "rate"}}}):
        refused = client.tool("batch_component_operations", {"operations": [op]})
        assert refused["success"] is False and refused["error"]["code"] == "SCHEMA", refused
        assert refused["error"]["details"]["field"] == "properties.globalValueName"
    components = client.catalog.components()
    assert sorted(components) == ["s", "t"] and components["t"].properties["globalValueName"] == "speed"
    assert {name: g["value"] for name, g in client.catalog.globals().items()} == {"rate": 3, "speed": 1}
    # a slider keeps its global through an update, and a global whose slider is deleted takes another
    assert client.component_operations([{"action": "update", "component": {"name": "s", "title": "Rate"}}]).success
    assert client.component_operations([{"action": "delete", "name": "s"}, {"action": "create", "component": {
        **second, "name": "u", "properties": {"globalValueName": "rate"}}}]).success
