"""Compact, lossless-enough JSON for result cells, and fitting rows into a byte budget.

Rows travel as arrays under one column list (never a dict per row). Values JSON cannot
hold exactly are made explicit rather than silently changed: a Decimal that a float would
round becomes a string, NaN/Infinity become strings, bytes become base64, an integer
outside JSON's safe range (|n| > 2**53 - 1, where JavaScript clients would round it)
becomes a decimal string, and an interval becomes an ISO 8601 duration that keeps
months, days and time apart (`P1M` is not `P30D`).
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
from wellhead.sources.base import Interval

JsonValue = Any

MAX_SAFE_INTEGER = 2**53 - 1
"""The largest integer every JSON reader holds exactly (an IEEE double's 53-bit mantissa)."""

_MICROS_PER_DAY = 86_400_000_000


def iso_duration(interval: Interval) -> str:
    """An ISO 8601 duration with months, days and time kept apart: `P1Y2M3DT4H5M6.789S`.

    Negative parts carry their own sign, as PostgreSQL's `IntervalStyle = iso_8601`
    writes them (`P-1M2D`, `PT-1H-30M`); a zero interval is `PT0S`.
    """
    years, months = _split(interval.months, 12)
    micros = interval.microseconds
    hours, rest = _split(micros, 3_600_000_000)
    minutes, rest = _split(rest, 60_000_000)
    seconds, fraction = _split(rest, 1_000_000)
    date = "".join(
        f"{n}{unit}" for n, unit in ((years, "Y"), (months, "M"), (interval.days, "D")) if n
    )
    time = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M")) if n)
    if seconds or fraction:
        sign = "-" if rest < 0 else ""
        digits = f"{abs(seconds)}" + (f".{abs(fraction):06d}".rstrip("0") if fraction else "")
        time += f"{sign}{digits}S"
    if not date and not time:
        return "PT0S"
    return "P" + date + ("T" + time if time else "")


def _split(value: int, unit: int) -> tuple[int, int]:
    """divmod truncating toward zero, so both parts keep the sign of `value`."""
    whole = abs(value) // unit
    part = abs(value) - whole * unit
    return (-whole, -part) if value < 0 else (whole, part)


def interval_from_timedelta(value: dt.timedelta) -> Interval:
    """A driver's timedelta as days and time; it never held months, so none are invented."""
    total = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    days, micros = _split(total, _MICROS_PER_DAY)
    return Interval(days=days, microseconds=micros)


def to_json_value(value: Any) -> JsonValue:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return str(value)
        as_float = float(value)
        return as_float if decimal.Decimal(repr(as_float)) == value else str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Interval):
        return iso_duration(value)
    if isinstance(value, dt.timedelta):
        return iso_duration(interval_from_timedelta(value))
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
        floor = _size_floor(row)
        if used + floor > budget_bytes:
            # Cannot fit, known without encoding it: a 16 MB cell costs no 16 MB dump.
            if not kept:
                widest = max(range(len(row)), key=lambda i: _size_floor((row[i],)))
                raise BudgetExceeded(
                    f"one row is at least {floor:,} bytes, more than the whole result budget of "
                    f"{budget_bytes:,} bytes; its largest column is '{columns[widest]}'. Select "
                    "fewer or shorter columns (e.g. substr(col, 1, 200) or length(col)) or "
                    "raise budget_bytes."
                )
            break
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


def _size_floor(row: Sequence[Any]) -> int:
    """A lower bound of a row's encoded size, in O(cells): strings and bytes by length."""
    size = len(row) + 1  # brackets, commas and the separating comma
    for value in row:
        if isinstance(value, str):
            size += len(value) + 2  # UTF-8 never has fewer bytes than characters
        elif isinstance(value, bytes | bytearray | memoryview):
            size += (len(value) + 2) // 3 * 4 + 9  # "base64:" + base64 digits + quotes
        else:
            size += 1
    return size


def render_table(columns: Sequence[str], rows: Sequence[Sequence[JsonValue]]) -> str:
    """A compact text rendering for text-only clients: a header line, then one JSON array a row."""
    lines = [dumps(list(columns))]
    lines.extend(dumps(list(row)) for row in rows)
    return "\n".join(lines)
