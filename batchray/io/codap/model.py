"""The CODAP document model: plain dataclasses, independent of any store and of the v2 JSON.

A CODAP v2 document (``.codap`` file) is one JSON object::

    {"name": ..., "guid": 1, "appName": "DG", "appVersion": ..., "appBuildNum": ...,
     "contexts":   [{"guid", "name", "title", "description", "collections": [...], ...}],
     "components": [{"guid", "type": "DG.TableView", "componentStorage": {...}, "layout": {...}}],
     "globalValues": [{"guid", "name", "value"}]}

Each collection has a ``guid``, a ``name``, a ``title``, a ``parent`` (the guid of its parent
collection; absent for the top one), ``attrs`` and ``cases``; each case has a ``guid``, a
``parent`` (the guid of its parent case) and ``values`` keyed by attribute name, holding only
the values of its own collection's attributes. Components point at data contexts, collections,
attributes and global values through ``_links_`` entries of the form ``{"type": "DG.Attribute",
"id": 12}``.

The reader (:mod:`batchray.io.codap.reader`) turns such a file into the classes below, the
writer (:mod:`batchray.io.codap.writer`) turns them back into one.

:class:`Document`
    ``name``, ``contexts`` (:class:`ContextSpec`), ``components`` (:class:`ComponentSpec`),
    ``globals`` (``{name: value}`` of the document's global values, the ones sliders drive),
    ``extra`` (other top-level keys: ``appVersion``, ``appBuildNum``, ``lang``, ``metadata``...),
    ``warnings`` (problems that CODAP itself tolerates, found while reading) and ``path``.
:class:`ContextSpec`
    ``name``, ``title``, ``description``, ``collections`` (:class:`CollectionSpec`, parent
    first), ``items`` and ``case_counts``. ``items`` are the flat items of the context: one dict
    per child-most case holding its values merged with those of all its ancestors, keyed by
    attribute name, in the order of the child-most collection's cases (CODAP's item order:
    ``importCases`` in ``v3/src/v2/codap-v2-data-set-importer.ts``). A parent case without
    child cases is no item, as CODAP drops it. ``case_counts`` maps each collection name to the
    number of cases read from the file (the writer ignores it). ``item_ids`` holds the v2
    ``itemID`` of the case each item came from (``None`` where the file has none); the writer
    reuses them while it is as long as ``items``.
:class:`CollectionSpec`
    ``name``, ``title``, ``parent`` (the parent collection's *name*, ``None`` at the top),
    ``labels`` (the names CODAP gives its cases, :data:`LABEL_KEYS`; ``{}`` for none) and
    ``attrs`` (:class:`AttrSpec`).
:class:`AttrSpec`
    ``name``, ``title``, ``type`` (one of ``categorical``, ``numeric``, ``date``,
    ``qualitative``, ``boundary``, ``checkbox``, ``color`` or ``None``; v2's ``nominal`` is
    ``categorical``, ``none``/missing is ``None``), ``description``, ``unit``, ``precision``,
    ``formula``, ``hidden``, ``editable``.
:class:`ComponentSpec`
    ``type`` in v3 style (``caseTable``, ``caseCard``, ``graph``, ``map``, ``slider``, ``text``,
    ``calculator``, ``webView``, ``game``, ``guideView``, ``imageComponentView``; an unknown v2
    type is kept as it is), ``v2_type``, ``name`` (the storage's ``name``, else its ``title``),
    ``title``, ``dimensions`` ``{width, height}``, ``position`` ``{left, top}``, ``properties``
    (see :func:`~batchray.io.codap.components.component_properties`) and ``raw`` (the original ``componentStorage``).

Every spec also has ``extra`` (the other keys the file had for that object, written back
unchanged) and ``source_id`` (its guid in the file read; the writer uses it only to re-point the
links it finds in ``raw`` component storage at the new ids, and drops links it cannot re-point).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
"""Documents larger than this (in bytes) are refused unless a larger ``max_bytes`` is given."""

V2_APP_NAME = "DG"
"""The ``appName`` of a v2 document (short for Data Games)."""
V2_APP_VERSION = "2.0"
V2_APP_BUILD_NUM = "0730"
"""The ``appVersion`` and ``appBuildNum`` written when a document brings none: CODAP opens a
``"DG"`` document only when both are non-empty (``validateV2Document``)."""

LABEL_KEYS = ("singleCase", "pluralCase", "singleCaseWithArticle", "setOfCases", "setOfCasesWithArticle")
"""The labels of a collection (``ICollectionLabels`` in ``v3/src/models/shared/data-set-metadata.ts``)."""


def collection_labels(labels: Any, case_name: Any = None) -> dict[str, str]:
    """A collection's labels as CODAP keeps them: the text ones of ``labels`` (an object), with
    the legacy ``caseName`` as ``singleCase`` when that is empty (``importCollections`` in
    ``v3/src/v2/codap-v2-data-set-importer.ts``), and only when one of them is not empty
    (``isNonEmptyCollectionLabels``): ``{}`` otherwise."""
    given = labels if isinstance(labels, dict) else {}
    kept = {k: given[k] for k in LABEL_KEYS if isinstance(given.get(k), str)}
    if isinstance(case_name, str) and case_name and not kept.get("singleCase"):
        kept["singleCase"] = case_name
    return kept if any(kept.values()) else {}


ATTRIBUTE_TYPES = ("categorical", "numeric", "date", "qualitative", "boundary", "checkbox", "color")
"""The attribute types of the model; ``None`` means "not set" (CODAP infers one)."""
V2_TYPE_ALIASES = {"nominal": "categorical", "number": "numeric"}
"""v2's names of attribute types that CODAP v3 names otherwise (``v3TypeFromV2TypeString`` in
``v3/src/v2/codap-v2-data-context-types.ts``)."""


@dataclass
class AttrSpec:
    """One attribute of a collection."""

    name: str
    title: str | None = None
    type: str | None = None
    description: str | None = None
    unit: str | None = None
    precision: int | float | str | None = None
    formula: str | None = None
    hidden: bool = False
    editable: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    source_id: Any = None


@dataclass
class CollectionSpec:
    """One collection; ``parent`` is the parent collection's name (``None`` at the top)."""

    name: str
    title: str | None = None
    parent: str | None = None
    attrs: list[AttrSpec] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    source_id: Any = None

    @property
    def attr_names(self) -> list[str]:
        return [a.name for a in self.attrs]


@dataclass
class ContextSpec:
    """One data context: its collections (parent first) and its flat items."""

    name: str
    title: str | None = None
    description: str | None = None
    collections: list[CollectionSpec] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    case_counts: dict[str, int] = field(default_factory=dict)
    item_ids: list[str | None] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    source_id: Any = None

    def collection(self, name: str) -> CollectionSpec:
        for coll in self.collections:
            if coll.name == name:
                return coll
        raise KeyError(name)

    def attribute(self, name: str) -> tuple[CollectionSpec, AttrSpec]:
        """The collection holding attribute ``name`` and the attribute."""
        for coll in self.collections:
            for attr in coll.attrs:
                if attr.name == name:
                    return coll, attr
        raise KeyError(name)

    @property
    def attr_names(self) -> list[str]:
        return [a.name for c in self.collections for a in c.attrs]


@dataclass
class ComponentSpec:
    """One component (tile) of the document."""

    type: str
    name: str | None = None
    title: str | None = None
    dimensions: dict[str, Any] = field(default_factory=lambda: {"width": None, "height": None})
    position: dict[str, Any] = field(default_factory=lambda: {"left": None, "top": None})
    properties: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    v2_type: str | None = None
    layout_extra: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    source_id: Any = None


@dataclass
class Document:
    """A whole CODAP document."""

    name: str | None = None
    contexts: list[ContextSpec] = field(default_factory=list)
    components: list[ComponentSpec] = field(default_factory=list)
    globals: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    path: str | None = None

    def context(self, name: str) -> ContextSpec:
        for ctx in self.contexts:
            if ctx.name == name:
                return ctx
        raise KeyError(name)


@dataclass
class GroupedCase:
    """A case built by :func:`~batchray.io.codap.hierarchy.group_cases`.

    ``values`` holds the case's own collection's values; ``parent`` is the index of its parent
    case in the previous collection's list (``None`` at the top); ``items`` are the indices of
    the items under it (its own item for a child-most case); ``children`` the indices of its
    child cases in the next collection's list.
    """

    values: dict[str, Any]
    parent: int | None
    items: list[int] = field(default_factory=list)
    children: list[int] = field(default_factory=list)


__all__ = ["ATTRIBUTE_TYPES", "DEFAULT_MAX_BYTES", "LABEL_KEYS", "V2_APP_BUILD_NUM", "V2_APP_NAME", "V2_APP_VERSION", "V2_TYPE_ALIASES", "AttrSpec", "CollectionSpec", "ComponentSpec",
           "ContextSpec", "Document", "GroupedCase", "collection_labels"]
