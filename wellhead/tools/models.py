"""Output shapes of the core tools, and the lean JSON schemas advertised for them.

Schemas are part of every tools/list an agent pays for in tokens, so titles and other
decoration pydantic adds are stripped; descriptions stay where they guide the agent.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class QueryResult(BaseModel):
    source: str
    columns: list[list[str]] = Field(description="[name, type] per column")
    rows: list[list[Any]] = Field(description="one array per row, in column order")
    row_count: int
    offset: int
    total_rows: int | None = Field(description="null when not cheap to count")
    truncated: bool
    next_cursor: str | None
    note: str | None


class TableList(BaseModel):
    source: str
    columns: list[str]
    tables: list[list[Any]]
    total_tables: int
    truncated: bool
    next_cursor: str | None
    note: str | None


class TableDescriptionResult(BaseModel):
    source: str
    table: str
    kind: str
    row_estimate: int | None
    comment: str | None
    columns: list[list[Any]] = Field(description="[name, type, nullable, primary_key, comment]")
    foreign_keys: list[dict[str, Any]]
    sample_rows: list[list[Any]]
    note: str | None
    column_policies: dict[str, str] = Field(
        default_factory=dict,
        description="column -> its policy for you: deny, hash, redact, partial, null",
    )


def lean_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema without titles: same validation, fewer tokens."""
    return _strip_titles(model.model_json_schema())


def _strip_titles(node: Any) -> Any:
    """Drop titles, and `items: {}` (any value) which only makes validators visit every cell."""
    if isinstance(node, dict):
        return {
            key: _strip_titles(value)
            for key, value in node.items()
            if not (key == "title" and isinstance(value, str))
            and not (key == "items" and value == {})
        }
    if isinstance(node, list):
        return [_strip_titles(item) for item in node]
    return node
