"""Helpers shared by the sources whose drivers follow DB-API (DuckDB, SQLite).

Fetching is where a result turns into Python memory, so this is where its size is
bounded: rows come in chunks sized from the rows seen so far, every cell is measured
as it arrives, and fetching stops as soon as the caller's byte budget is reached. A
page of 4 MB strings therefore costs about one budget of memory, not `max_rows` cells.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from wellhead.errors import BudgetExceeded
from wellhead.sources.base import Column, Interval, ScanSink

FETCH_CHUNK = 2048
"""The most rows one `fetchmany` asks for (narrow rows)."""
CHUNK_BYTES = 1 << 20
"""About how many bytes one chunk may hold: wide rows are fetched a few at a time."""
DEFAULT_MAX_CELL_BYTES = 16 << 20
"""The largest single value a source hands upward (`sources.<name>.max_cell_bytes`)."""
DISCOVERY_TIMEOUT = 15.0
"""Seconds a catalog query (list or describe tables) may take."""
PING_TIMEOUT = 5.0
MAX_ERROR_CHARS = 2000
"""Engine error messages are cut to this length before they reach an agent."""

Converter = Callable[[Any], Any]

# The fewest bytes each type encodes to: `null`, `true`, `7`, `"2024-01-01T00:00:00"`, ...
_FIXED: dict[type, int] = {
    type(None): 4,
    bool: 4,
    int: 1,
    float: 1,
    dt.datetime: 21,
    dt.date: 12,
    dt.time: 10,
    decimal.Decimal: 1,
    uuid.UUID: 38,
    Interval: 6,
}


class _Cursor(Protocol):
    def fetchmany(self, size: int) -> list[Any]: ...


@dataclass
class Fetched:
    rows: list[tuple[Any, ...]]
    nbytes: int
    """A lower bound of the JSON size of the fetched values."""
    full: bool
    """True when fetching stopped because `max_bytes` was reached (more rows may follow)."""


def value_size(value: Any) -> int:
    """A cheap lower bound of a value's JSON size, without encoding it.

    A lower bound, so fetching never stops before the page's budget is really used up
    (the caller then fits rows exactly); it is exact to within a few bytes for the wide
    values that matter for memory: strings, bytes and collections of them.
    """
    fixed = _FIXED.get(type(value))
    if fixed is not None:
        return fixed
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value) * 4 // 3 + 12  # base64
    if isinstance(value, dict):
        return 2 + sum(value_size(k) + value_size(v) + 2 for k, v in value.items())
    if isinstance(value, list | tuple):
        return 2 + sum(value_size(v) + 1 for v in value)
    return 1


def fetch_upto(
    cursor: _Cursor,
    limit: int,
    *,
    max_bytes: int | None = None,
    max_cell_bytes: int | None = DEFAULT_MAX_CELL_BYTES,
    names: Callable[[], Sequence[str]] | None = None,
    converters: Sequence[Converter | None] | None = None,
    setting: str = "max_cell_bytes",
) -> Fetched:
    """Fetch at most `limit` rows in chunks: the engine never produces the rest.

    Stops early once the estimated size reaches `max_bytes` (at least one row is
    kept). A value larger than `max_cell_bytes` is an error naming its column; the
    value is dropped at once instead of being carried into a page. `converters`
    turn driver values into exact ones column by column (see the DuckDB source).
    """
    rows: list[tuple[Any, ...]] = []
    used = 0
    chunk = 1  # learn the row width before asking for many rows
    converting = [(i, fn) for i, fn in enumerate(converters or ()) if fn is not None]

    def take(got: list[Any]) -> int:
        taken = 0
        for raw in got:
            row = tuple(raw) if not converting else _convert(raw, converting)
            size = 0
            for index, value in enumerate(row):
                cell = value_size(value)
                if max_cell_bytes is not None and cell > max_cell_bytes:
                    column = names()[index] if names is not None else f"#{index + 1}"
                    raise BudgetExceeded(
                        f"column '{column}' holds a value of about {cell:,} bytes, more than "
                        f"the {max_cell_bytes:,}-byte limit for one value ({setting}); select "
                        f"part of it (substr({column}, 1, 1000)) or its length instead"
                    )
                size += cell
            rows.append(row)
            taken += size + 1
        return taken

    while len(rows) < limit:
        got = cursor.fetchmany(min(chunk, limit - len(rows)))
        if not got:
            break
        chunk_bytes = take(got)
        used += chunk_bytes
        if max_bytes is not None and used >= max_bytes:
            if len(rows) >= limit:
                break
            # One more row says whether anything follows, so a last page gets no cursor.
            before = len(rows)
            used += take(cursor.fetchmany(1))
            return Fetched(rows, used, full=len(rows) > before)
        width = max(chunk_bytes // len(got), 1)
        room = CHUNK_BYTES if max_bytes is None else min(CHUNK_BYTES, max_bytes - used)
        chunk = max(1, min(FETCH_CHUNK, room // width + 1))
    return Fetched(rows, used, full=False)


def _convert(row: Sequence[Any], converting: list[tuple[int, Converter]]) -> tuple[Any, ...]:
    values = list(row)
    for index, fn in converting:
        if values[index] is not None:
            values[index] = fn(values[index])
    return tuple(values)


SCAN_FIRST_CHUNK = 256
SCAN_MAX_CHUNK = 16_384


def scan_chunks(
    cursor: _Cursor,
    sink: ScanSink,
    columns: Callable[[Sequence[Sequence[Any]]], list[Column]],
    converters: Sequence[Converter | None] | None = None,
) -> None:
    """Every row of an executed cursor to `sink`, in chunks of about CHUNK_BYTES encoded.

    Cells are not measured one by one here (that would double the cost of a snapshot): the
    sink sees each row's encoded size and bounds what it keeps.
    """
    converting = [(i, fn) for i, fn in enumerate(converters or ()) if fn is not None]
    chunk = SCAN_FIRST_CHUNK
    names: list[Column] | None = None
    while True:
        got = cursor.fetchmany(chunk)
        if not got:
            return
        rows = got if not converting else [_convert(r, converting) for r in got]
        if names is None:
            names = columns(rows)
        used = sink(names, rows)
        chunk = max(1, min(SCAN_MAX_CHUNK, CHUNK_BYTES * 4 // max(used // len(rows), 1)))
