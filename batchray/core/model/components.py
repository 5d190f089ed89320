"""Document-level CODAP components (graphs, tables, sliders...): :class:`Component`.

A component names its type (one of :data:`COMPONENT_TYPES`) and its name (the rule of
:data:`~batchray.core.model.schema.NAME_PATTERN`); references in its ``properties`` are checked by
the component operations against the catalog.
"""
from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from batchray.core.model.schema import NAME_PATTERN

COMPONENT_TYPES = (
    "caseTable",
    "caseCard",
    "graph",
    "map",
    "slider",
    "text",
    "calculator",
    "webView",
    "game",
    "guideView",
    "imageComponentView",
)


class Component(BaseModel):
    """A document-level CODAP component. References in ``properties`` are checked by the
    component operations against the catalog (data contexts, attributes, globals)."""

    model_config = ConfigDict(extra="forbid")

    type: str
    name: str = Field(pattern=NAME_PATTERN)
    title: Optional[str] = None
    dimensions: dict[str, float] = Field(default_factory=dict)
    position: dict[str, float] | str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in COMPONENT_TYPES:
            raise ValueError(f"unknown component type {value!r}; one of {', '.join(COMPONENT_TYPES)}")
        return value


__all__ = ["COMPONENT_TYPES", "Component"]
