"""The one small interface every engine implements.

A source never sees raw agent SQL: the query layer has already checked it for safety
(`wellhead.sql.safety`) and rewritten it for paging (`wellhead.sql.paging`). A source
runs that statement read-only under a deadline, fetches at most the rows it is asked
for, and really cancels the engine when the deadline passes or the caller is cancelled.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from wellhead.errors import InvalidRequest

Value = Any
"""A cell as the driver returned it; `wellhead.sql.encoding` makes it JSON-safe."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str


@dataclass(frozen=True)
class TableInfo:
    name: str
    """Name to use in SQL, schema-qualified where the engine has schemas (`public.orders`)."""
    kind: str
    """`table`, `view` or `materialized view`."""
    row_estimate: int | None = None
    comment: str | None = None


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str
    nullable: bool
    primary_key: bool = False
    comment: str | None = None


@dataclass(frozen=True)
class ForeignKey:
    columns: list[str]
    references_table: str
    references_columns: list[str]


@dataclass(frozen=True)
class TableDescription:
    table: TableInfo
    columns: list[ColumnInfo]
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    sample_rows: list[list[Value]] = field(default_factory=list)


@dataclass(frozen=True)
class RowBatch:
    """Rows fetched from one execution: at most the `max_rows` asked for."""

    columns: list[Column]
    rows: list[tuple[Value, ...]]
    more: bool
    """True when the engine had at least one more row than `max_rows` (it was not fetched),
    or when fetching stopped early because the rows reached `max_bytes` (see `Source.fetch`)."""
    nbytes: int | None = None
    """Estimated JSON size of `rows` when the source measured it: lets the caller decide to
    encode a big page off the event loop by its size, not only by its row count."""


@dataclass(frozen=True)
class Interval:
    """An SQL interval as the engine stores it: months, days and time kept apart.

    `timedelta` cannot hold a month (28 to 31 days) and folds days into seconds, so
    `INTERVAL 1 MONTH` and `INTERVAL 30 DAY` would look the same. Every source that
    has intervals (DuckDB, PostgreSQL via asyncpg's tuple codec) returns this instead;
    `wellhead.sql.encoding` writes it as an ISO 8601 duration (`P1M`, `P30D`, `PT1H30M`).
    The three fields may have different signs (PostgreSQL allows `1 mon -2 days`).
    """

    months: int = 0
    days: int = 0
    microseconds: int = 0


class RowSink(Protocol):
    """Takes a whole result, batch by batch, as it streams from the engine (exports).

    `begin` comes once, before any batch; the writes may run in a worker thread. A sink
    bounds what it keeps (it writes to a file) and raises to stop the stream (a size cap).
    """

    def begin(self, columns: list[Column]) -> None: ...

    def write_rows(self, rows: list[tuple[Value, ...]]) -> None: ...

    def write_arrow(self, batch: Any) -> None:
        """A `pyarrow.RecordBatch` (DuckDB hands its result over in Arrow, column by column)."""


class Source(abc.ABC):
    """A named, read-only data source."""

    dialect: str
    """sqlglot dialect name: `duckdb`, `sqlite` or `postgres`."""

    placeholder_style: str = "dollar"
    """How positional parameters are written: `dollar` ($1, $2) or `qmark` (?)."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections and apply engine-level read-only settings. Fail fast and clearly."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; safe to call twice."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise `SourceUnavailable` when the source cannot answer `SELECT 1` now."""

    @abc.abstractmethod
    async def list_tables(self) -> list[TableInfo]:
        """Every table and view the agent may query, sorted by name."""

    @abc.abstractmethod
    async def describe_table(self, table: str, sample_rows: int) -> TableDescription:
        """Columns, keys and a few sample rows. Raise `InvalidRequest` for an unknown table."""

    @abc.abstractmethod
    async def fetch(
        self,
        sql: str,
        params: Sequence[Value],
        *,
        max_rows: int,
        timeout: float,
        max_bytes: int | None = None,
    ) -> RowBatch:
        """Run one safe statement, fetch at most `max_rows` rows, never the whole result.

        With `max_bytes`, rows are fetched in small chunks and fetching stops once the
        estimated size of the values fetched so far exceeds it (`RowBatch.more` is then
        True): a page of wide rows never sits whole in memory before the byte budget
        applies. The batch may hold somewhat more than `max_bytes` (the caller fits rows
        to its budget exactly); at least one row is returned when there is one.

        Raise `QueryTimeout` after `timeout` seconds (the engine is interrupted, not
        abandoned), `QueryFailed` when the engine rejects the statement. On task
        cancellation the engine is interrupted before the cancellation propagates.
        """

    async def stream(
        self,
        sql: str,
        params: Sequence[Value],
        *,
        sink: RowSink,
        timeout: float,
        batch_rows: int = 65_536,
    ) -> None:
        """Run one safe statement and hand every row of its result to `sink`, in batches.

        Memory stays about one batch whatever the result's size. The same read-only locks,
        deadline (`QueryTimeout`, the engine interrupted) and cancellation as `fetch` apply.
        """
        raise InvalidRequest(f"source {self.name!r} cannot stream whole results (exports)")

    async def scan(
        self,
        sql: str,
        params: Sequence[Value],
        *,
        timeout: float,
        sink: ScanSink,
    ) -> None:
        """Run one safe statement and hand every row to `sink`, a chunk at a time.

        For result snapshots (`wellhead.spill`): one execution, so the rows are one
        consistent result. `sink(columns, rows)` runs in a worker thread and returns the
        bytes it made of the chunk, which sizes the next one; it may raise to stop the scan.
        Deadlines and cancellation are those of `fetch`. Sources that cannot stream say so
        with NotImplementedError, and their walks page without a snapshot.
        """
        raise NotImplementedError


@dataclass(frozen=True)
class EncodedRows:
    """A chunk of rows the engine wrote as JSON text itself: exactly what
    `wellhead.sql.encoding` would make of the values `fetch` returns (an Arrow string array)."""

    texts: Any


ScanSink = Callable[[list[Column], "Sequence[Sequence[Value]] | EncodedRows | None"], int]
"""Receives (columns, rows) of one chunk and returns its encoded size in bytes. `rows` may be
`EncodedRows`; None means: forget the rows so far, the scan starts over (another way)."""
