"""Reading CODAP v2 documents (``.codap`` files) into the model of :mod:`batchray.io.codap.model`.

* :func:`read_document` reads a file (refusing one over ``max_bytes``, 256 MB by default);
  :func:`loads_document` parses bytes (UTF-8) or text, :func:`parse_document` an already
  decoded JSON object. Each returns a :class:`~batchray.io.codap.model.Document`.
* Before parsing, :func:`loads_document` pre-scans the text
  (:func:`~batchray.io.codap.structure.scan_structure`, no Python object per value) and refuses
  one nested deeper than ``max_depth`` (:data:`DEFAULT_MAX_DEPTH`, ``too_deep``) or whose parsed
  tree would take more than ``max_memory`` bytes (:data:`DEFAULT_MAX_MEMORY`, ``too_complex``):
  255 MB of empty objects would take some 7 GB parsed.
* Collections come out parent-first; cases become flat items as CODAP v3 builds them
  (``v3/src/v2/codap-v2-data-set-importer.ts``): each child-most case's values, in that
  collection's case order, merged with its ancestors'; a parent case without children is
  dropped, as CODAP drops it, and so is a case whose guid an earlier case has
  (``v2RemoveDuplicateCaseIDs``). Components' links are resolved to names
  (:func:`~batchray.io.codap.components.component_properties`).
* Names are taken as CODAP shows them: a context without a name is named by its title, else
  its collections' names joined by ``/`` (CODAP's ``displayTitle``), else ``DATA<guid>``; a
  collection or attribute without one by its title, else ``COLL<guid>``/``ATTR<guid>``; a name
  batchray's rule refuses (NUL, square brackets, over 200 characters) is cleaned by
  :func:`~batchray.io.codap.names.clean_name`, its spelling kept as the title.
* Problems CODAP itself tolerates (an unknown attribute type, a link to nothing, values for
  names that are not attributes, the cases and names above) are kept in ``Document.warnings``.

Errors
------
Anything that is not a valid CODAP v2 document raises :class:`~batchray.errors.DocumentError`
with ``details`` ``path`` (the file), ``reason`` (a stable code, below) and, where it applies,
``location`` (where in the JSON, e.g. ``contexts[0].collections[1].cases[4]``)::

    too_large, too_deep, too_complex, not_found, unreadable, encoding, invalid_json, not_an_object,
    codap_v3_document, not_codap_v2, invalid_header, missing_key, wrong_type, empty_name, duplicate_id,
    duplicate_name, dangling_collection_parent, collection_cycle, collection_branch,
    multiple_root_collections, missing_case_parent, dangling_case_parent,
    case_parent_wrong_collection, unknown_reference, not_serializable

(``unknown_reference`` and ``not_serializable`` are the writer's: :mod:`batchray.io.codap.writer`
raises the same errors for a model it cannot write.)

``not_codap_v2`` is what CODAP itself checks first: a v2 document's ``appName`` is ``"DG"``
(short for Data Games) or empty, and it must have ``contexts`` and ``components`` arrays.
``bogus-document.codap`` from CODAP's test suite says ``"appName": "Bogus"``, so CODAP refuses
it, and so does :func:`read_document`. ``invalid_header`` is CODAP's next check,
``validateV2Document`` (``v3/src/lib/cfm/resolve-document.ts``): appName ``"DG"`` with a
non-empty appVersion and appBuildNum, or all three empty; CODAP opens any other document as an
empty one, with no error.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from batchray.errors import DocumentError
from batchray.io.codap.components import COMPONENT_TYPES, component_properties
from batchray.io.codap.hierarchy import chain_order
from batchray.io.codap.names import MAX_NAME, clean_name, unique_name
from batchray.io.codap.structure import scan_structure
from batchray.io.codap.model import (
    ATTRIBUTE_TYPES,
    DEFAULT_MAX_BYTES,
    V2_APP_NAME,
    V2_TYPE_ALIASES,
    AttrSpec,
    CollectionSpec,
    ComponentSpec,
    ContextSpec,
    Document,
    collection_labels,
)
from batchray.io.codap.values import is_id, js_truthy, opt_str, type_name

_V2_ATTR_TYPES = {**{t: t for t in ATTRIBUTE_TYPES}, **V2_TYPE_ALIASES}
# very old documents store the type as the index of a v2 enumeration
_V2_ATTR_TYPE_INDEX = {0: None, 1: "numeric", 2: "categorical", 3: "date", 4: "boundary",
                       5: "color"}

_ATTR_KEYS = {"guid", "id", "name", "title", "type", "description", "unit", "precision", "formula",
              "hidden", "editable"}
_COLLECTION_KEYS = {"guid", "id", "name", "title", "parent", "attrs", "cases", "type", "labels"}
_CONTEXT_KEYS = {"guid", "id", "name", "title", "description", "collections", "document"}
_DOCUMENT_KEYS = {"guid", "id", "type", "name", "components", "contexts", "globalValues", "appName",
                  "idCount"}
_COMPONENT_KEYS = {"guid", "id", "type", "componentStorage", "layout"}
_LAYOUT_KEYS = {"width", "height", "left", "top", "x", "y"}


DEFAULT_MAX_DEPTH = 100
"""The deepest nesting of objects and arrays a document may have (CODAP's own are some 10 deep)."""
DEFAULT_MAX_MEMORY = 1 << 30
"""The most memory a document's parsed JSON may take, as estimated before parsing."""


def read_document(path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES,
                  max_depth: int = DEFAULT_MAX_DEPTH, max_memory: int = DEFAULT_MAX_MEMORY) -> Document:
    """Read the CODAP v2 document at ``path``; refuse files over ``max_bytes`` bytes, nested
    deeper than ``max_depth`` or taking more than ``max_memory`` bytes parsed."""
    p = Path(path)
    where = str(p)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise DocumentError(f"CODAP document {where!r} does not exist", path=where,
                            reason="not_found") from None
    except OSError as exc:
        raise DocumentError(f"cannot read CODAP document {where!r}: {exc.strerror or exc}",
                            path=where, reason="unreadable") from None
    _check_size(size, max_bytes, where)
    try:
        with open(p, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise DocumentError(f"cannot read CODAP document {where!r}: {exc.strerror or exc}",
                            path=where, reason="unreadable") from None
    _check_size(len(data), max_bytes, where)
    return loads_document(data, path=where, max_bytes=max_bytes, max_depth=max_depth, max_memory=max_memory)


def _check_size(size: int, max_bytes: int, where: str | None) -> None:
    if size > max_bytes:
        name = f" {Path(where).name!r}" if where else ""
        raise DocumentError(
            f"CODAP document{name} is {size:,} bytes, over the limit of {max_bytes:,} bytes",
            path=where, reason="too_large", size=size, max_bytes=max_bytes)


def _check_structure(data: bytes, max_depth: int, max_memory: int, name: str, path: str | None) -> None:
    structure = scan_structure(data, max_depth)
    if structure.depth > max_depth:
        raise DocumentError(f"{name} nests objects and arrays deeper than the limit of {max_depth}",
                            path=path, reason="too_deep", limit=max_depth)
    if structure.estimated_bytes > max_memory:
        raise DocumentError(
            f"{name} would take some {structure.estimated_bytes:,} bytes parsed ({structure.containers:,} objects "
            f"and arrays), over the limit of {max_memory:,} bytes", path=path, reason="too_complex",
            estimated_bytes=structure.estimated_bytes, containers=structure.containers, limit=max_memory)


def loads_document(data: bytes | str, *, path: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                   max_depth: int = DEFAULT_MAX_DEPTH, max_memory: int = DEFAULT_MAX_MEMORY) -> Document:
    """Parse a CODAP v2 document from its bytes (UTF-8) or text, after the limits are checked."""
    _check_size(len(data), max_bytes, path)
    name = f"CODAP document {Path(path).name!r}" if path else "CODAP document"
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    _check_structure(raw, max_depth, max_memory, name, path)
    del raw
    if isinstance(data, (bytes, bytearray)):
        try:
            text = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DocumentError(f"{name} is not UTF-8 text (bad byte at offset {exc.start})",
                                path=path, reason="encoding") from None
    else:
        text = data
    if not text.strip():
        raise DocumentError(f"{name} is empty, not JSON", path=path, reason="invalid_json")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DocumentError(f"{name} is not valid JSON: {exc.msg} at line {exc.lineno}, "
                            f"column {exc.colno}", path=path, reason="invalid_json",
                            line=exc.lineno, column=exc.colno) from None
    except RecursionError:
        raise DocumentError(f"{name} is not usable JSON: nested too deeply", path=path,
                            reason="invalid_json") from None
    return parse_document(obj, path=path)


def parse_document(obj: Any, *, path: str | None = None) -> Document:
    """Build a :class:`Document` from a decoded v2 JSON object."""
    return _Reader(path).document(obj)


class _Reader:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self.warnings: list[str] = []
        self.global_names: dict[Any, str] = {}
        self.ctx_by_id: dict[Any, ContextSpec] = {}
        self.attr_by_id: dict[Any, tuple[ContextSpec, CollectionSpec, AttrSpec]] = {}
        self.coll_by_id: dict[Any, tuple[ContextSpec, CollectionSpec]] = {}
        self.case_guids: set[Any] = set()

    # -- errors --------------------------------------------------------------------------------
    def fail(self, message: str, reason: str, where: str | None = None, **details: Any):
        name = f"CODAP document {Path(self.path).name!r}" if self.path else "CODAP document"
        at = f" at {where}" if where else ""
        raise DocumentError(f"{name}{at}: {message}", path=self.path, reason=reason,
                            location=where, **details)

    def want(self, obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str,
             *, required: bool = True, default: Any = None) -> Any:
        if key not in obj or (obj[key] is None and not required):
            if required:
                self.fail(f"required key {key!r} is missing", "missing_key", where)
            return default
        value = obj[key]
        if not isinstance(value, kind) or isinstance(value, bool) and bool not in _as_tuple(kind):
            want = " or ".join(type_name(k()) if k is not type(None) else "null"
                               for k in _as_tuple(kind))
            self.fail(f"{key!r} must be {want}, not {type_name(value)}", "wrong_type", where)
        return value

    def guid(self, obj: Mapping[str, Any], where: str, *, required: bool) -> Any:
        value = obj.get("guid", obj.get("id"))
        if value is None:
            if required:
                self.fail("required key 'guid' is missing", "missing_key", where)
            return None
        if not is_id(value):
            self.fail(f"'guid' must be a number or string, not {type_name(value)}",
                      "wrong_type", where)
        return value

    def name(self, obj: Mapping[str, Any], what: str, where: str) -> str:
        value = self.want(obj, "name", str, where)
        if not value.strip():
            self.fail(f"the {what} has an empty name", "empty_name", where)
        return value

    def object_name(self, obj: Mapping[str, Any], what: str, where: str, prefix: str,
                    taken: Iterable[str]) -> tuple[str, str | None]:
        """(name, title) of a collection or attribute as CODAP shows it: ``name``, else its
        title, else CODAP's v3 id for it (``COLL12``, ``ATTR34``: ``toV3CollectionId`` and
        ``toV3AttrId`` in ``v3/src/utilities/codap-utils.ts``); cleaned to batchray's rule
        (:func:`~batchray.io.codap.names.clean_name`) and made unique among ``taken``, with the
        written spelling kept as the title."""
        raw = obj.get("name")
        if raw is not None and not isinstance(raw, str):
            self.fail(f"'name' must be a string, not {type_name(raw)}", "wrong_type", where)
        title = opt_str(obj.get("title")) or None
        written = raw if raw and raw.strip() else None
        if written is None:
            guid = obj.get("guid", obj.get("id"))
            written = title or (f"{prefix}{guid}" if is_id(guid) else None)
            if written is None:
                self.fail(f"the {what} has no name, title or guid", "empty_name", where)
            self.warnings.append(f"{where}: the {what} has no name; named {written!r} as CODAP "
                                 "shows it")
        name = unique_name(clean_name(written), taken)
        if name != written:
            self.warnings.append(f"{where}: {what} name {written!r} is stored as {name!r} "
                                 "(batchray's names hold no NUL or square brackets, at most "
                                 f"{MAX_NAME} characters, and are unique)")
        return name, title or (written if name != written else None)

    # -- document ------------------------------------------------------------------------------
    def document(self, obj: Any) -> Document:
        if not isinstance(obj, dict):
            self.fail(f"the top level is a JSON {type_name(obj)}, not an object",
                      "not_an_object")
        if obj.get("type") == "CODAP" or ("content" in obj and "contexts" not in obj):
            self.fail("this is a CODAP v3 document; only v2 documents (appName \"DG\") can be read",
                      "codap_v3_document")
        app = obj.get("appName")
        if js_truthy(app) and app != V2_APP_NAME:
            self.fail(f"not a CODAP v2 document: appName is {app!r}, but CODAP opens only "
                      f"documents whose appName is {V2_APP_NAME!r} (or empty)", "not_codap_v2",
                      app_name=app)
        for key in ("contexts", "components"):
            if key not in obj:
                self.fail(f"not a CODAP v2 document: required key {key!r} is missing",
                          "missing_key")
            if not isinstance(obj[key], list):
                self.fail(f"not a CODAP v2 document: {key!r} must be an array, not "
                          f"{type_name(obj[key])}", "wrong_type", key)
        self.header(obj)
        doc_guid = obj.get("guid", obj.get("id"))

        globals_: dict[str, Any] = {}
        raw_globals = obj.get("globalValues")
        if raw_globals is not None and not isinstance(raw_globals, list):
            self.fail(f"'globalValues' must be an array, not {type_name(raw_globals)}",
                      "wrong_type", "globalValues")
        for gi, gv in enumerate(raw_globals or []):
            where = f"globalValues[{gi}]"
            if not isinstance(gv, dict):
                self.fail(f"a global value must be an object, not {type_name(gv)}",
                          "wrong_type", where)
            gname = self.name(gv, "global value", where)
            if gname in globals_:
                self.fail(f"two global values are named {gname!r}", "duplicate_name", where)
            globals_[gname] = gv.get("value")
            gid = self.guid(gv, where, required=False)
            if gid is not None:
                self.global_names[gid] = gname

        contexts: list[ContextSpec] = []
        given_names: set[str] = set()
        for ci, raw_ctx in enumerate(obj["contexts"]):
            where = f"contexts[{ci}]"
            if not isinstance(raw_ctx, dict):
                self.fail(f"a data context must be an object, not {type_name(raw_ctx)}",
                          "wrong_type", where)
            if "collections" not in raw_ctx and "externalDocumentId" in raw_ctx:
                self.warnings.append(f"{where}: external data context skipped "
                                     "(CODAP no longer supports them)")
                continue
            ref = raw_ctx.get("document")
            if ref is not None and doc_guid is not None and ref != doc_guid:
                self.warnings.append(f"{where}: refers to document {ref!r}, but the document's "
                                     f"guid is {doc_guid!r}")
            ctx = self.context(raw_ctx, where, ci)
            if not ctx.extra.get("__derived_name__"):
                if ctx.name in given_names:
                    # CODAP opens both (it tells data sets apart by id): the later one is renamed
                    self.warnings.append(f"{where}: a second data context is named {ctx.name!r}; "
                                         "it is renamed")
                    ctx.extra["__derived_name__"] = True
                else:
                    given_names.add(ctx.name)
            contexts.append(ctx)
        self.unique_context_names(contexts, given_names)

        components = [self.component(c, f"components[{i}]")
                      for i, c in enumerate(obj["components"])]
        extra = {k: v for k, v in obj.items() if k not in _DOCUMENT_KEYS}
        return Document(name=opt_str(obj.get("name")), contexts=contexts, components=components,
                        globals=globals_, extra=extra, warnings=self.warnings, path=self.path)

    def header(self, obj: dict[str, Any]) -> None:
        """CODAP's ``validateV2Document`` (``v3/src/lib/cfm/resolve-document.ts``): appName,
        appVersion and appBuildNum all ``""`` (legacy documents), or appName ``"DG"`` with a
        non-empty appVersion and appBuildNum. CODAP opens any other document as an empty one."""
        header = {key: obj.get(key) for key in ("appName", "appVersion", "appBuildNum")}
        if all(value == "" for value in header.values()):
            return
        if header["appName"] == V2_APP_NAME and js_truthy(header["appVersion"]) \
                and js_truthy(header["appBuildNum"]):
            return
        self.fail("CODAP opens it as an empty document: its header must have appName "
                  f"{V2_APP_NAME!r} with a non-empty appVersion and appBuildNum (or all three "
                  f"empty), not {header}", "invalid_header", **header)

    def unique_context_names(self, contexts: list[ContextSpec], given: set[str]) -> None:
        taken = set(given)
        for ctx in contexts:
            if ctx.extra.pop("__derived_name__", False):
                base, n = ctx.name, 1
                while ctx.name in taken:
                    n += 1
                    ctx.name = f"{base}_{n}"
                taken.add(ctx.name)

    # -- data contexts -------------------------------------------------------------------------
    def context(self, raw: dict[str, Any], where: str, index: int) -> ContextSpec:
        raw_colls = self.want(raw, "collections", list, where)
        ctx_id = self.guid(raw, where, required=False)
        name = raw.get("name")
        if name is not None and not isinstance(name, str):
            self.fail(f"'name' must be a string, not {type_name(name)}", "wrong_type", where)
        title = opt_str(raw.get("title"))
        # CODAP's importMetadata (v3/src/v2/codap-v2-data-set-importer.ts): the metadata's
        # description, else the legacy top-level one
        metadata = raw.get("metadata")
        description = metadata.get("description") if isinstance(metadata, dict) else None
        if not js_truthy(description):
            description = raw.get("description")
        extra = {k: v for k, v in raw.items() if k not in _CONTEXT_KEYS}

        # collections, attributes
        colls: list[CollectionSpec] = []
        coll_ids: list[Any] = []
        parent_ids: list[Any] = []
        raw_cases: list[list[Any]] = []
        attr_names: dict[str, str] = {}
        written_attrs: dict[str, str] = {}
        written_colls: set[Any] = set()
        renames: list[dict[str, str]] = []
        for k, rc in enumerate(raw_colls):
            cwhere = f"{where}.collections[{k}]"
            if not isinstance(rc, dict):
                self.fail(f"a collection must be an object, not {type_name(rc)}", "wrong_type",
                          cwhere)
            cid = self.guid(rc, cwhere, required=True)
            if cid in coll_ids:
                self.fail(f"two collections have guid {cid!r}", "duplicate_id", cwhere)
            raw_cname = rc.get("name")
            if isinstance(raw_cname, str) and raw_cname and raw_cname in written_colls:
                self.fail(f"two collections are named {raw_cname!r}", "duplicate_name", cwhere)
            cname, ctitle = self.object_name(rc, "collection", cwhere, "COLL", (c.name for c in colls))
            written_colls.add(raw_cname)  # a string or None: object_name refused anything else
            parent = rc.get("parent")
            if parent is not None and not is_id(parent):
                self.fail(f"'parent' must be a collection guid, not {type_name(parent)}",
                          "wrong_type", cwhere)
            attrs = []
            value_names: dict[str, str] = {}
            for ai, ra in enumerate(self.want(rc, "attrs", list, cwhere, required=False,
                                              default=[])):
                awhere = f"{cwhere}.attrs[{ai}]"
                written = ra.get("name") if isinstance(ra, dict) else None
                if isinstance(written, str) and written and written in written_attrs:
                    self.fail(f"attribute {written!r} appears twice (collections "
                              f"{written_attrs[written]!r} and {cname!r})", "duplicate_name",
                              awhere)
                attr = self.attribute(ra, awhere, attr_names)
                attr_names[attr.name] = cname
                if isinstance(written, str) and written:
                    written_attrs[written] = cname
                    value_names[written] = attr.name
                attrs.append(attr)
            cases = self.want(rc, "cases", list, cwhere, required=False, default=[])
            colls.append(CollectionSpec(
                name=cname, title=ctitle or cname, parent=None, attrs=attrs,
                labels=collection_labels(rc.get("labels"), rc.get("caseName")),
                extra={k: v for k, v in rc.items() if k not in _COLLECTION_KEYS}, source_id=cid))
            renames.append(value_names)
            coll_ids.append(cid)
            parent_ids.append(parent)
            raw_cases.append(cases)

        def chain_fail(message: str, reason: str) -> None:
            self.fail(message, reason, where)

        def label(i: int) -> str:
            return f"collection {colls[i].name!r} (guid {coll_ids[i]!r})"

        order = chain_order(coll_ids, parent_ids, chain_fail, legacy_order=True, label=label)
        if len(order) > 1 and all(p is None for p in parent_ids):
            self.warnings.append(f"{where}: collections have no parent links; "
                                 "taking them in document order")
        colls_ordered = [colls[i] for i in order]
        for level, coll in enumerate(colls_ordered):
            coll.parent = colls_ordered[level - 1].name if level else None

        if name and name.strip():
            ctx_name = clean_name(name)
            derived = ctx_name != name
            if derived:
                self.warnings.append(f"{where}: data context name {name!r} is stored as "
                                     f"{ctx_name!r} (batchray's names hold no NUL or square "
                                     f"brackets and at most {MAX_NAME} characters)")
                title = title or name
        else:
            # CODAP v3 names the data set "" and shows its displayTitle: the title, else its
            # collections' names joined by "/" (v3/src/models/data/data-set.ts); with neither,
            # its id ("DATA" + guid: toV3DataSetId in v3/src/utilities/codap-utils.ts)
            shown = title or "/".join(c.name for c in colls_ordered)
            fallback = f"DATA{ctx_id}" if ctx_id is not None else f"Data_Set_{index + 1}"
            ctx_name = clean_name(shown) if shown else fallback
            derived = True
        if derived:
            extra["__derived_name__"] = True
        ctx = ContextSpec(name=ctx_name, title=title or ctx_name,
                          description=opt_str(description), collections=colls_ordered,
                          extra=extra, source_id=ctx_id)
        self.cases(ctx, [raw_cases[i] for i in order], [f"{where}.collections[{i}]" for i in order],
                   [renames[i] for i in order])

        if ctx_id is not None:
            self.ctx_by_id.setdefault(ctx_id, ctx)
        for coll in colls_ordered:
            self.coll_by_id.setdefault(coll.source_id, (ctx, coll))
            for attr in coll.attrs:
                if attr.source_id is None:
                    continue
                if attr.source_id in self.attr_by_id:
                    self.warnings.append(f"attribute guid {attr.source_id!r} is used twice")
                    continue
                self.attr_by_id[attr.source_id] = (ctx, coll, attr)
        return ctx

    def attribute(self, raw: Any, where: str, taken: Iterable[str]) -> AttrSpec:
        if not isinstance(raw, dict):
            self.fail(f"an attribute must be an object, not {type_name(raw)}", "wrong_type", where)
        name, title = self.object_name(raw, "attribute", where, "ATTR", taken)
        v2_type = raw.get("type")
        if v2_type is None or v2_type == "" or v2_type == "none":
            attr_type = None
        elif isinstance(v2_type, int) and not isinstance(v2_type, bool):
            attr_type = _V2_ATTR_TYPE_INDEX.get(v2_type)
        elif isinstance(v2_type, str) and v2_type in _V2_ATTR_TYPES:
            attr_type = _V2_ATTR_TYPES[v2_type]
        else:
            self.warnings.append(f"{where}: unknown attribute type {v2_type!r} read as no type")
            attr_type = None
        formula = raw.get("formula")
        precision = raw.get("precision")
        if precision is None and raw.get("decimals") not in (None, ""):
            precision = raw["decimals"]  # legacy documents (CODAP's importAttributes reads it)
        return AttrSpec(
            name=name,
            title=title or name,
            type=attr_type,
            description=opt_str(raw.get("description")),
            unit=opt_str(raw.get("unit")),
            precision=precision,
            formula=opt_str(formula) if formula else None,
            hidden=js_truthy(raw.get("hidden")),
            editable=raw.get("editable") is None or js_truthy(raw.get("editable")),
            extra={k: v for k, v in raw.items() if k not in _ATTR_KEYS},
            source_id=self.guid(raw, where, required=False),
        )

    # -- cases -> items ------------------------------------------------------------------------
    def cases(self, ctx: ContextSpec, raw_cases: list[list[Any]], wheres: list[str],
              renames: list[dict[str, str]]) -> None:
        """Items from the cases as CODAP v3 builds them (``importCases`` in
        ``v3/src/v2/codap-v2-data-set-importer.ts``): one item per case of the child-most
        collection, in the order of that collection's cases, with the values of its case over
        those of its ancestors. A case's values for any attribute of the context count, not only
        its own collection's (CODAP keys them by ``toCanonical`` over the whole data set:
        ``v3/src/models/data/data-set.ts``); values for names that are no attribute are dropped
        (with a warning). A parent case without children makes no item there, so CODAP drops
        it, and so does this reader (with a warning). A case whose guid an earlier case of the document has is removed first, as
        CODAP's ``v2RemoveDuplicateCaseIDs`` (``v3/src/lib/cfm/resolve-document.ts``) does."""
        colls = ctx.collections
        last = len(colls) - 1
        level_of: dict[Any, int] = {}
        kept: list[list[tuple[int, dict[str, Any]]]] = []
        for level, (cases, cwhere) in enumerate(zip(raw_cases, wheres)):
            rows = []
            for k, rc in enumerate(cases):
                where = f"{cwhere}.cases[{k}]"
                if not isinstance(rc, dict):
                    self.fail(f"a case must be an object, not {type_name(rc)}", "wrong_type",
                              where)
                guid = self.guid(rc, where, required=True)
                if guid in self.case_guids:
                    self.warnings.append(f"{where}: case guid {guid!r} is used by an earlier "
                                         "case; removed, as CODAP removes it")
                    continue
                self.case_guids.add(guid)
                level_of[guid] = level
                rows.append((k, rc))
            kept.append(rows)
        # per level: list of (guid, own values, item id, parent case guid)
        levels: list[list[tuple[Any, dict[str, Any], Any, Any]]] = []
        dropped = 0
        names = set(ctx.attr_names)
        rename = {written: name for value_names in renames for written, name in value_names.items()}
        for level, (coll, rows_in, cwhere) in enumerate(zip(colls, kept, wheres)):
            rows = []
            for k, rc in rows_in:
                where = f"{cwhere}.cases[{k}]"
                guid = self.guid(rc, where, required=True)
                values = self.want(rc, "values", dict, where, required=False, default={})
                own = {}
                for n, v in values.items():
                    key = rename.get(n, n)
                    if key in names:
                        own[key] = v
                dropped += len(values) - len(own)
                parent = rc.get("parent")
                if level == 0:
                    if parent is not None:
                        self.fail(f"case {guid!r} of top collection {coll.name!r} names parent "
                                  f"case {parent!r}, but its collection has no parent",
                                  "dangling_case_parent", where, case=guid, parent=parent)
                else:
                    if parent is None:
                        self.fail(f"case {guid!r} of collection {coll.name!r} has no parent case "
                                  f"(its collection's parent is {colls[level - 1].name!r})",
                                  "missing_case_parent", where, case=guid)
                    plevel = level_of.get(parent) if is_id(parent) else None
                    if plevel is None:
                        self.fail(f"case {guid!r} of collection {coll.name!r} names parent case "
                                  f"{parent!r}, which does not exist", "dangling_case_parent",
                                  where, case=guid, parent=parent)
                    if plevel != level - 1:
                        self.fail(f"case {guid!r} of collection {coll.name!r} names parent case "
                                  f"{parent!r}, which is in collection {colls[plevel].name!r}, "
                                  f"not {colls[level - 1].name!r}",
                                  "case_parent_wrong_collection", where, case=guid, parent=parent)
                item_id = rc.get("itemID")
                rows.append((guid, own, item_id if isinstance(item_id, str) else None, parent))
            levels.append(rows)
        if dropped:
            self.warnings.append(f"data context {ctx.name!r}: {dropped} case value(s) for names "
                                 "that are not attributes of the data context were ignored")

        for coll in colls:
            ctx.case_counts[coll.name] = 0
        if not levels:
            return
        # importCases adds the items in the order of the child-most collection's cases, each
        # with its ancestors' values beneath its own; a parent case counts when an item lies
        # below it
        cases_by_guid = {row[0]: row for rows in levels for row in rows}
        lineage: dict[Any, dict[str, Any]] = {}

        def values_above(guid: Any) -> dict[str, Any]:
            """The merged values of parent case ``guid`` and its ancestors (counted once)."""
            merged = lineage.get(guid)
            if merged is None:
                _, own, _, parent = cases_by_guid[guid]
                merged = {**(values_above(parent) if parent is not None else {}), **own}
                lineage[guid] = merged
                ctx.case_counts[colls[level_of[guid]].name] += 1
            return merged

        items: list[dict[str, Any]] = []
        item_ids: list[str | None] = []
        for _, own, item_id, parent in levels[last]:
            items.append({**values_above(parent), **own} if parent is not None else dict(own))
            item_ids.append(item_id)
        ctx.case_counts[colls[last].name] = len(items)
        childless = sum(len(rows) for rows in levels[:last]) - len(lineage)
        if childless:
            self.warnings.append(f"data context {ctx.name!r}: {childless} parent case(s) without "
                                 "child cases were dropped, as CODAP drops them (it builds items "
                                 "from the child-most cases)")
        ctx.items = items
        ctx.item_ids = item_ids

    # -- components ----------------------------------------------------------------------------
    def component(self, raw: Any, where: str) -> ComponentSpec:
        if not isinstance(raw, dict):
            self.fail(f"a component must be an object, not {type_name(raw)}", "wrong_type", where)
        v2_type = self.want(raw, "type", str, where)
        storage = raw.get("componentStorage")
        if storage is None:
            storage = {}
        elif not isinstance(storage, dict):
            self.fail(f"'componentStorage' must be an object, not {type_name(storage)}",
                      "wrong_type", where)
        layout = raw.get("layout")
        if layout is None:
            layout = {}
        elif not isinstance(layout, dict):
            self.fail(f"'layout' must be an object, not {type_name(layout)}", "wrong_type", where)
        ctype = COMPONENT_TYPES.get(v2_type, v2_type)
        title = opt_str(storage.get("title"))
        name = opt_str(storage.get("name")) or title
        props = component_properties(ctype, storage, resolver=self, where=where)
        return ComponentSpec(
            type=ctype,
            name=name,
            title=title,
            dimensions={"width": layout.get("width"), "height": layout.get("height")},
            position={"left": layout.get("left", layout.get("x")),
                      "top": layout.get("top", layout.get("y"))},
            properties=props,
            raw=storage,
            v2_type=v2_type,
            layout_extra={k: v for k, v in layout.items() if k not in _LAYOUT_KEYS},
            extra={k: v for k, v in raw.items() if k not in _COMPONENT_KEYS},
            source_id=self.guid(raw, where, required=False),
        )

    # resolver interface used by component_properties
    def context_name(self, ids: list[Any], where: str) -> str | None:
        for i in ids:
            ctx = self.ctx_by_id.get(i)
            if ctx is not None:
                return ctx.name
            self.warnings.append(f"{where}: link to unknown data context {i!r} ignored")
        return None

    def attr_ref(self, ids: list[Any], where: str) -> list[tuple[str, str]]:
        """(context name, attribute name) for each resolvable attribute id."""
        out = []
        for i in ids:
            hit = self.attr_by_id.get(i)
            if hit is None:
                self.warnings.append(f"{where}: link to unknown attribute {i!r} ignored")
                continue
            out.append((hit[0].name, hit[2].name))
        return out

    def global_name(self, ids: list[Any], where: str) -> str | None:
        for i in ids:
            if i in self.global_names:
                return self.global_names[i]
            self.warnings.append(f"{where}: link to unknown global value {i!r} ignored")
        return None


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


__all__ = ["DEFAULT_MAX_DEPTH", "DEFAULT_MAX_MEMORY", "loads_document", "parse_document", "read_document"]
