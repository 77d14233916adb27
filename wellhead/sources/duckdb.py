"""DuckDB source: a .duckdb file, or views over allow-listed Parquet/CSV/JSON files.

Read-only is enforced by the engine, independently of the SQL checks upstream:

* the database is always opened `read_only` — for file views too: the views are written
  to a private catalog file that is then reopened read-only, so `CREATE`, `INSERT`,
  `ATTACH ':memory:'`, sequences and macros fail inside DuckDB;
* `enable_external_access=false` with `allowed_paths` set to exactly the files the
  views read (globs are expanded at start), so no other file, URL or extension can be
  reached; extension autoload/autoinstall off; then `lock_configuration=true`, so no
  `SET`/`RESET`/`PRAGMA` can undo any of it;
* `allowed_paths` also permits *writing* those files (`COPY ... TO` with
  `use_tmp_file false`), and DuckDB has no read-only variant of it, so every statement
  is first parsed by DuckDB's own parser and anything but one SELECT (or EXPLAIN of a
  SELECT) is refused before it runs.

Memory is bounded by configuration, not by the host: `memory_limit` (default 1GB, not
DuckDB's 80 % of physical RAM, which a container or a second source makes wrong),
`threads` (default min(4, CPUs)), and spilling to a private temp directory capped by
`max_temp_directory_size`. A query past the limit fails with a message naming the key.

Values reach Python exactly: the driver would fold an interval's months into 30 days,
clamp `infinity` dates to 9999-12-31, drop nanoseconds, and need pytz for any
TIMESTAMPTZ. So the statement's result types are read first (`DESCRIBE`, which binds
without running) and the affected columns are selected through a thin wrapper: intervals
as their (months, days, microseconds) parts, dates and timestamps as text parsed back
when Python can hold them, nested values holding either as JSON.
"""

from __future__ import annotations

import datetime as dt
import decimal
import glob
import json
import os
import re
import shutil
import tempfile
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import duckdb

from wellhead.config import DuckDBSourceConfig
from wellhead.errors import (
    BudgetExceeded,
    ConfigError,
    InvalidRequest,
    QueryFailed,
    SourceUnavailable,
    UnsafeSQL,
    WellheadError,
)
from wellhead.sources._catalog import quote_ident, resolve
from wellhead.sources._dbapi import (
    DEFAULT_MAX_CELL_BYTES,
    DISCOVERY_TIMEOUT,
    MAX_ERROR_CHARS,
    PING_TIMEOUT,
    Converter,
    Fetched,
    fetch_upto,
    scan_chunks,
)
from wellhead.sources._duckdb_json import SLOW_MARKER, json_rows_sql
from wellhead.sources._threads import Deadline, Interruptible, run_interruptible, timeout_error
from wellhead.sources.base import (
    Column,
    ColumnInfo,
    EncodedRows,
    ForeignKey,
    Interval,
    RowBatch,
    RowSink,
    ScanSink,
    Source,
    TableDescription,
    TableInfo,
    Value,
)

_READERS = {
    ".parquet": "read_parquet",
    ".csv": "read_csv",
    ".tsv": "read_csv",
    ".json": "read_json",
    ".jsonl": "read_json",
    ".ndjson": "read_json",
}
_COMPRESSION = (".gz", ".zst")
_VIEW_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LEADING_COMMENTS = re.compile(r"^(\s+|--[^\n]*(\n|$)|/\*.*?\*/)*", re.DOTALL)
_EXPLAIN = re.compile(
    r"^EXPLAIN\s*(ANALYZE\s+|\([^()]*\)\s*)?(?P<inner>.*)$", re.DOTALL | re.IGNORECASE
)
_ALLOWED = {"SELECT"}

DEFAULT_MEMORY_LIMIT = "1GB"
SCAN_BATCH_ROWS = 16_384
"""Rows per Arrow batch when DuckDB writes a snapshot's rows as JSON text itself."""
DEFAULT_MAX_TEMP_DIRECTORY_SIZE = "2GB"
DEFAULT_MAX_THREADS = 4


def default_threads() -> int:
    """min(4, CPUs): a few queries at once keep a core each without starving the loop."""
    return max(1, min(DEFAULT_MAX_THREADS, os.cpu_count() or 1))


@dataclass(frozen=True)
class _Entry:
    schema: str
    name: str
    info: TableInfo


class DuckDBSource(Source):
    """A DuckDB database opened read-only with external access and configuration locked."""

    dialect = "duckdb"
    placeholder_style = "dollar"

    def __init__(
        self,
        name: str,
        *,
        path: str | None,
        views: dict[str, str] | None = None,
        threads: int | None = None,
        memory_limit: str | None = DEFAULT_MEMORY_LIMIT,
        max_temp_directory_size: str | None = DEFAULT_MAX_TEMP_DIRECTORY_SIZE,
        temp_directory: str | None = None,
        max_cell_bytes: int | None = DEFAULT_MAX_CELL_BYTES,
        max_concurrency: int = 16,
    ) -> None:
        super().__init__(name)
        if path is not None and views:
            raise ConfigError(
                f"source {name!r}: give either `path` (a .duckdb file) or `views` "
                "(files exposed as views), not both"
            )
        self.path = path
        self.views = dict(views or {})
        self.threads = threads if threads is not None else default_threads()
        self.memory_limit = memory_limit
        self.max_temp_directory_size = max_temp_directory_size
        self.temp_parent = temp_directory
        """Where the private spill directory is made; the system temp dir when None."""
        self.max_cell_bytes = max_cell_bytes
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._cursor_lock = threading.Lock()
        self._tmpdir: str | None = None
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        self._active: set[Interruptible] = set()

    @classmethod
    def from_config(cls, name: str, config: DuckDBSourceConfig) -> DuckDBSource:
        """Every key of `sources.<name>` with kind: duckdb, so new keys need one place."""
        return cls(
            name,
            path=config.path,
            views=config.views or None,
            threads=config.threads,
            memory_limit=config.memory_limit,
            max_temp_directory_size=config.max_temp_directory_size,
            temp_directory=config.temp_directory,
            max_cell_bytes=config.max_cell_bytes,
        )

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        if self._conn is None:
            await anyio.to_thread.run_sync(self._open)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        for call in list(self._active):  # in-flight queries stop now, not at their deadline
            call.fire()
        if conn is not None:
            try:
                conn.close()
            except duckdb.Error:
                pass
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def _open(self) -> None:
        try:
            self._conn = self._open_locked()
        except BaseException:
            if self._tmpdir is not None:
                shutil.rmtree(self._tmpdir, ignore_errors=True)
                self._tmpdir = None
            raise

    def _open_locked(self) -> duckdb.DuckDBPyConnection:
        config: dict[str, Any] = {
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "allow_community_extensions": False,
            "allow_persistent_secrets": False,
            "python_enable_replacements": False,  # SQL must not reach Python variables
        }
        config["threads"] = self.threads
        if self.memory_limit is not None:
            config["memory_limit"] = self.memory_limit
        if self.max_temp_directory_size is not None:
            config["max_temp_directory_size"] = self.max_temp_directory_size
        self._tmpdir = self._private_dir()
        spill = os.path.join(self._tmpdir, "spill")
        os.mkdir(spill, 0o700)
        config["temp_directory"] = spill  # never `<db>.tmp` beside a shared database file
        allowed: list[str] = []
        if self.path is not None:
            db_path = os.path.abspath(os.path.expanduser(self.path))
            if not os.path.isfile(db_path):
                raise SourceUnavailable(f"source {self.name!r}: DuckDB file not found: {db_path}")
        else:
            db_path = self._build_view_catalog(config, allowed)
        try:
            conn = duckdb.connect(db_path, read_only=True, config=config)
        except duckdb.Error as exc:
            raise SourceUnavailable(
                f"source {self.name!r}: cannot open DuckDB database: {_first_line(exc)}"
            ) from None
        try:
            _use_utc(conn)
            if allowed:
                conn.execute("SET allowed_paths = $1", [sorted(set(allowed))])
            conn.execute("SET enable_external_access = false")
            conn.execute("SET lock_configuration = true")
            for view in self.views:  # fail at start, not on the agent's first query
                conn.execute(f"SELECT * FROM {quote_ident(view)} LIMIT 0").fetchall()
        except duckdb.Error as exc:
            conn.close()
            raise SourceUnavailable(
                f"source {self.name!r}: locking the DuckDB database down failed: {_first_line(exc)}"
            ) from None
        return conn

    def _build_view_catalog(self, config: dict[str, Any], allowed: list[str]) -> str:
        """Write the views into a private database file, to be reopened read-only."""
        definitions = {view: _view_sql(self.name, view, spec) for view, spec in self.views.items()}
        assert self._tmpdir is not None
        db_path = os.path.join(self._tmpdir, "views.duckdb")
        try:
            builder = duckdb.connect(db_path, config=config)
        except duckdb.Error as exc:  # e.g. a malformed memory_limit
            raise ConfigError(f"source {self.name!r}: {_first_line(exc)}") from None
        try:
            for view, (sql, files) in definitions.items():
                allowed.extend(files)
                try:
                    builder.execute(sql)
                except duckdb.Error as exc:
                    raise ConfigError(
                        f"source {self.name!r}: view {view!r} cannot read its files: "
                        f"{_first_line(exc)}"
                    ) from None
        finally:
            builder.close()
        return db_path

    def _private_dir(self) -> str:
        parent = None
        if self.temp_parent is not None:
            parent = os.path.abspath(os.path.expanduser(self.temp_parent))
            if not os.path.isdir(parent):
                raise ConfigError(
                    f"source {self.name!r}: temp_directory {parent} is not a directory"
                )
        return tempfile.mkdtemp(prefix="wellhead-duckdb-", dir=parent)  # mode 0700

    # -- execution -----------------------------------------------------------------

    def pool_stats(self) -> tuple[int, int]:
        """(cursor slots, cursors running a statement), read at metrics scrape."""
        return int(self._limiter.total_tokens), len(self._active)

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        conn = self._conn
        if conn is None:
            raise SourceUnavailable(f"source {self.name!r} is not started")
        with self._cursor_lock:
            return conn.cursor()

    async def _run(
        self,
        sql: str,
        params: Sequence[Value],
        *,
        max_rows: int,
        timeout: float,  # noqa: ASYNC109 - the engine must be interrupted, not just awaited
        check: bool,
        max_bytes: int | None = None,
        exact: bool = True,
        sink: ScanSink | None = None,
    ) -> RowBatch:
        setting = f"sources.{self.name}.max_cell_bytes"

        def work(state: Interruptible) -> RowBatch:
            cur = self._cursor()
            state.attach(cur)
            try:
                kind = _check_statement(cur, sql) if check else "SELECT"
                if state.interrupted:
                    raise duckdb.InterruptException("interrupted before start")
                args = list(params) if params else None
                if sink is not None and kind == "SELECT":  # a snapshot: DuckDB encodes
                    if self._scan_encoded(cur, sql, args, sink):
                        return RowBatch(columns=[], rows=[], more=False)
                plan = (
                    _exact_plan(cur, sql, args, self.max_cell_bytes, setting)
                    if exact and kind == "SELECT"
                    else None
                )
                if plan is not None:
                    cur.execute(plan.sql, args)
                    columns = plan.columns
                    converters: list[Converter | None] | None = plan.converters
                else:
                    cur.execute(sql, args)
                    columns = [Column(str(d[0]), str(d[1])) for d in (cur.description or [])]
                    converters = None
                if sink is not None:  # a snapshot: every row, in chunks
                    scan_chunks(cur, sink, lambda _: columns, converters)
                    fetched = Fetched([], 0, full=False)
                else:
                    fetched = fetch_upto(
                        cur,
                        max_rows + 1,
                        max_bytes=max_bytes,
                        max_cell_bytes=self.max_cell_bytes,
                        names=lambda: [c.name for c in columns],
                        converters=converters,
                        setting=setting,
                    )
            finally:
                state.detach()
                cur.close()
            rows = fetched.rows
            return RowBatch(
                columns=columns,
                rows=rows[:max_rows],
                more=fetched.full or len(rows) > max_rows,
                nbytes=fetched.nbytes,
            )

        try:
            return await run_interruptible(
                work, _interrupt, timeout=timeout, limiter=self._limiter, active=self._active
            )
        except Deadline:
            raise timeout_error(timeout) from None
        except duckdb.Error as exc:
            if self._conn is None:
                raise SourceUnavailable(f"source {self.name!r} was closed") from None
            if isinstance(exc, duckdb.OutOfMemoryException):
                raise QueryFailed(
                    f"memory limit of {self.memory_limit or 'DuckDB default'} reached; narrow "
                    "the query (filter, aggregate, select fewer or shorter columns) or raise "
                    f"sources.{self.name}.memory_limit"
                ) from None
            cell = _CELL_GUARD.search(str(exc))
            if cell is not None:  # the in-engine max_cell_bytes check of _exact_plan
                raise BudgetExceeded(
                    f"column '{cell.group(1)}' holds a value of more than the "
                    f"{self.max_cell_bytes:,}-byte limit for one value ({setting}); select "
                    f"part of it (substr({cell.group(1)}, 1, 1000)) or its length instead"
                ) from None
            if "max_temp_directory_size" in str(exc):
                raise QueryFailed(
                    f"the query needs more than {self.max_temp_directory_size} of temporary "
                    "disk (spilled sorts, joins, aggregates); narrow it or raise "
                    f"sources.{self.name}.max_temp_directory_size"
                ) from None
            raise _engine_error(exc) from None

    async def fetch(
        self,
        sql: str,
        params: Sequence[Value],
        *,
        max_rows: int,
        timeout: float,  # noqa: ASYNC109
        max_bytes: int | None = None,
    ) -> RowBatch:
        if max_rows < 0:
            raise InvalidRequest("max_rows must be 0 or more")
        return await self._run(
            sql, params, max_rows=max_rows, timeout=timeout, check=True, max_bytes=max_bytes
        )

    def _scan_encoded(
        self, cur: duckdb.DuckDBPyConnection, sql: str, args: list[Any] | None, sink: ScanSink
    ) -> bool:
        """Every row as JSON text written by DuckDB itself (`_duckdb_json`), in Arrow batches;
        False when a column or a value needs the exact Python path (the sink is then reset)."""
        sql = _without_trailing_semicolons(sql)
        try:
            described = cur.execute(f"DESCRIBE {sql}", args).fetchall()
        except duckdb.Error:
            return False
        columns = [Column(str(row[0]), str(row[1])) for row in described]
        guards = []
        if self.max_cell_bytes is not None:
            for index, column in enumerate(columns):
                if column.type.upper() == "VARCHAR":
                    message = f"{_CELL_GUARD_PREFIX}{column.name}{_CELL_GUARD_END}"
                    guards.append(
                        f"(CASE WHEN strlen(c{index}) > {self.max_cell_bytes} THEN "
                        f"error('{message.replace(chr(39), chr(39) * 2)}') END IS NULL)"
                    )
        encoded = json_rows_sql(sql, columns, guards)
        if encoded is None:
            return False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "an extra copy": of one string column
                reader = cur.execute(encoded, args).to_arrow_reader(SCAN_BATCH_ROWS)
            for batch in reader or ():
                sink(columns, EncodedRows(batch.column(0)))
        except duckdb.Error as exc:
            if SLOW_MARKER not in str(exc):
                raise
            sink(columns, None)
            return False
        return True

    async def scan(
        self,
        sql: str,
        params: Sequence[Value],
        *,
        timeout: float,  # noqa: ASYNC109
        sink: ScanSink,
    ) -> None:
        await self._run(sql, params, max_rows=0, timeout=timeout, check=True, sink=sink)

    async def ping(self) -> None:
        try:
            batch = await self._run(
                "SELECT 1", (), max_rows=1, timeout=PING_TIMEOUT, check=False, exact=False
            )
        except WellheadError as exc:
            raise SourceUnavailable(
                f"source {self.name!r} does not answer: {exc.public_message}"
            ) from None
        if batch.rows != [(1,)]:
            raise SourceUnavailable(f"source {self.name!r} answered SELECT 1 wrongly")

    async def stream(
        self,
        sql: str,
        params: Sequence[Value],
        *,
        sink: RowSink,
        timeout: float,  # noqa: ASYNC109
        batch_rows: int = 65_536,
    ) -> None:
        """The whole result as Arrow record batches, straight from DuckDB's columns.

        Arrow keeps every DuckDB type exact (intervals, nanoseconds, nested values), so the
        exact-value wrapper of `fetch` is not needed; DuckDB's own parser still vets the
        statement, and the connection is the same locked, read-only one.
        """

        def work(state: Interruptible) -> None:
            cur = self._cursor()
            state.attach(cur)
            try:
                _check_statement(cur, sql)
                if state.interrupted:
                    raise duckdb.InterruptException("interrupted before start")
                relation = cur.sql(sql, params=list(params) if params else None)
                if relation is None:  # nothing to read (cannot happen for a SELECT)
                    sink.begin([])
                    return
                types = [str(t) for t in relation.types]
                sink.begin([Column(n, t) for n, t in zip(relation.columns, types, strict=True)])
                for batch in relation.to_arrow_reader(batch_rows):
                    if state.interrupted:
                        raise duckdb.InterruptException("interrupted")
                    sink.write_arrow(batch)
            finally:
                state.detach()
                cur.close()

        try:
            await run_interruptible(
                work, _interrupt, timeout=timeout, limiter=self._limiter, active=self._active
            )
        except Deadline:
            raise timeout_error(timeout) from None
        except duckdb.Error as exc:
            if self._conn is None:
                raise SourceUnavailable(f"source {self.name!r} was closed") from None
            if isinstance(exc, duckdb.OutOfMemoryException):
                raise QueryFailed(
                    f"memory limit of {self.memory_limit or 'DuckDB default'} reached; narrow "
                    f"the query or raise sources.{self.name}.memory_limit"
                ) from None
            raise _engine_error(exc) from None

    # -- discovery -----------------------------------------------------------------

    async def _internal(
        self, sql: str, params: Sequence[Value] = (), limit: int = 100_000, *, exact: bool = False
    ) -> list:
        """A catalog query of wellhead's own. Catalog columns are plain text and numbers, so
        they skip the exact-value wrapper (a DESCRIBE round trip per query); samples of user
        data (`exact=True`) keep it."""
        batch = await self._run(
            sql, params, max_rows=limit, timeout=DISCOVERY_TIMEOUT, check=False, exact=exact
        )
        return batch.rows

    async def _entries(self) -> list[_Entry]:
        rows = await self._internal(
            """
            SELECT schema_name, table_name, 'table', estimated_size, comment
              FROM duckdb_tables()
             WHERE database_name = current_database() AND NOT internal AND NOT temporary
            UNION ALL
            SELECT schema_name, view_name, 'view', NULL, comment
              FROM duckdb_views()
             WHERE database_name = current_database() AND NOT internal AND NOT temporary
            """
        )
        entries = []
        for schema, table, kind, estimate, comment in rows:
            display = table if schema == "main" else f"{schema}.{table}"
            info = TableInfo(
                name=display,
                kind=kind,
                row_estimate=int(estimate) if estimate is not None else None,
                comment=comment or None,
            )
            entries.append(_Entry(schema=schema, name=table, info=info))
        entries.sort(key=lambda e: e.info.name)
        return entries

    async def list_tables(self) -> list[TableInfo]:
        return [entry.info for entry in await self._entries()]

    async def describe_table(self, table: str, sample_rows: int) -> TableDescription:
        entries = await self._entries()
        known = [(e.info.name, e) for e in entries]
        known += [(f"{e.schema}.{e.name}", e) for e in entries if e.schema == "main"]
        entry = resolve(table, known, self.name)
        where = "database_name = current_database() AND schema_name = $1 AND table_name = $2"
        key = (entry.schema, entry.name)
        col_rows = await self._internal(
            f"SELECT column_name, data_type, is_nullable, comment FROM duckdb_columns() "
            f"WHERE {where} ORDER BY column_index",
            key,
        )
        constraints = await self._internal(
            f"SELECT constraint_type, constraint_column_names, referenced_table, "
            f"referenced_column_names FROM duckdb_constraints() "
            f"WHERE {where} AND constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY') "
            f"ORDER BY constraint_index",
            key,
        )
        primary: set[str] = set()
        foreign: list[ForeignKey] = []
        for kind, cols, ref_table, ref_cols in constraints:
            if kind == "PRIMARY KEY":
                primary.update(cols)
            else:
                ref = ref_table if entry.schema == "main" else f"{entry.schema}.{ref_table}"
                foreign.append(ForeignKey(list(cols), ref, list(ref_cols)))
        columns = [
            ColumnInfo(
                name=name,
                type=str(dtype),
                nullable=bool(nullable) and name not in primary,
                primary_key=name in primary,
                comment=comment or None,
            )
            for name, dtype, nullable, comment in col_rows
        ]
        samples: list[list[Value]] = []
        if sample_rows > 0:
            qualified = f"{quote_ident(entry.schema)}.{quote_ident(entry.name)}"
            rows = await self._internal(
                f"SELECT * FROM {qualified} LIMIT {int(sample_rows)}", exact=True
            )
            samples = [list(r) for r in rows]
        return TableDescription(
            table=entry.info, columns=columns, foreign_keys=foreign, sample_rows=samples
        )


# -- helpers -------------------------------------------------------------------------


def _interrupt(handle: object) -> None:
    assert isinstance(handle, duckdb.DuckDBPyConnection)
    handle.interrupt()


def _check_statement(cur: duckdb.DuckDBPyConnection, sql: str) -> str:
    """Let DuckDB's own parser say what the statement is; refuse all but a read."""
    statements = cur.extract_statements(sql)
    if len(statements) != 1:
        raise UnsafeSQL(
            f"DuckDB parsed {len(statements)} statements; send exactly one SELECT statement"
        )
    statement = statements[0]
    kind = statement.type.name
    if kind == "EXPLAIN":
        text = _LEADING_COMMENTS.sub("", statement.query, count=1)
        match = _EXPLAIN.match(text)
        inner = cur.extract_statements(match.group("inner")) if match else []
        if len(inner) == 1 and inner[0].type.name in _ALLOWED:
            return kind
        raise UnsafeSQL("only EXPLAIN [ANALYZE] of a single SELECT statement is allowed")
    if kind == "MULTI":
        raise UnsafeSQL(
            "DuckDB would run this as several statements (a PIVOT without an IN list does); "
            "list the pivot values explicitly: PIVOT ... ON col IN ('a', 'b') USING ..."
        )
    if kind not in _ALLOWED:
        raise UnsafeSQL(
            f"DuckDB parsed this as a {kind} statement; this source is read-only and only "
            "runs SELECT (including WITH, VALUES, DESCRIBE, SUMMARIZE) or EXPLAIN"
        )
    return kind


def _engine_error(exc: duckdb.Error) -> WellheadError:
    message = _without_traceback(str(exc))[:MAX_ERROR_CHARS]
    refused = isinstance(exc, duckdb.PermissionException) or (
        "configuration has been locked" in message or "read-only mode" in message
    )
    if refused:
        return UnsafeSQL(f"the DuckDB engine refused the statement (read-only source): {message}")
    return QueryFailed(message)


def _without_traceback(message: str) -> str:
    """An engine message without a Python traceback DuckDB may have embedded in it."""
    head, _, _ = message.partition("Traceback (most recent call last)")
    return head.strip().rstrip(":,").strip() or "the DuckDB engine failed"


def _use_utc(conn: duckdb.DuckDBPyConnection) -> None:
    """TIMESTAMPTZ text in UTC whatever the host's zone (needs ICU; without it, it is UTC)."""
    try:
        conn.execute("SET TimeZone = 'UTC'")
    except duckdb.Error:
        pass


# -- exact values ----------------------------------------------------------------------

_TEMPORAL = {
    "DATE",
    "TIMESTAMP",
    "TIMESTAMP_S",
    "TIMESTAMP_MS",
    "TIMESTAMP_NS",
    "TIMESTAMP WITH TIME ZONE",
}
_NESTED_TEMPORAL = re.compile(r"\b(DATE|TIMESTAMP(_S|_MS|_NS)?|INTERVAL)\b")
_INTERVAL_PARTS = (
    "CASE WHEN {c} IS NULL THEN NULL ELSE ["
    "datepart('year', {c}) * 12 + datepart('month', {c}), datepart('day', {c}), "
    "datepart('hour', {c}) * 3600000000 + datepart('minute', {c}) * 60000000 "
    "+ datepart('microseconds', {c})] END"
)


@dataclass(frozen=True)
class _Plan:
    sql: str
    columns: list[Column]
    converters: list[Converter | None]


_CELL_GUARD_PREFIX = "wellhead: max_cell_bytes exceeded in column <<"
_CELL_GUARD_END = ">>"
_CELL_GUARD = re.compile(
    re.escape(_CELL_GUARD_PREFIX) + r"(.*?)" + re.escape(_CELL_GUARD_END), re.S
)


def _exact_plan(
    cur: duckdb.DuckDBPyConnection,
    sql: str,
    args: list[Any] | None,
    max_cell_bytes: int | None = None,
    setting: str = "max_cell_bytes",
) -> _Plan | None:
    """The statement wrapped so every column reaches Python exactly; None when no column needs it.

    `DESCRIBE` binds the statement without running it. When it cannot (an unusual statement
    form), the statement runs as it is and the engine reports any real error itself.

    With `max_cell_bytes`, text and BLOB columns are checked in the engine: a larger value
    fails there (DuckDB's `error()`), so it is never copied into Python while the worker
    thread holds the GIL (150 MB took the event loop's turn for a fifth of a second).
    """
    sql = _without_trailing_semicolons(sql)
    try:
        described = cur.execute(f"DESCRIBE {sql}", args).fetchall()
    except duckdb.Error:
        return None
    columns = [Column(str(row[0]), str(row[1])) for row in described]
    selects: list[str] = []
    guards: list[str] = []
    converters: list[Converter | None] = []
    needed = False
    for index, column in enumerate(columns):
        ref = f"c{index}"
        kind = column.type.upper()
        if kind == "INTERVAL":
            selects.append(_INTERVAL_PARTS.format(c=ref))
            converters.append(_interval)
        elif kind in _TEMPORAL:
            selects.append(f"CAST({ref} AS VARCHAR)")
            converters.append(
                _date if kind == "DATE" else _timestamp_ns if kind == "TIMESTAMP_NS" else _timestamp
            )
        elif _is_nested(kind) and _NESTED_TEMPORAL.search(kind):
            selects.append(f"CAST(to_json({ref}) AS VARCHAR)")
            converters.append(_from_json)
        elif max_cell_bytes is not None and kind in ("VARCHAR", "BLOB"):
            size = f"strlen({ref})" if kind == "VARCHAR" else f"octet_length({ref})"
            message = f"{_CELL_GUARD_PREFIX}{column.name}{_CELL_GUARD_END}".replace("'", "''")
            # A filter, not a CASE around the value: a CASE copies every string it passes on.
            guards.append(
                f"(CASE WHEN {size} > {max_cell_bytes} THEN error('{message}') END IS NULL)"
            )
            selects.append(ref)
            converters.append(None)
        else:
            selects.append(ref)
            converters.append(None)
            continue
        needed = True
    if not needed:
        return None
    names = ", ".join(f"c{i}" for i in range(len(columns)))
    projection = ", ".join(
        f"{expr} AS {quote_ident(column.name)}"
        for expr, column in zip(selects, columns, strict=True)
    )
    wrapped = f"SELECT {projection} FROM ({sql}\n) AS _wh_t({names})"
    if guards:
        wrapped += " WHERE " + " AND ".join(guards)
    return _Plan(wrapped, columns, converters)


def _without_trailing_semicolons(sql: str) -> str:
    """`SELECT 1; -- done` as `SELECT 1 -- done`, so the statement can become a subquery.

    DuckDB's own tokenizer finds the semicolons, so one inside a string or comment stays.
    """
    tokens = duckdb.tokenize(sql)
    code = [pos for pos, kind in tokens if kind != duckdb.token_type.comment]
    raw = sql.encode()  # the tokenizer's positions are UTF-8 byte offsets
    changed = False
    while code and raw[code[-1] : code[-1] + 1] == b";":
        end = code.pop()
        raw = raw[:end] + b" " + raw[end + 1 :]
        changed = True
    return raw.decode() if changed else sql


def _is_nested(kind: str) -> bool:
    return kind.endswith("]") or kind.startswith(("STRUCT", "MAP", "UNION"))


def _interval(parts: Any) -> Interval:
    months, days, micros = parts
    return Interval(months=int(months), days=int(days), microseconds=int(micros))


def _date(text: Any) -> Any:
    """A date Python holds exactly, else DuckDB's text (`infinity`, `5877642-06-25`, BC)."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return text


def _timestamp(text: Any) -> Any:
    """A datetime when Python holds it; `infinity`, BC and far years stay text."""
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return text


def _timestamp_ns(text: Any) -> Any:
    """As `_timestamp`, but nanoseconds a datetime cannot hold keep the value as ISO text."""
    _, dot, tail = text.partition(".")
    if dot and len(tail) > 6 and tail[6:].strip("0"):
        return text.replace(" ", "T", 1)
    return _timestamp(text)


def _from_json(text: Any) -> Any:
    return json.loads(text, parse_float=decimal.Decimal)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _extension(name: str) -> str:
    """`.csv` for `a.csv` and `a.csv.gz`; empty when there is none."""
    lowered = name.lower()
    for suffix in _COMPRESSION:
        if lowered.endswith(suffix):
            lowered = lowered[: -len(suffix)]
    return os.path.splitext(lowered)[1]


def _reader_for(name: str) -> str | None:
    return _READERS.get(_extension(name))


def _view_sql(source: str, view: str, spec: str) -> tuple[str, list[str]]:
    """`CREATE VIEW` over the files `spec` names today; returns the SQL and the files."""
    if not _VIEW_NAME.match(view):
        raise ConfigError(
            f"source {source!r}: view name {view!r} must be letters, digits and underscores"
        )
    pattern = os.path.abspath(os.path.expanduser(spec))
    files = sorted(f for f in glob.glob(pattern, recursive=True) if os.path.isfile(f))
    if not files:
        raise ConfigError(f"source {source!r}: view {view!r}: no file matches {spec!r}")
    extensions = {_extension(pattern)} if _reader_for(pattern) else {_extension(f) for f in files}
    readers = {_READERS.get(ext) for ext in extensions}
    if len(readers) != 1 or None in readers:
        raise ConfigError(
            f"source {source!r}: view {view!r}: files must all be .parquet, .csv/.tsv or "
            f".json/.jsonl/.ndjson (optionally .gz/.zst), got {spec!r}"
        )
    reader = readers.pop()
    listing = "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"
    options = ""
    if extensions == {".tsv"}:
        options = ", delim = '\t'"
    sql = f"CREATE VIEW {quote_ident(view)} AS SELECT * FROM {reader}({listing}{options})"
    return sql, files
