"""What an import or an export reports: :class:`ImportResult` and :class:`ExportResult`.

Both are pydantic models whose :meth:`~_Result.dump` is the JSON-ready, camelCase dict the tools
return. An :class:`ImportResult` also carries the batch's own
:class:`~batchray.core.model.batch.BatchResult` (``batch``), left out of :meth:`~_Result.dump`.
"""
from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from batchray.core.model.batch import BatchResult


class _Result(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    def dump(self) -> dict[str, Any]:
        """JSON-ready dict with camelCase keys."""
        return self.model_dump(mode="json", by_alias=True, exclude={"batch"})


class ImportResult(_Result):
    """What an import did. ``errors`` are per row (``index``: 0-based data row, file order) or
    per malformed line (``row``: the file's row number, header included)."""

    success: bool
    state: str
    format: str
    path: str
    contexts: list[str] = Field(default_factory=list)
    collection: Optional[str] = None
    rows_read: int = 0
    items_created: int = 0
    created_contexts: list[str] = Field(default_factory=list)
    created_attributes: list[str] = Field(default_factory=list)
    attribute_types: dict[str, Optional[str]] = Field(default_factory=dict)
    case_counts: dict[str, dict[str, int]] = Field(default_factory=dict)
    components: list[dict[str, Any]] = Field(default_factory=list)
    errors: list[dict[str, Any]] = Field(default_factory=list)
    error: Optional[dict[str, Any]] = None
    transaction_id: Optional[str] = None
    duration: float = 0.0
    rows_per_second: float = 0.0
    notes: list[str] = Field(default_factory=list)
    batch: Optional[BatchResult] = None


class ExportResult(_Result):
    success: bool = True
    format: str
    path: str
    contexts: list[str] = Field(default_factory=list)
    collection: Optional[str] = None
    items_written: int = 0
    columns: list[str] = Field(default_factory=list)
    bytes_written: int = 0
    duration: float = 0.0
    items_per_second: float = 0.0
    notes: list[str] = Field(default_factory=list)


__all__ = ["ExportResult", "ImportResult"]
