"""Config models of SQL tools declared in YAML, and of the toolsets that switch them on or off.

A SQL tool is one fixed read-only statement with typed `:name` parameters. Everything an
agent may vary is a declared parameter with a type and bounds, so the input schema the
agent sees is exactly what the server accepts, and values only ever reach the engine as
bound parameters, never as SQL text. Mistakes are refused when the config loads, naming
the tool, the parameter and what was expected.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import SchemaError

from wellhead.governance.principal import IDENTITY_SPEC

ParamType = Literal["string", "integer", "number", "boolean", "date", "enum", "array"]
ItemType = Literal["string", "integer", "number", "boolean", "date"]

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
RESERVED_PARAMETERS = frozenset({"cursor"})
"""Argument names every SQL tool already has (`cursor` continues a paged result)."""

_SCALARS: dict[str, type] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "date": datetime.date,
}
_NUMERIC = ("integer", "number")
_BOUNDS_FOR: dict[str, tuple[str, ...]] = {
    "minimum": _NUMERIC,
    "maximum": _NUMERIC,
    "min_length": ("string",),
    "max_length": ("string",),
    "pattern": ("string",),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamConfig(_Strict):
    """One typed parameter of a SQL tool; becomes one property of the tool's input schema.

    For `array` parameters the scalar bounds (minimum/maximum, min_length/max_length/pattern)
    apply to each item, and `max_items`/`min_items` to the array itself.
    """

    type: ParamType
    description: str | None = None
    default: Any = Field(None, description="Makes the parameter optional.")
    required: bool | None = Field(
        None, description="Defaults to true, or to false when a default is given."
    )
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = Field(None, ge=0)
    max_length: int | None = Field(None, ge=0)
    pattern: str | None = None
    values: list[str | int | float] | None = Field(None, description="Allowed values (enum).")
    items: ItemType | None = Field(None, description="Item type (array).")
    min_items: int | None = Field(None, ge=0)
    max_items: int | None = Field(None, ge=1)
    identity: str | None = Field(
        None,
        description="Bind from the caller's identity (client_id, subject or claims.<name>); "
        "hidden from the input schema, refused if the caller passes it.",
    )

    @property
    def has_default(self) -> bool:
        return "default" in self.model_fields_set

    @property
    def is_required(self) -> bool:
        if self.required is not None:
            return self.required
        return not self.has_default

    @property
    def scalar_type(self) -> str:
        """The type the scalar bounds apply to: the item type for arrays."""
        return (self.items or "") if self.type == "array" else self.type

    @model_validator(mode="after")
    def _coherent(self) -> ParamConfig:
        if self.type == "enum":
            if not self.values:
                raise ValueError("an enum parameter needs `values` (the allowed values)")
            if len(set(map(repr, self.values))) != len(self.values):
                raise ValueError("enum `values` must not repeat")
        elif self.values is not None:
            raise ValueError(f"`values` applies to enum parameters, not {self.type}")
        if self.type == "array":
            if self.items is None:
                raise ValueError(
                    "an array parameter needs `items` (string, integer, number, boolean or date)"
                )
        else:
            for key in ("items", "min_items", "max_items"):
                if getattr(self, key) is not None:
                    raise ValueError(f"`{key}` applies to array parameters, not {self.type}")
        for key, types in _BOUNDS_FOR.items():
            if getattr(self, key) is not None and self.scalar_type not in types:
                what = " or ".join(types)
                target = f"array of {self.scalar_type}" if self.type == "array" else self.type
                raise ValueError(f"`{key}` applies to {what} parameters, not {target}")
        _ordered(self.minimum, self.maximum, "minimum", "maximum")
        _ordered(self.min_length, self.max_length, "min_length", "max_length")
        _ordered(self.min_items, self.max_items, "min_items", "max_items")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"`pattern` is not a valid regular expression: {exc}") from None
        if self.identity is not None:
            if not re.match(IDENTITY_SPEC, self.identity):
                raise ValueError(
                    f"identity {self.identity!r} must be client_id, subject or claims.<name>"
                )
            if self.has_default:
                raise ValueError("an identity-bound parameter takes no default (it is required)")
        if self.required and self.has_default:
            raise ValueError(
                "a parameter with a default is optional; drop `required: true` or the default"
            )
        try:
            adapter = TypeAdapter(self.annotation())
        except SchemaError as exc:  # e.g. a look-around the regex engine does not support
            raise ValueError(f"`pattern` is not supported: {str(exc).splitlines()[-1]}") from None
        if self.has_default and self.default is not None:
            try:
                adapter.validate_json(json_text(self.default), strict=True)
            except ValidationError as exc:
                problem = exc.errors()[0]["msg"]
                raise ValueError(
                    f"default {self.default!r} does not fit the parameter: {problem}"
                ) from None
        return self

    def annotation(self) -> Any:
        """The Python type (with constraints) a call's value is validated against."""
        if self.type == "enum":
            base: Any = Literal[tuple(self.values or ())]  # type: ignore[misc]
        else:
            base = Annotated[_SCALARS[self.scalar_type], Field(**self._scalar_bounds())]
        if self.type == "array":
            base = Annotated[
                list[base],  # type: ignore[valid-type]
                Field(min_length=self.min_items, max_length=self.max_items),
            ]
        if not self.is_required and self.default is None:
            base = base | None
        return base

    def _scalar_bounds(self) -> dict[str, Any]:
        bounds = {
            "ge": self.minimum,
            "le": self.maximum,
            "min_length": self.min_length,
            "max_length": self.max_length,
            "pattern": self.pattern,
        }
        if self.scalar_type == "integer":
            bounds["ge"] = _int_bound(self.minimum)
            bounds["le"] = _int_bound(self.maximum)
        return {key: value for key, value in bounds.items() if value is not None}


class AnnotationsConfig(_Strict):
    """MCP tool annotations. A SQL tool is read-only by construction; the hints say so."""

    title: str | None = None
    readOnlyHint: bool = True  # noqa: N815 - MCP's own spelling
    destructiveHint: bool = False  # noqa: N815
    idempotentHint: bool = True  # noqa: N815
    openWorldHint: bool = False  # noqa: N815

    @model_validator(mode="after")
    def _read_only(self) -> AnnotationsConfig:
        if not self.readOnlyHint or self.destructiveHint:
            raise ValueError(
                "SQL tools are read-only by construction: readOnlyHint must be true and "
                "destructiveHint false (or leave both out)"
            )
        return self


class SqlToolConfig(_Strict):
    """One tool: a fixed read-only statement with typed `:name` parameters."""

    description: str = Field(min_length=1, description="What the tool answers, for the agent.")
    source: str | None = Field(None, description="Source name; the default source when omitted.")
    sql: str = Field(
        min_length=1, description="One read-only statement; values only as :name parameters."
    )
    parameters: dict[str, ParamConfig] = Field(default_factory=dict)
    annotations: AnnotationsConfig = AnnotationsConfig()
    timeout_s: float | None = Field(None, gt=0, description="Shorter deadline for this tool.")
    budget_bytes: int | None = Field(None, ge=1_024, description="Result budget of one page.")
    max_rows: int | None = Field(None, ge=1, description="Rows per page.")
    scopes: list[str] = Field(
        default_factory=list, description="OAuth scopes a caller must hold (HTTP with auth)."
    )
    tags: list[str] = Field(default_factory=list)
    toolset: str = Field("default", description="Group switched on/off by `toolsets`.")
    cost_guard: bool | None = Field(
        None, description="Check the plan estimate first; null: cost_guard.sql_tools."
    )

    @field_validator("parameters")
    @classmethod
    def _parameter_names(cls, value: dict[str, ParamConfig]) -> dict[str, ParamConfig]:
        for name in value:
            if not NAME.match(name):
                raise ValueError(
                    f"parameter name {name!r} is not valid: use letters, digits and underscore "
                    "(it is written :name in the SQL)"
                )
            if name in RESERVED_PARAMETERS:
                raise ValueError(f"parameter name {name!r} is reserved (every SQL tool has it)")
        return value

    @field_validator("scopes", "tags")
    @classmethod
    def _non_empty_words(cls, value: list[str]) -> list[str]:
        for item in value:
            if not item or item != item.strip():
                raise ValueError(f"{item!r} must be a non-empty word without surrounding spaces")
        return value

    @field_validator("toolset")
    @classmethod
    def _toolset_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value):
            raise ValueError(f"toolset name {value!r} must be letters, digits, '_', '-' or '.'")
        return value


class ToolsetsConfig(_Strict):
    """Which groups of SQL tools are served: `enabled` (None = all) minus `disabled`."""

    enabled: list[str] | None = None
    disabled: list[str] = Field(default_factory=list)

    def allows(self, toolset: str) -> bool:
        if toolset in self.disabled:
            return False
        return self.enabled is None or toolset in self.enabled


def json_text(value: Any) -> str:
    """A config value as JSON, the form call arguments arrive in (YAML dates become ISO text)."""
    return json.dumps(value, default=_iso)


def _iso(value: Any) -> str:
    if isinstance(value, datetime.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def _int_bound(value: float | None) -> int | float | None:
    return int(value) if value is not None and float(value).is_integer() else value


def _ordered(low: float | None, high: float | None, low_name: str, high_name: str) -> None:
    if low is not None and high is not None and low > high:
        raise ValueError(f"`{low_name}` ({low:g}) is greater than `{high_name}` ({high:g})")
