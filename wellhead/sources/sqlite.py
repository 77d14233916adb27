"""SQLite source: one database file, read-only three times over, queried from a small pool.

The engine enforces read-only on its own, independently of the SQL checks upstream:
the file is opened with `mode=ro`, `PRAGMA query_only` is on, extension loading is
off, and an authorizer callback denies every action but reading, selecting, calling
ordinary functions and recursive CTEs — so `ATTACH`, `PRAGMA`, `load_extension`, temp
tables and writes are refused by SQLite itself. Two narrow allowances keep ordinary
reads working: the read-only introspection pragmas (`pragma_table_info(...)` and kin,
which have no setter form), and the `sqlite_master` update SQLite reports while it
declares an eponymous virtual table such as `json_each` — a real write to the schema
table is still refused by `mode=ro`, `query_only` and SQLite's own schema protection.

Memory is bounded by configuration: `Connection.setlimit` caps the length of any string
or BLOB SQLite builds (`max_length_bytes`, so `zeroblob(400000000)` fails in the engine
instead of allocating) and of the statement text (`max_sql_bytes`); `PRAGMA
hard_heap_limit` caps SQLite's whole heap (`heap_limit_bytes`). The heap limit is one
setting for the whole process (SQLite has no per-connection heap), and SQLite only ever
lowers it, so with several SQLite sources the smallest configured limit applies.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

import anyio

from wellhead.config import SQLiteSourceConfig
from wellhead.errors import (
    InvalidRequest,
    PoolExhausted,
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
    fetch_upto,
    scan_chunks,
)
from wellhead.sources._threads import Deadline, Interruptible, run_interruptible, timeout_error
from wellhead.sources.base import (
    Column,
    ColumnInfo,
    ForeignKey,
    RowBatch,
    RowSink,
    ScanSink,
    Source,
    TableDescription,
    TableInfo,
    Value,
)

_ALLOWED_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}
# Same names the SQL-safety layer denies; most exist only in the sqlite3 shell, but an
# authorizer costs nothing to be sure.
_DENIED_FUNCTIONS = frozenset(
    {"load_extension", "fts3_tokenizer", "readfile", "writefile", "edit", "eval", "sha3_query"}
)
_DENIED_TABLES = frozenset(
    {"fsdir", "lsmode", "zipfile", "zipfile_cds", "sqlite_dbpage", "sqlite_dbdata", "sqlite_dbptr"}
)
_INTROSPECTION_PRAGMAS = frozenset(
    {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list"}
)
_REFUSALS = (
    "not authorized",
    "authorization denied",
    "readonly database",
    "read-only",
    "one statement at a time",
    "may not be modified",
)

DEFAULT_MAX_LENGTH_BYTES = 64 << 20
"""SQLITE_LIMIT_LENGTH: the longest string or BLOB any expression may build."""
DEFAULT_MAX_SQL_BYTES = 4 << 20
"""SQLITE_LIMIT_SQL_LENGTH: no longer than the largest HTTP request body."""
DEFAULT_HEAP_LIMIT_BYTES = 512 << 20
"""`PRAGMA hard_heap_limit`, for SQLite's whole heap in this process."""


def _authorize(
    action: int,
    arg1: str | None,
    arg2: str | None,
    database: str | None,
    trigger: str | None,
) -> int:
    """SQLite's authorizer: OK only for reading; everything else is denied."""
    if action == sqlite3.SQLITE_FUNCTION:
        denied = (arg2 or "").lower() in _DENIED_FUNCTIONS
    elif action == sqlite3.SQLITE_READ:
        denied = (arg1 or "").lower() in _DENIED_TABLES
    elif action in _ALLOWED_ACTIONS:
        denied = False
    elif action == sqlite3.SQLITE_PRAGMA:
        denied = (arg1 or "").lower() not in _INTROSPECTION_PRAGMAS
    elif action == sqlite3.SQLITE_UPDATE:
        # declaring an eponymous virtual table (json_each, pragma_table_info) reports this
        denied = not (arg1 == "sqlite_master" and database == "main" and trigger is None)
    else:
        denied = True
    return sqlite3.SQLITE_DENY if denied else sqlite3.SQLITE_OK


def _sha256_hex(value: object) -> str | None:
    """SQLite has no hash function: the `hash` column mask (wellhead.sql.policies) calls this."""
    if value is None:
        return None
    data = value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class _Entry:
    name: str
    info: TableInfo


class SQLiteSource(Source):
    """A SQLite file behind `mode=ro`, `query_only` and an authorizer."""

    dialect = "sqlite"
    placeholder_style = "qmark"

    def __init__(
        self,
        name: str,
        *,
        path: str,
        max_connections: int = 4,
        max_length_bytes: int = DEFAULT_MAX_LENGTH_BYTES,
        max_sql_bytes: int = DEFAULT_MAX_SQL_BYTES,
        heap_limit_bytes: int = DEFAULT_HEAP_LIMIT_BYTES,
        max_cell_bytes: int | None = DEFAULT_MAX_CELL_BYTES,
    ) -> None:
        super().__init__(name)
        self.path = os.path.abspath(os.path.expanduser(path))
        self.max_connections = max_connections
        self.max_length_bytes = max_length_bytes
        self.max_sql_bytes = max_sql_bytes
        self.heap_limit_bytes = heap_limit_bytes
        self.max_cell_bytes = max_cell_bytes
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._slots = anyio.Semaphore(max_connections)
        # Own threads: a busy default thread pool must not delay this source.
        self._limiter = anyio.CapacityLimiter(max_connections)
        self._open = False
        self._active: set[Interruptible] = set()
        self._connections = 0

    @classmethod
    def from_config(cls, name: str, config: SQLiteSourceConfig) -> SQLiteSource:
        """Every key of `sources.<name>` with kind: sqlite, so new keys need one place."""
        return cls(
            name,
            path=config.path,
            max_length_bytes=config.max_length_bytes,
            max_sql_bytes=config.max_sql_bytes,
            heap_limit_bytes=config.heap_limit_bytes,
            max_cell_bytes=config.max_cell_bytes,
        )

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        if self._open:
            return
        if not await anyio.Path(self.path).is_file():
            raise SourceUnavailable(f"source {self.name!r}: SQLite file not found: {self.path}")
        self._open = True
        try:
            conn = await anyio.to_thread.run_sync(self._connect)
        except WellheadError:
            self._open = False
            raise
        with self._lock:
            self._idle.append(conn)

    async def close(self) -> None:
        self._open = False
        for call in list(self._active):  # in-flight queries stop now, not at their deadline
            call.fire()
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            self._discard(conn)

    def _connect(self) -> sqlite3.Connection:
        uri = "file:" + urllib.parse.quote(self.path) + "?mode=ro"
        try:
            db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise SourceUnavailable(
                f"source {self.name!r}: cannot open SQLite file {self.path}: {exc}"
            ) from None
        try:
            db.execute("PRAGMA query_only = ON")
            db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, self.max_length_bytes)
            db.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, self.max_sql_bytes)
            if self.heap_limit_bytes > 0:  # process-wide; SQLite only ever lowers it
                db.execute(f"PRAGMA hard_heap_limit = {int(self.heap_limit_bytes)}")
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # is it a database?
        except sqlite3.Error as exc:
            db.close()
            raise SourceUnavailable(
                f"source {self.name!r}: {self.path} is not a usable SQLite database: {exc}"
            ) from None
        if hasattr(db, "enable_load_extension"):  # absent when Python is built without it
            db.enable_load_extension(False)
        db.create_function("wellhead_sha256", 1, _sha256_hex, deterministic=True)
        db.set_authorizer(_authorize)
        with self._lock:
            self._connections += 1
        return db

    # -- execution -----------------------------------------------------------------

    async def _run(
        self,
        sql: str,
        params: Sequence[Value],
        *,
        max_rows: int,
        timeout: float,  # noqa: ASYNC109 - the engine must be interrupted, not just awaited
        max_bytes: int | None = None,
        sink: ScanSink | None = None,
    ) -> RowBatch:
        if not self._open:
            raise SourceUnavailable(f"source {self.name!r} is not started")
        deadline = anyio.current_time() + timeout
        acquired = False
        with anyio.move_on_after(timeout):
            await self._slots.acquire()
            acquired = True
        if not acquired:
            raise PoolExhausted(
                f"source {self.name!r}: all {self.max_connections} connections stayed busy "
                f"for {timeout:g} s; retry shortly or run fewer queries at once"
            )

        def work(state: Interruptible) -> RowBatch:
            conn = self._checkout()
            try:
                return _execute(
                    conn,
                    state,
                    sql,
                    params,
                    max_rows,
                    max_bytes=max_bytes,
                    max_cell_bytes=self.max_cell_bytes,
                    setting=f"sources.{self.name}.max_cell_bytes",
                    sink=sink,
                )
            finally:
                self._checkin(conn, abandoned=state.abandoned)

        try:
            remaining = max(deadline - anyio.current_time(), 0.001)
            return await run_interruptible(
                work, _interrupt, timeout=remaining, limiter=self._limiter, active=self._active
            )
        except Deadline:
            raise timeout_error(timeout) from None
        except (sqlite3.Error, sqlite3.Warning, MemoryError) as exc:
            # the sqlite3 module raises MemoryError for SQLITE_NOMEM: the heap limit
            if not self._open:
                raise SourceUnavailable(f"source {self.name!r} was closed") from None
            raise self._engine_error(exc) from None
        except OverflowError as exc:
            raise InvalidRequest(f"a parameter does not fit SQLite: {exc}") from None
        finally:
            self._slots.release()

    def _discard(self, conn: sqlite3.Connection) -> None:
        conn.close()
        with self._lock:
            self._connections -= 1

    def pool_stats(self) -> tuple[int, int]:
        """(open connections, connections running a statement), read at metrics scrape."""
        with self._lock:
            return self._connections, self._connections - len(self._idle)

    def _checkout(self) -> sqlite3.Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _checkin(self, conn: sqlite3.Connection, *, abandoned: bool) -> None:
        """Reuse a connection only when its call ended normally and nothing is left open."""
        if abandoned or not self._open or conn.in_transaction:
            self._discard(conn)
            return
        with self._lock:
            self._idle.append(conn)

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
        return await self._run(sql, params, max_rows=max_rows, timeout=timeout, max_bytes=max_bytes)

    async def scan(
        self,
        sql: str,
        params: Sequence[Value],
        *,
        timeout: float,  # noqa: ASYNC109
        sink: ScanSink,
    ) -> None:
        await self._run(sql, params, max_rows=0, timeout=timeout, sink=sink)

    async def ping(self) -> None:
        try:
            batch = await self._run("SELECT 1", (), max_rows=1, timeout=PING_TIMEOUT)
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
        """Every row, `fetchmany` by `fetchmany`, on a pooled read-only connection."""
        if not self._open:
            raise SourceUnavailable(f"source {self.name!r} is not started")
        deadline = anyio.current_time() + timeout
        acquired = False
        with anyio.move_on_after(timeout):
            await self._slots.acquire()
            acquired = True
        if not acquired:
            raise PoolExhausted(
                f"source {self.name!r}: all {self.max_connections} connections stayed busy "
                f"for {timeout:g} s; retry shortly or run fewer queries at once"
            )

        def work(state: Interruptible) -> None:
            conn = self._checkout()
            state.attach(conn)
            cur = conn.cursor()
            try:
                if state.interrupted:
                    raise sqlite3.OperationalError("interrupted")
                cur.execute(sql, tuple(params))
                sink.begin([Column(str(d[0]), "") for d in (cur.description or [])])
                while rows := cur.fetchmany(batch_rows):
                    sink.write_rows(rows)
            finally:
                cur.close()
                state.detach()
                self._checkin(conn, abandoned=state.abandoned)

        try:
            remaining = max(deadline - anyio.current_time(), 0.001)
            await run_interruptible(
                work, _interrupt, timeout=remaining, limiter=self._limiter, active=self._active
            )
        except Deadline:
            raise timeout_error(timeout) from None
        except (sqlite3.Error, sqlite3.Warning, MemoryError) as exc:
            if not self._open:
                raise SourceUnavailable(f"source {self.name!r} was closed") from None
            raise self._engine_error(exc) from None
        except OverflowError as exc:
            raise InvalidRequest(f"a parameter does not fit SQLite: {exc}") from None
        finally:
            self._slots.release()

    # -- discovery -----------------------------------------------------------------

    async def _internal(self, sql: str, params: Sequence[Value] = ()) -> list[tuple[Value, ...]]:
        batch = await self._run(sql, params, max_rows=100_000, timeout=DISCOVERY_TIMEOUT)
        return batch.rows

    async def _entries(self) -> list[_Entry]:
        rows = await self._internal(
            "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') "
            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
        )
        estimates: dict[str, int] = {}
        has_stats = await self._internal(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'"
        )
        if has_stats:
            for table, stat in await self._internal("SELECT tbl, stat FROM sqlite_stat1"):
                count = _leading_int(stat)
                if isinstance(table, str) and count is not None:
                    estimates[table] = max(estimates.get(table, 0), count)
        return [
            _Entry(str(name), TableInfo(str(name), str(kind), estimates.get(str(name))))
            for name, kind in rows
        ]

    async def list_tables(self) -> list[TableInfo]:
        return [entry.info for entry in await self._entries()]

    async def describe_table(self, table: str, sample_rows: int) -> TableDescription:
        entries = await self._entries()
        entry = resolve(table, [(e.name, e) for e in entries], self.name)
        quoted = quote_ident(entry.name)
        info = await self._internal(f"PRAGMA table_info({quoted})")
        pk_count = sum(1 for row in info if row[5])
        columns = [
            ColumnInfo(
                name=str(name),
                type=str(dtype or ""),
                # an INTEGER PRIMARY KEY is the rowid: never NULL even without NOT NULL
                nullable=not notnull
                and not (pk and pk_count == 1 and str(dtype).upper() == "INTEGER"),
                primary_key=bool(pk),
            )
            for _cid, name, dtype, notnull, _default, pk in info
        ]
        foreign: dict[int, ForeignKey] = {}
        for fk_id, _seq, ref_table, column, ref_column, *_ in await self._internal(
            f"PRAGMA foreign_key_list({quoted})"
        ):
            fk = foreign.setdefault(int(fk_id), ForeignKey([], str(ref_table), []))
            fk.columns.append(str(column))
            if ref_column is not None:
                fk.references_columns.append(str(ref_column))
        for fk in foreign.values():
            if not fk.references_columns:  # `REFERENCES parent` means the parent's key
                fk.references_columns.extend(await self._primary_key(fk.references_table))
        samples: list[list[Value]] = []
        if sample_rows > 0:
            rows = await self._internal(f"SELECT * FROM {quoted} LIMIT {int(sample_rows)}")
            samples = [list(r) for r in rows]
        return TableDescription(
            table=entry.info,
            columns=columns,
            foreign_keys=list(foreign.values()),
            sample_rows=samples,
        )

    def _engine_error(self, exc: Exception) -> WellheadError:
        message = str(exc).strip()[:MAX_ERROR_CHARS] or type(exc).__name__
        lowered = message.lower()
        if "string or blob too big" in lowered:
            return QueryFailed(
                f"a value would exceed the {_mib(self.max_length_bytes)} length limit for one "
                "string or BLOB; narrow the query (substr, length, fewer rows in "
                f"group_concat) or raise sources.{self.name}.max_length_bytes"
            )
        if "query string is too large" in lowered or "statement too long" in lowered:
            return InvalidRequest(
                f"the statement is longer than {_mib(self.max_sql_bytes)}; shorten it or "
                f"raise sources.{self.name}.max_sql_bytes"
            )
        if isinstance(exc, MemoryError) or "out of memory" in lowered:
            return QueryFailed(
                f"memory limit of {_mib(self.heap_limit_bytes)} reached (SQLite heap, shared "
                "by every SQLite query in this server); narrow the query or raise "
                f"sources.{self.name}.heap_limit_bytes"
            )
        return _engine_error(exc)

    async def _primary_key(self, table: str) -> list[str]:
        rows = await self._internal(f"PRAGMA table_info({quote_ident(table)})")
        return [str(row[1]) for row in sorted(rows, key=lambda r: r[5]) if row[5]]


# -- helpers -------------------------------------------------------------------------


def _execute(
    conn: sqlite3.Connection,
    state: Interruptible,
    sql: str,
    params: Sequence[Value],
    max_rows: int,
    *,
    max_bytes: int | None = None,
    max_cell_bytes: int | None = DEFAULT_MAX_CELL_BYTES,
    setting: str = "max_cell_bytes",
    sink: ScanSink | None = None,
) -> RowBatch:
    state.attach(conn)
    cur = conn.cursor()
    try:
        if state.interrupted:
            raise sqlite3.OperationalError("interrupted")
        cur.execute(sql, tuple(params))
        names = [str(d[0]) for d in (cur.description or [])]
        if sink is not None:  # a snapshot: every row, in chunks
            scan_chunks(cur, sink, lambda rows: _columns(names, rows))
            return RowBatch(columns=[], rows=[], more=False)
        fetched = fetch_upto(
            cur,
            max_rows + 1,
            max_bytes=max_bytes,
            max_cell_bytes=max_cell_bytes,
            names=lambda: names,
            setting=setting,
        )
    finally:
        cur.close()
        state.detach()  # from here on a late interrupt cannot reach the next user
    rows = fetched.rows
    columns = _columns(names, rows)
    return RowBatch(
        columns=columns,
        rows=rows[:max_rows],
        more=fetched.full or len(rows) > max_rows,
        nbytes=fetched.nbytes,
    )


def _columns(names: list[str], rows: Sequence[Sequence[Value]]) -> list[Column]:
    return [Column(name, _storage_class(rows, i)) for i, name in enumerate(names)]


def _mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB" if n % (1 << 20) == 0 else f"{n:,} bytes"


def _interrupt(handle: object) -> None:
    assert isinstance(handle, sqlite3.Connection)
    handle.interrupt()


def _storage_class(rows: Sequence[Sequence[Value]], index: int) -> str:
    """SQLite reports no result types; name the storage class of the first non-NULL value."""
    for row in rows:
        value = row[index]
        if value is None:
            continue
        if isinstance(value, int):
            return "INTEGER"
        if isinstance(value, float):
            return "REAL"
        if isinstance(value, bytes):
            return "BLOB"
        return "TEXT"
    return "NULL"


def _leading_int(stat: object) -> int | None:
    head = str(stat or "").split(" ", 1)[0]
    return int(head) if head.isdigit() else None


def _engine_error(exc: Exception) -> WellheadError:
    message = str(exc).strip()[:MAX_ERROR_CHARS] or type(exc).__name__
    if any(marker in message.lower() for marker in _REFUSALS):
        return UnsafeSQL(f"the SQLite engine refused the statement (read-only source): {message}")
    return QueryFailed(message)
