"""Config models of SQL tools declared in YAML (placeholder until the SQL-tools work lands)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SqlToolConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str
    sql: str
    source: str | None = None


class ToolsetsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: list[str] | None = None
    disabled: list[str] = Field(default_factory=list)
