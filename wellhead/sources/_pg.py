"""PostgreSQL session plumbing: one round trip in, bounded chunks out, one round trip to reset.

Kept apart from `postgres.py` (discovery, privileges, errors) because these are the parts
that decide the per-call price and the memory bound, and they lean on asyncpg 0.32 internals
(pinned exactly in pyproject.toml):

- `Connection._get_statement` returns asyncpg's cached prepared statement: the pool no longer
  runs `DISCARD ALL` (which deallocates every statement, so each call paid a Parse round trip);
  the reset below removes only what SQL could have created, `from_sql` statements included.
- `CursorIterator._bind_exec` / `_exec` run Bind+Execute(n) in one round trip and then
  Execute(n) per further chunk, with a chunk size we choose per call (the public iterator
  fixes one prefetch for all chunks, the public `Cursor` costs a separate Bind round trip).
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence
from typing import Any

import asyncpg
from asyncpg.prepared_stmt import PreparedStatement

from wellhead.errors import ConfigError, InvalidRequest
from wellhead.sources._dbapi import CHUNK_BYTES, SCAN_FIRST_CHUNK, SCAN_MAX_CHUNK
from wellhead.sources.base import Column, Interval, ScanSink, Value

RESET_SQL = (
    "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; RESET ROLE; UNLISTEN *; "
    "SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES; "
    "DO $wh$DECLARE s record; BEGIN FOR s IN SELECT name FROM pg_prepared_statements "
    "WHERE from_sql LOOP EXECUTE format('DEALLOCATE %I', s.name); END LOOP; END$wh$"
)
"""Everything `DISCARD ALL` does except `DEALLOCATE ALL` (only statements made by SQL
`PREPARE` go) and `DISCARD PLANS`: no SET, role, cursor, LISTEN, advisory lock, temporary
table, sequence state or SQL-prepared statement survives into the next caller's call, while
asyncpg's own protocol-level statements (and their plans) stay for reuse. One round trip."""

ROLLBACK_AND_RESET_SQL = "ROLLBACK; " + RESET_SQL
"""The full reset for a connection handed back in a transaction by code other than ours."""

END_CALL_SQL = (
    "ROLLBACK; SELECT pg_advisory_unlock_all(); SELECT 1 FROM pg_prepared_statements WHERE from_sql"
)
"""What is left to undo after one of our calls, in the round trip that ends its transaction.

Our calls run every statement inside a read-only transaction that is always rolled back, and
a ROLLBACK already reverts session-level `SET`/`set_config(..., false)` (role and session
authorization included), drops cursors (WITH HOLD too) and temporary tables, and cancels a
`LISTEN`, none of which take effect before commit; a statement cannot commit half-way (a bare
COMMIT is the whole statement and is refused afterwards). Only two things outlive a
rollback: session advisory locks (released here) and SQL `PREPARE`d statements, which the
last statement counts in its status tag (`SELECT n`) so the DEALLOCATE below runs only when
there are some. About 85 us of server time instead of about 235 us for `RESET_SQL`."""

DEALLOCATE_SQL = RESET_SQL[RESET_SQL.index("DO $wh$") :]
"""Deallocates every statement made by SQL `PREPARE`, keeping protocol-level ones."""


async def end_call(conn: asyncpg.Connection) -> None:
    """End one of our calls: roll back and undo what survives a rollback (see END_CALL_SQL)."""
    if await conn.execute(END_CALL_SQL) != "SELECT 0":
        await conn.execute(DEALLOCATE_SQL)


_SIZE = re.compile(r"^\s*(\d{1,12})\s*(B|kB|MB|GB|TB)?\s*$")
_FIXED_WIDTH = {
    "bool": 1,
    "int2": 8,
    "int4": 8,
    "int8": 8,
    "oid": 8,
    "float4": 8,
    "float8": 8,
    "numeric": 16,
    "money": 16,
    "date": 10,
    "time": 15,
    "timetz": 21,
    "timestamp": 26,
    "timestamptz": 32,
    "interval": 24,
    "uuid": 36,
}
"""Estimated size of one value of a type whose values cannot be large (no per-cell scan)."""
_NULL = 4
FIRST_CHUNK_WIDE = 16
"""Rows fetched first when a column can hold big values: the size of these decides the rest."""
GROWTH = 8
"""A later chunk holds at most this many times the rows seen so far: an estimate from a few
short first rows cannot pull in a whole page of long ones."""


def setting_literal(key: str, value: str | None) -> str | None:
    """`'64MB'` for a PostgreSQL memory setting, after checking it is one (never raw SQL)."""
    if value is None:
        return None
    m = _SIZE.match(value)
    if not m:
        raise ConfigError(
            f"{key} must be a PostgreSQL size such as '64MB' or '1GB' (units B, kB, MB, GB, "
            f"TB), got {value!r}"
        )
    return f"'{m.group(1)}{m.group(2) or ''}'"


def begin_sql(server_ms: int, local_settings: str) -> str:
    """The call's first and only set-up round trip: read-only transaction, limits, snapshot.

    `SELECT 1` takes the transaction's first snapshot: from then on PostgreSQL refuses any
    attempt (SET TRANSACTION, set_config, a DO block) to turn it read-write.
    """
    return (
        f"BEGIN TRANSACTION READ ONLY; SET LOCAL statement_timeout = {int(server_ms)};"
        f"{local_settings} SELECT 1"
    )


async def cached_statement(conn: asyncpg.Connection, sql: str) -> PreparedStatement:
    """The statement from asyncpg's per-connection cache, prepared (one round trip) on a miss."""
    raw = getattr(conn, "_con", None) or conn  # a pool proxy: bind to the real connection,
    state = await raw._get_statement(sql, None, named=True)  # whose life outlasts the proxy
    return PreparedStatement(raw, sql, state)


def drop_statement_cache(conn: asyncpg.Connection) -> None:
    """Forget cached statements on every pooled connection, as asyncpg does itself on
    `InvalidCachedStatementError` outside a transaction (a table changed shape)."""
    raw = getattr(conn, "_con", None) or conn
    raw._drop_global_statement_cache()


def row_cost(attributes: Sequence[Any]) -> tuple[int, list[int]]:
    """The fixed part of a row's size estimate and the positions of columns to measure."""
    fixed = 0
    measured: list[int] = []
    for i, attr in enumerate(attributes):
        width = _FIXED_WIDTH.get(str(attr.type.name)) if attr.type.kind == "scalar" else None
        if width is None:
            measured.append(i)
        else:
            fixed += width
    return fixed, measured


def value_size(value: Any) -> int:
    """A cheap size estimate: characters of text, bytes of binary, 8 for a number."""
    if value is None:
        return _NULL
    if isinstance(value, str | bytes | bytearray | memoryview):
        return len(value)
    if isinstance(value, list | tuple):
        return 2 + sum(value_size(v) + 1 for v in value)
    if isinstance(value, dict):
        return 2 + sum(len(str(k)) + value_size(v) + 4 for k, v in value.items())
    if isinstance(value, bool | int | float):
        return 8
    return 32  # dates, times, decimals, UUIDs, ranges, geometric types: small


class RowReader:
    """Reads one statement's rows in chunks until `max_rows + 1`, the byte budget or the end.

    Why chunks: asyncpg decodes a whole Execute reply before returning it, so the chunk size
    is the memory bound. Without `max_bytes` and with only narrow columns, the first chunk is
    the whole page (one round trip). Otherwise the first chunk is small when a column can be
    wide (16 rows), and each later one is sized from the rows seen so far to land near the
    budget, growing at most eightfold per round trip.
    """

    def __init__(
        self,
        stmt: PreparedStatement,
        args: Sequence[Value],
        *,
        max_rows: int,
        max_bytes: int | None,
        max_cell_bytes: int | None,
        source: str,
    ) -> None:
        self._stmt = stmt
        self._args = args
        self._want = max_rows + 1
        self._max_rows = max_rows
        self._max_bytes = max_bytes
        self._max_cell = max_cell_bytes
        self._source = source
        self._names = [a.name for a in stmt.get_attributes()]
        self._fixed, self._measured = row_cost(stmt.get_attributes())
        self.bytes = 0

    async def read(self) -> tuple[list[tuple[Value, ...]], bool]:
        """The rows (at most `max_rows`) and whether the engine has more."""
        it = self._stmt.cursor(*self._args, prefetch=1).__aiter__()
        rows: list[tuple[Value, ...]] = []
        first = True
        while True:
            need = self._want - len(rows)
            n = self._chunk(need, len(rows), first)
            chunk = await (it._bind_exec(n, None) if first else it._exec(n, None))
            first = False
            self._account(chunk, len(rows))
            rows.extend(tuple(r) for r in chunk)
            if len(rows) >= self._want:
                return rows[: self._max_rows], True
            if it._exhausted or len(chunk) < n:
                return rows, False
            if self._over_budget() and rows:
                return rows, True

    async def scan(self, sink: ScanSink, columns: list[Column]) -> None:
        """Every row to `sink` (in a worker thread: it encodes and writes), chunk by chunk."""
        it = self._stmt.cursor(*self._args, prefetch=1).__aiter__()
        n, first = SCAN_FIRST_CHUNK, True
        while True:
            chunk = await (it._bind_exec(n, None) if first else it._exec(n, None))
            first = False
            if chunk:
                self._account(chunk, 0)  # the max_cell_bytes check, on the wide columns only
                used = await asyncio.to_thread(sink, columns, chunk)
            if it._exhausted or len(chunk) < n:
                return
            n = max(1, min(SCAN_MAX_CHUNK, CHUNK_BYTES * 4 // max(used // len(chunk), 1)))

    def _chunk(self, need: int, have: int, first: bool) -> int:
        if self._max_bytes is None and not self._measured:
            return need
        if first:
            return min(need, FIRST_CHUNK_WIDE) if self._measured else self._fit(need, 0)
        per_row = max(1, math.ceil(self.bytes / max(have, 1)))
        return min(self._fit(need, per_row), max(1, have * GROWTH))

    def _fit(self, need: int, per_row: int) -> int:
        """Rows that should fit the rest of the budget, plus one to step past it."""
        per_row = per_row or max(1, self._fixed)
        if self._max_bytes is None:
            return need
        room = max(0, self._max_bytes - self.bytes)
        return max(1, min(need, room // per_row + 1))

    def _over_budget(self) -> bool:
        return self._max_bytes is not None and self.bytes > self._max_bytes

    def _account(self, chunk: list[Any], offset: int) -> None:
        total = self._fixed * len(chunk)
        limit = self._max_cell
        for r, record in enumerate(chunk):
            for i in self._measured:
                size = value_size(record[i])
                if limit is not None and size > limit:
                    self._too_big(i, offset + r + 1, size)
                total += size
        self.bytes += total

    def _too_big(self, column: int, row: int, size: int) -> None:
        name = self._names[column]
        raise InvalidRequest(
            f"column {name!r} in row {row} holds a value of about {size:,} bytes, over the "
            f"{self._max_cell:,}-byte max_cell_bytes of postgres source {self._source!r}; "
            f"select part of it (substr({name}, 1, 2000)) or its size "
            f"(octet_length({name})) instead"
        )


# --------------------------------------------------------------------------- intervals


def decode_interval(value: tuple[int, int, int]) -> Interval:
    months, days, microseconds = value
    return Interval(months=months, days=days, microseconds=microseconds)


_N = r"[-+]?\d{1,9}"
_ISO_DURATION = re.compile(
    rf"^(?P<sign>[-+])?P(?!$)(?:(?P<y>{_N})Y)?(?:(?P<mo>{_N})M)?(?:(?P<w>{_N})W)?"
    rf"(?:(?P<d>{_N})D)?(?:T(?=[-+\d])(?:(?P<h>{_N})H)?(?:(?P<mi>{_N})M)?"
    rf"(?:(?P<s>[-+]?\d{{1,12}}(?:[.,]\d{{1,6}})?)S)?)?$"
)


def parse_iso_duration(text: str) -> Interval:
    """`P1Y2M3DT4H5M6.5S`, parts signed as wellhead writes them (`P-1M2D`), as an `Interval`."""
    m = _ISO_DURATION.match(text.strip().upper())
    if not m or m.group(0).endswith("T"):
        raise ValueError(text)
    g = {k: v for k, v in m.groupdict().items() if v is not None}
    sign = -1 if g.pop("sign", "+") == "-" else 1
    seconds = g.get("s", "0").replace(",", ".")
    whole, _, fraction = seconds.partition(".")
    micros = abs(int(whole)) * 1_000_000 + int((fraction + "000000")[:6])
    micros *= -1 if whole.startswith("-") else 1
    micros += int(g.get("h", 0)) * 3_600_000_000 + int(g.get("mi", 0)) * 60_000_000
    return Interval(
        months=sign * (int(g.get("y", 0)) * 12 + int(g.get("mo", 0))),
        days=sign * (int(g.get("w", 0)) * 7 + int(g.get("d", 0))),
        microseconds=sign * micros,
    )


def encode_interval(value: Any) -> tuple[int, int, int]:
    """An interval parameter: an `Interval`, a `timedelta`, or a (months, days, us) triple."""
    if isinstance(value, Interval):
        return (value.months, value.days, value.microseconds)
    if hasattr(value, "total_seconds") and hasattr(value, "days"):
        micros = value.seconds * 1_000_000 + value.microseconds
        return (0, value.days, micros)
    if isinstance(value, tuple | list) and len(value) == 3:
        return (int(value[0]), int(value[1]), int(value[2]))
    raise TypeError(f"cannot use {type(value).__name__} as an interval")


async def init_connection(conn: asyncpg.Connection) -> None:
    """Per new connection: intervals decode exactly (months, days, microseconds kept apart).

    asyncpg's default interval codec returns a `timedelta`, which folds a month into 30 days.
    """
    await conn.set_type_codec(
        "interval",
        schema="pg_catalog",
        encoder=encode_interval,
        decoder=decode_interval,
        format="tuple",
    )
