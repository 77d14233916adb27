"""Compact, lossless-enough JSON for result cells, and fitting rows into a byte budget.

Rows travel as arrays under one column list (never a dict per row). Values JSON cannot
hold exactly are made explicit rather than silently changed: a Decimal that a float would
round becomes a string, NaN/Infinity become strings, bytes become base64.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from wellhead.errors import BudgetExceeded

JsonValue = Any


def to_json_value(value: Any) -> JsonValue:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return str(value)
        as_float = float(value)
        return as_float if decimal.Decimal(repr(as_float)) == value else str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "base64:" + base64.b64encode(bytes(value)).decode()
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json_value(v) for v in value]
    if hasattr(value, "items"):  # asyncpg Record and other mappings
        return {str(k): to_json_value(v) for k, v in value.items()}
    return str(value)


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)


def dumps(value: Any) -> str:
    """Compact JSON. One shared encoder: `json.dumps` with options builds a new one per call,
    and this runs for every row of every page and twice for every tool call."""
    return _ENCODER.encode(value)


def encoded_size(value: Any) -> int:
    return len(dumps(value).encode())


def fit_rows(
    rows: Iterable[Sequence[Any]], budget_bytes: int, columns: Sequence[str]
) -> tuple[list[list[JsonValue]], int]:
    """Convert rows and keep the longest prefix whose encoding fits `budget_bytes`.

    Returns the kept rows and their encoded size. A single row larger than the whole
    budget is an error naming its widest column, never a silently clipped value.
    """
    kept: list[list[JsonValue]] = []
    used = 0
    for row in rows:
        encoded = [to_json_value(v) for v in row]
        size = encoded_size(encoded) + 1  # the separating comma
        if used + size > budget_bytes:
            if not kept:
                widest = max(range(len(encoded)), key=lambda i: encoded_size(encoded[i]))
                raise BudgetExceeded(
                    f"one row is {size:,} bytes, more than the whole result budget of "
                    f"{budget_bytes:,} bytes; its largest column is '{columns[widest]}' "
                    f"({encoded_size(encoded[widest]):,} bytes). Select fewer or shorter columns "
                    "(e.g. substr(col, 1, 200) or length(col)) or raise budget_bytes."
                )
            break
        kept.append(encoded)
        used += size
    return kept, used


def render_table(columns: Sequence[str], rows: Sequence[Sequence[JsonValue]]) -> str:
    """A compact text rendering for text-only clients: a header line, then one JSON array a row."""
    lines = [dumps(list(columns))]
    lines.extend(dumps(list(row)) for row in rows)
    return "\n".join(lines)
