"""MySQL 8 / MariaDB source: an asyncmy pool where every call is read-only, bounded, killable.

Why each piece is here:
- every session is pinned at connect and after each reset (`_mysql.session_sql`): read-only
  by default, UTC, a fixed sql_mode so the server reads quotes and comments as the safety
  check does; every statement runs in `START TRANSACTION READ ONLY` with a server-side
  deadline (MariaDB `SET STATEMENT max_statement_time = s FOR ...`, MySQL 8
  `max_execution_time`), so the engine refuses writes and stops slow reads on its own;
- rows stream from an unbuffered cursor in small chunks that stop at the page's byte budget;
  a value over `max_cell_bytes` is refused with advice;
- a call cut short (client deadline, task cancel) leaves the connection mid-protocol: its
  server thread is killed from a second connection (`KILL CONNECTION`, which kills the running
  query too) and the slot is freed only once the thread has left the processlist, so nothing
  lingers and the server never sees more than `pool_max` of our connections;
- every connection is reset before reuse with COM_RESET_CONNECTION (session and user
  variables, temporary tables, GET_LOCK locks, prepared statements, the transaction) and
  pinned again, in the background after a call that ended normally;
- `start()` checks `SHOW GRANTS` (and granted roles): an account that can write, or holds
  FILE, PROCESS, SUPER, ... is refused unless told otherwise, naming the grants to use; and
  the server must be the configured dialect (MariaDB or MySQL), which the safety check follows.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
import asyncmy
from asyncmy.constants import FIELD_TYPE
from asyncmy.cursors import Cursor, SSCursor
from asyncmy.errors import Error as MySQLError
from asyncmy.errors import OperationalError

from wellhead.errors import (
    BudgetExceeded,
    ConfigError,
    InvalidRequest,
    PoolExhausted,
    QueryCancelled,
    QueryFailed,
    QueryTimeout,
    SourceUnavailable,
)
from wellhead.sources._dbapi import (
    CHUNK_BYTES,
    SCAN_FIRST_CHUNK,
    SCAN_MAX_CHUNK,
    value_size,
)
from wellhead.sources._mysql import (
    COM_RESET_CONNECTION,
    Endpoint,
    bind,
    grant_problems,
    parse_dsn,
    session_sql,
    strip_secret,
    timed,
)
from wellhead.sources.base import (
    Column,
    ColumnInfo,
    ForeignKey,
    RowBatch,
    ScanSink,
    Source,
    TableDescription,
    TableInfo,
    Value,
)
from wellhead.sources.postgres import _scrub, redact_dsn

if TYPE_CHECKING:
    from wellhead.config import MySQLSourceConfig

log = logging.getLogger("wellhead.sources.mysql")

_CLIENT_GRACE = 0.5
"""Seconds the client waits past the server-side deadline before killing the query itself."""
_CONTROL_TIMEOUT = 5.0
_GONE_TIMEOUT = 5.0
"""How long a killed thread may take to leave the processlist before its slot is freed."""
_CHUNK_ROWS = 500
_DEFAULT_MAX_CELL_BYTES = 16 * 1024 * 1024
_ER_TIMEOUTS = {1969, 3024}  # MariaDB max_statement_time, MySQL max_execution_time
_ER_INTERRUPTED = {1317}
_ER_READ_ONLY = {1792, 1290}
_ER_GONE = {2006, 2013, 2014, 2055, 1053, 1927}
_TYPES = {
    getattr(FIELD_TYPE, name): name.lower()
    for name in dir(FIELD_TYPE)
    if name.isupper() and name not in ("CHAR", "INTERVAL")
}
_TYPE_LABELS = {
    "tiny": "tinyint",
    "short": "smallint",
    "long": "int",
    "int24": "mediumint",
    "longlong": "bigint",
    "newdecimal": "decimal",
    "var_string": "varchar",
    "string": "char",
    "newdate": "date",
    "tiny_blob": "blob",
    "medium_blob": "blob",
    "long_blob": "blob",
}
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*\Z")

_LIST_SQL = """
SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE, TABLE_ROWS, TABLE_COMMENT
FROM information_schema.TABLES
WHERE TABLE_SCHEMA IN ({schemas})
ORDER BY TABLE_SCHEMA, TABLE_NAME
"""
_TABLE_SQL = """
SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE, TABLE_ROWS, TABLE_COMMENT
FROM information_schema.TABLES
WHERE TABLE_SCHEMA IN ({schemas}) AND TABLE_NAME = %s
"""
_COLUMNS_SQL = """
SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_KEY, COLUMN_COMMENT
FROM information_schema.COLUMNS
WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s
ORDER BY ORDINAL_POSITION
"""
_FOREIGN_KEYS_SQL = """
SELECT CONSTRAINT_NAME, COLUMN_NAME, REFERENCED_TABLE_SCHEMA, REFERENCED_TABLE_NAME,
       REFERENCED_COLUMN_NAME
FROM information_schema.KEY_COLUMN_USAGE
WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND REFERENCED_TABLE_NAME IS NOT NULL
ORDER BY CONSTRAINT_NAME, ORDINAL_POSITION
"""
_ALIVE_SQL = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s"


def quote_ident(name: str) -> str:
    return name if _PLAIN.match(name) else "`" + name.replace("`", "``") + "`"


class _Pool:
    """At most `size` connections, counting those being reset or killed.

    A slot is taken before a connection is opened or handed out and given back only when the
    connection is idle again or gone from the server, so a burst of cancellations can never
    make the server hold more of our threads than the pool size.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.idle: deque[Any] = deque()
        self._slots = asyncio.Semaphore(size)
        self.in_use = 0

    async def take(self, wait: float) -> Any | None:
        """A slot (and an idle connection if one is ready, else None: open one)."""
        try:
            async with asyncio.timeout(wait):
                await self._slots.acquire()
        except TimeoutError:
            raise PoolExhausted("") from None
        self.in_use += 1
        while self.idle:
            conn = self.idle.pop()
            if conn.connected:
                return conn
        return None

    def give_back(self, conn: Any | None) -> None:
        if conn is not None:
            self.idle.append(conn)
        self.in_use -= 1
        self._slots.release()


class MySQLSource(Source):
    """A MariaDB or MySQL 8 database read through a least-privilege account."""

    placeholder_style = "qmark"

    def __init__(
        self,
        name: str,
        *,
        dsn: str,
        dialect: str = "mariadb",
        schemas: list[str] | None = None,
        pool_min: int = 1,
        pool_max: int = 10,
        acquire_timeout: float = 5.0,
        statement_timeout_ms: int | None = None,
        allow_privileged_role: bool = False,
        max_cell_bytes: int | None = _DEFAULT_MAX_CELL_BYTES,
    ) -> None:
        super().__init__(name)
        if dialect not in ("mariadb", "mysql"):
            raise ConfigError(f"source {name!r}: dialect must be mariadb or mysql")
        if pool_max < 1 or pool_min < 0 or pool_min > pool_max:
            raise ConfigError(
                f"source {name!r}: need 0 <= pool_min <= pool_max and pool_max >= 1, "
                f"got pool_min={pool_min}, pool_max={pool_max}"
            )
        if acquire_timeout <= 0:
            raise ConfigError(f"source {name!r}: acquire_timeout must be > 0 seconds")
        if schemas is not None and not schemas:
            raise ConfigError(f"source {name!r}: schemas, when given, must list at least one")
        self.dialect = dialect
        self._dsn = dsn
        self._endpoint: Endpoint = parse_dsn(dsn, name)
        self._schemas = list(schemas) if schemas else [self._endpoint.database]
        self._pool_min = pool_min
        self._pool_max = pool_max
        self._acquire_timeout = acquire_timeout
        self._statement_timeout_ms = statement_timeout_ms
        self._allow_privileged_role = allow_privileged_role
        self._max_cell_bytes = max_cell_bytes
        self._pool: _Pool | None = None
        self._settling: set[asyncio.Task[None]] = set()
        self._session = session_sql(dialect)
        self._threads: dict[int, int] = {}
        """Server thread id of each open connection (the driver may forget it on cancel)."""
        self.server_version = ""

    @classmethod
    def from_config(
        cls, name: str, config: MySQLSourceConfig, *, query_timeout_s: float
    ) -> MySQLSource:
        """Every key of a `kind: mysql` config entry, none left behind."""
        return cls(
            name,
            dsn=config.dsn,
            dialect=config.dialect,
            schemas=config.schemas,
            pool_min=config.pool.min_size,
            pool_max=config.pool.max_size,
            acquire_timeout=config.pool.acquire_timeout_s,
            statement_timeout_ms=int(query_timeout_s * 1000) + 1000,
            allow_privileged_role=config.allow_privileged_role,
            max_cell_bytes=config.max_cell_bytes,
        )

    def __repr__(self) -> str:
        return f"MySQLSource({self.name!r}, dsn={redact_dsn(self._dsn)!r})"

    @property
    def schemas(self) -> list[str]:
        return list(self._schemas)

    def pool_stats(self) -> tuple[int, int]:
        """(connections open or held, in use): read by the pool metrics at scrape time."""
        pool = self._pool
        if pool is None:
            return (0, 0)
        return (len(pool.idle) + pool.in_use, pool.in_use)

    # ---------------------------------------------------------------- lifecycle

    def _where(self) -> str:
        return f"mysql source {self.name!r} ({redact_dsn(self._dsn)})"

    async def _open(self, *, pin: bool = True) -> Any:
        """A new connection, pinned to wellhead's session settings."""
        try:
            conn = await asyncmy.connect(**self._endpoint.connect_kwargs())
        except MySQLError as exc:
            code = exc.args[0] if exc.args else None
            detail = _scrub(str(exc) or type(exc).__name__, self._dsn)
            if code in (1044, 1045, 1049, 1698):
                raise ConfigError(f"{self._where()}: {detail}") from None
            raise SourceUnavailable(f"{self._where()}: cannot connect: {detail}") from None
        except (OSError, TimeoutError) as exc:
            detail = _scrub(str(exc) or type(exc).__name__, self._dsn)
            raise SourceUnavailable(f"{self._where()}: cannot connect: {detail}") from None
        self._threads[id(conn)] = int(conn.thread_id())
        if not pin:
            return conn
        try:
            async with asyncio.timeout(_CONTROL_TIMEOUT):
                await self._execute(conn, self._session)
        except BaseException:
            conn.close()
            raise
        return conn

    async def start(self) -> None:
        if self._pool is not None:
            return
        conn = await self._open(pin=False)
        try:
            async with asyncio.timeout(_CONTROL_TIMEOUT * 4):
                await self._check_server(conn)  # before the session SET, which is dialect-bound
                await self._execute(conn, self._session)
                await self._check_schemas(conn)
                await self._check_privileges(conn)
        except BaseException:
            conn.close()
            raise
        pool = _Pool(self._pool_max)
        pool.idle.append(conn)
        try:
            for _ in range(self._pool_min - 1):
                pool.idle.append(await self._open())
        except BaseException:
            for c in pool.idle:
                c.close()
            raise
        self._pool = pool
        log.info(
            "mysql source %r ready: %s (%s), databases %s, pool %d..%d",
            self.name,
            redact_dsn(self._dsn),
            self.server_version,
            ", ".join(self._schemas),
            self._pool_min,
            self._pool_max,
        )

    async def close(self) -> None:
        if self._settling:
            await asyncio.wait(set(self._settling), timeout=_CONTROL_TIMEOUT + _GONE_TIMEOUT)
        pool, self._pool = self._pool, None
        self._threads.clear()
        if pool is not None:
            while pool.idle:
                conn = pool.idle.pop()
                try:
                    async with asyncio.timeout(1):
                        await conn.ensure_closed()
                except (Exception, asyncio.CancelledError):
                    conn.close()

    async def _check_server(self, conn: Any) -> None:
        """The server must be the configured dialect: the safety check follows it."""
        rows = await self._rows(conn, "SELECT VERSION()")
        self.server_version = version = str(rows[0][0])
        actual = "mariadb" if "mariadb" in version.lower() else "mysql"
        if actual != self.dialect:
            raise ConfigError(
                f"{self._where()}: the server is {version} ({actual}) but the source says "
                f"dialect: {self.dialect}; set dialect: {actual} so the safety check reads "
                "SQL the way this server does"
            )

    async def _check_schemas(self, conn: Any) -> None:
        marks = ", ".join(["%s"] * len(self._schemas))
        sql = f"SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN ({marks})"
        found = {r[0] for r in await self._rows(conn, sql, self._schemas)}
        missing = [s for s in self._schemas if s not in found]
        system = [s for s in self._schemas if s.lower() in _SYSTEM_SCHEMAS]
        if system:
            raise ConfigError(
                f"{self._where()}: database(s) {', '.join(system)} are server internals "
                "and cannot be exposed"
            )
        if missing:
            raise ConfigError(
                f"{self._where()}: database(s) {', '.join(missing)} do not exist or the account "
                "cannot read them; fix `schemas` or run: "
                + "; ".join(f"GRANT SELECT ON {quote_ident(s)}.* TO <reader>" for s in missing)
            )

    async def _check_privileges(self, conn: Any) -> None:
        """Refuse an account that could write or reach files, other sessions or the server."""
        lines = [str(r[0]) for r in await self._rows(conn, "SHOW GRANTS")]
        problems, roles = grant_problems(lines)
        seen: set[str] = set()
        while roles:
            role = roles.pop()
            if role in seen or len(seen) > 50:
                continue
            seen.add(role)
            try:
                more = [str(r[0]) for r in await self._rows(conn, f"SHOW GRANTS FOR {role}")]
            except QueryFailed:
                continue
            found, nested = grant_problems(more)
            problems.extend(found)
            roles.extend(nested)
        if not problems:
            return
        user = str((await self._rows(conn, "SELECT CURRENT_USER()"))[0][0])
        account = "'{}'@'{}'".format(*user.rsplit("@", 1)) if "@" in user else f"'{user}'"
        described = []
        fixes = []
        for p in problems:
            privs = ", ".join(p.privileges) if p.privileges else ""
            if privs:
                described.append(f"{privs} ON {p.target}")
                fixes.append(f"REVOKE {privs} ON {p.target} FROM {account}")
            if p.grant_option:
                described.append(f"GRANT OPTION ON {p.target}")
                fixes.append(f"REVOKE GRANT OPTION ON {p.target} FROM {account}")
        dbs = ", ".join(f"{quote_ident(s)}.*" for s in self._schemas)
        recipe = "; ".join(
            f"GRANT SELECT, SHOW VIEW ON {quote_ident(s)}.* TO <reader>" for s in self._schemas
        )
        message = (
            f"{self._where()}: account {account} can do more than read {dbs}: "
            f"{'; '.join(described[:8])}. FILE reads and writes server files (LOAD_FILE, INTO "
            "OUTFILE), PROCESS shows every session's SQL, SUPER and write privileges change the "
            f"server. Use an account with only: {recipe} (see README, Connect your "
            f"MySQL/MariaDB). To fix this one: {'; '.join(fixes[:8])}. Set "
            "allow_privileged_role: true only if you accept the risk."
        )
        if not self._allow_privileged_role:
            raise ConfigError(message)
        log.warning(
            "!!! PRIVILEGED ACCOUNT ALLOWED (allow_privileged_role: true) !!! %s "
            "wellhead still runs every statement read-only, but one bypass would be a write.",
            message,
        )

    # ---------------------------------------------------------------- health and discovery

    async def ping(self) -> None:
        try:
            await self._catalog("SELECT 1")
        except (QueryTimeout, QueryFailed) as exc:
            raise SourceUnavailable(
                f"mysql source {self.name!r} did not answer SELECT 1: {exc.public_message}"
            ) from None

    def _display(self, schema: str, table: str) -> str:
        if schema == self._endpoint.database:
            return quote_ident(table)
        return f"{quote_ident(schema)}.{quote_ident(table)}"

    def _info(self, row: Sequence[Any]) -> TableInfo:
        schema, table, kind, estimate, comment = row
        view = str(kind).upper() == "VIEW"
        return TableInfo(
            name=self._display(schema, table),
            kind="view" if view else "table",
            row_estimate=None if view or estimate is None else int(estimate),
            comment=None if view or not comment else str(comment),
        )

    async def list_tables(self) -> list[TableInfo]:
        marks = ", ".join(["%s"] * len(self._schemas))
        rows = await self._catalog(_LIST_SQL.format(schemas=marks), self._schemas)
        return [self._info(r) for r in rows]

    async def describe_table(self, table: str, sample_rows: int) -> TableDescription:
        schema, name = await self._resolve(table)
        marks = "%s"
        rows = await self._catalog(_TABLE_SQL.format(schemas=marks), [schema, name])
        if not rows:
            raise InvalidRequest(f"unknown table {table!r} in source {self.name!r}")
        info = self._info(rows[0])
        columns = [
            ColumnInfo(
                name=str(c[0]),
                type=str(c[1]),
                nullable=str(c[2]).upper() == "YES",
                primary_key=str(c[3]).upper() == "PRI",
                comment=str(c[4]) or None,
            )
            for c in await self._catalog(_COLUMNS_SQL, [schema, name])
        ]
        grouped: dict[str, ForeignKey] = {}
        for k in await self._catalog(_FOREIGN_KEYS_SQL, [schema, name]):
            fk = grouped.setdefault(
                str(k[0]), ForeignKey([], self._display(str(k[2]), str(k[3])), [])
            )
            fk.columns.append(str(k[1]))
            fk.references_columns.append(str(k[4]))
        samples: list[list[Value]] = []
        if sample_rows > 0:
            qualified = f"{quote_ident(schema)}.{quote_ident(name)}"
            batch = await self.fetch(
                f"SELECT * FROM {qualified} LIMIT {int(sample_rows)}",
                [],
                max_rows=sample_rows,
                timeout=10.0,
            )
            samples = [list(r) for r in batch.rows]
        return TableDescription(
            table=info, columns=columns, foreign_keys=list(grouped.values()), sample_rows=samples
        )

    async def _resolve(self, table: str) -> tuple[str, str]:
        """`table`, `db.table` or backtick-quoted forms, matched against what the server lists."""
        text = table.strip()
        if not text:
            raise InvalidRequest("table name is empty")
        parts = [
            (quoted.replace("``", "`") if quoted else plain.strip())
            for quoted, plain in re.findall(r"`((?:[^`]|``)*)`|([^.`]+)", text)
        ]
        if len(parts) == 2 and parts[0] in self._schemas:
            candidates = [(parts[0], parts[1])]
        elif len(parts) == 1:
            candidates = [(s, parts[0]) for s in self._schemas]
        else:
            candidates = []
        for schema, name in candidates:
            rows = await self._catalog(_TABLE_SQL.format(schemas="%s"), [schema, name])
            if rows:
                return str(rows[0][0]), str(rows[0][1])
        raise InvalidRequest(
            f"unknown table {table!r} in source {self.name!r} "
            f"(databases: {', '.join(self._schemas)}); call list_tables to see what exists"
        )

    async def _catalog(self, sql: str, args: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """A small, fully fetched read of the catalog, read-only and bounded in time."""
        conn = await self._acquire(self._acquire_timeout)
        state = "broken"
        try:
            async with asyncio.timeout(_CONTROL_TIMEOUT * 4):
                await self._execute(conn, "START TRANSACTION READ ONLY")
                rows = await self._rows(conn, sql, args)
            state = "ok"
            return rows
        except TimeoutError:
            raise QueryTimeout(
                f"mysql source {self.name!r}: catalog read took over {_CONTROL_TIMEOUT * 4:g} s"
            ) from None
        except QueryFailed:
            state = "error"
            raise
        finally:
            await self._release(conn, state)

    # ---------------------------------------------------------------- queries

    async def fetch(
        self,
        sql: str,
        params: Sequence[Value],
        *,
        max_rows: int,
        timeout: float,
        max_bytes: int | None = None,
    ) -> RowBatch:
        return await self._fetch(sql, params, max_rows, timeout, max_bytes, None)

    async def scan(
        self,
        sql: str,
        params: Sequence[Value],
        *,
        timeout: float,
        sink: ScanSink,
    ) -> None:
        """Every row of one execution to `sink`: a walk's snapshot, so its pages are one
        consistent result (and exact even where a case-insensitive collation makes the
        paging order ambiguous)."""
        await self._fetch(sql, params, 0, timeout, None, sink)

    async def _fetch(
        self,
        sql: str,
        params: Sequence[Value],
        max_rows: int,
        timeout: float,
        max_bytes: int | None,
        sink: ScanSink | None,
    ) -> RowBatch:
        if max_rows < 0:
            raise InvalidRequest(f"max_rows must be >= 0, got {max_rows}")
        if max_bytes is not None and max_bytes < 0:
            raise InvalidRequest(f"max_bytes must be >= 0, got {max_bytes}")
        if timeout <= 0:
            raise QueryTimeout(f"no time left to run the query on source {self.name!r}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        conn = await self._acquire(min(self._acquire_timeout, timeout))
        state = "broken"
        try:
            remaining = deadline - loop.time()
            if remaining <= 0.001:
                state = "ok"
                raise QueryTimeout(f"no time left to run the query on source {self.name!r}")
            server_ms = max(1, int(remaining * 1000))
            if self._statement_timeout_ms is not None:
                server_ms = min(server_ms, self._statement_timeout_ms)
            text = bind(sql, list(params), conn.escape)
            try:
                async with asyncio.timeout(server_ms / 1000 + _CLIENT_GRACE):
                    try:
                        batch = await self._run(conn, text, max_rows, server_ms, max_bytes, sink)
                    except _StaleConnection:
                        # It died while idle (server restart, wait_timeout, a KILL) before
                        # this call's statement was sent: replace it once, run on the new one.
                        conn = await self._replace(conn)
                        text = bind(sql, list(params), conn.escape)
                        batch = await self._run(conn, text, max_rows, server_ms, max_bytes, sink)
            except _StaleConnection as exc:
                raise exc.error from None
            except TimeoutError:  # the client's grace ran out: the thread is killed
                raise QueryTimeout(self._timeout_message(server_ms)) from None
            except (QueryFailed, QueryTimeout, QueryCancelled, BudgetExceeded):
                state = "error"  # the server answered with an error: the protocol is intact
                raise
            state = "ok"
            return batch
        except InvalidRequest:
            if state == "broken":
                state = "ok"  # refused before anything was sent
            raise
        finally:
            await self._release(conn, state)

    def _timeout_message(self, server_ms: int) -> str:
        return (
            f"query on source {self.name!r} exceeded {server_ms / 1000:g} s and was "
            "cancelled on the server; narrow it (WHERE, LIMIT) or raise the timeout"
        )

    async def _run(
        self,
        conn: Any,
        sql: str,
        max_rows: int,
        server_ms: int,
        max_bytes: int | None,
        sink: ScanSink | None = None,
    ) -> RowBatch:
        try:
            if self.dialect == "mysql":
                await self._execute(conn, f"SET SESSION max_execution_time = {server_ms}")
            await self._execute(conn, "START TRANSACTION READ ONLY")
        except SourceUnavailable as exc:
            raise _StaleConnection(exc) from None
        cursor = conn.cursor(SSCursor)
        try:
            try:
                await cursor.execute(timed(sql, self.dialect, server_ms))
                columns = _columns(cursor)
                if sink is not None:
                    await self._scan(cursor, columns, sink)
                    return RowBatch(columns=columns, rows=[], more=False, nbytes=0)
                rows, more, used = await self._read(cursor, columns, max_rows, max_bytes)
            except MySQLError as exc:
                raise self._translate(exc, server_ms) from None
        finally:
            try:
                await cursor.close()  # reads what is left of a bounded result
            except MySQLError:
                pass
        return RowBatch(columns=columns, rows=rows, more=more, nbytes=used)

    async def _read(
        self, cursor: Any, columns: list[Column], max_rows: int, max_bytes: int | None
    ) -> tuple[list[tuple[Value, ...]], bool, int]:
        rows: list[tuple[Value, ...]] = []
        used = 0
        chunk = 1
        while True:
            want = max(1, min(chunk, max_rows + 1 - len(rows)))
            got = await cursor.fetchmany(want)
            if not got:
                return rows, False, used
            for raw in got:
                if len(rows) >= max_rows:
                    return rows, True, used
                size = sum(self._cell_bytes(v, i, columns) for i, v in enumerate(raw))
                rows.append(tuple(raw))
                used += size + 1
                if max_bytes is not None and used >= max_bytes and len(rows) < max_rows:
                    nxt = await cursor.fetchmany(1)
                    return rows, bool(nxt), used
            width = max(used // max(len(rows), 1), 1)
            chunk = min(_CHUNK_ROWS, max(1, 65536 // width))

    async def _scan(self, cursor: Any, columns: list[Column], sink: ScanSink) -> None:
        """Every row to `sink` (in a worker thread: it encodes and writes), chunk by chunk."""
        chunk = SCAN_FIRST_CHUNK
        while True:
            got = await cursor.fetchmany(chunk)
            if not got:
                return
            rows = [tuple(raw) for raw in got]
            self._check_cells(rows, columns)
            used = await asyncio.to_thread(sink, columns, rows)
            if len(got) < chunk:
                return
            chunk = max(1, min(SCAN_MAX_CHUNK, CHUNK_BYTES * 4 // max(used // len(rows), 1)))

    def _check_cells(self, rows: list[tuple[Value, ...]], columns: list[Column]) -> None:
        if self._max_cell_bytes is None:
            return
        for row in rows:
            for index, value in enumerate(row):
                self._cell_bytes(value, index, columns)

    def _cell_bytes(self, value: Value, index: int, columns: list[Column]) -> int:
        """A value's size; over `max_cell_bytes` it is refused, naming its column."""
        cell = value_size(value)
        limit = self._max_cell_bytes
        if limit is not None and cell > limit:
            column = columns[index].name
            raise BudgetExceeded(
                f"column '{column}' holds a value of about {cell:,} bytes, more "
                f"than the {limit:,}-byte limit for one value (max_cell_bytes); "
                f"select part of it (LEFT({column}, 1000)) or its LENGTH instead"
            )
        return cell

    def _translate(self, exc: MySQLError, server_ms: int) -> Exception:
        code = exc.args[0] if exc.args else None
        message = exc.args[1] if len(exc.args) > 1 else str(exc)
        if code in _ER_TIMEOUTS:
            return QueryTimeout(self._timeout_message(server_ms))
        if code in _ER_INTERRUPTED:
            return QueryCancelled(f"the query was cancelled on the server ({message})")
        if code in _ER_READ_ONLY:
            return QueryFailed(
                "the statement tried to write, but wellhead runs every statement in a "
                f"read-only transaction ({message})"
            )
        if code in _ER_GONE or isinstance(exc, OperationalError) and code and code >= 2000:
            return SourceUnavailable(
                f"lost the connection to mysql source {self.name!r}: "
                f"{_scrub(str(message), self._dsn)}"
            )
        return QueryFailed(f"{self._product()} rejected the statement: {message} ({code})")

    def _product(self) -> str:
        return "MariaDB" if self.dialect == "mariadb" else "MySQL"

    # ---------------------------------------------------------------- connections

    async def _execute(self, conn: Any, sql: str) -> None:
        cursor = conn.cursor(Cursor)
        try:
            await cursor.execute(sql)
        except MySQLError as exc:
            raise self._translate(exc, 0) from None
        finally:
            await cursor.close()

    async def _rows(
        self, conn: Any, sql: str, args: Sequence[Any] | None = None
    ) -> list[tuple[Any, ...]]:
        cursor = conn.cursor(Cursor)
        try:
            await cursor.execute(sql, list(args) if args is not None else None)
            return [tuple(r) for r in await cursor.fetchall()]
        except MySQLError as exc:
            raise self._translate(exc, 0) from None
        finally:
            await cursor.close()

    async def _acquire(self, wait: float) -> Any:
        pool = self._pool
        if pool is None:
            raise SourceUnavailable(f"mysql source {self.name!r} is not started")
        try:
            conn = await pool.take(wait)
        except PoolExhausted:
            raise PoolExhausted(
                f"all {self._pool_max} connections of mysql source {self.name!r} were busy "
                f"for {wait:g} s; retry shortly, narrow slow queries, or raise pool.max_size"
            ) from None
        if conn is not None:
            return conn
        try:
            return await self._open()
        except BaseException:
            pool.give_back(None)
            raise

    async def _release(self, conn: Any, state: str) -> None:
        """Reset `conn` (in the background after a normal end) or kill its thread and wait.

        A call that ended normally or with a statement error does not wait: its connection
        re-enters the pool once reset. A call cut short waits, shielded from further
        cancellation, until the server thread is gone, so "cancelled" is only reported once
        nothing runs on the server any more.
        """
        work = self._settle(conn) if state != "broken" else self._kill(conn)
        task = asyncio.ensure_future(work)
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)
        if state != "broken":
            return
        cancelled: asyncio.CancelledError | None = None
        with anyio.CancelScope(shield=True):
            while not task.done():
                try:
                    await asyncio.shield(task)
                except asyncio.CancelledError as exc:
                    cancelled = cancelled or exc
        if cancelled is not None:
            raise cancelled

    async def _replace(self, conn: Any) -> Any:
        """A fresh connection in the slot of a dead one (whose thread id is forgotten first,
        so no later KILL can hit a thread the server gave to someone else)."""
        self._threads.pop(id(conn), None)
        conn.close()
        return await self._open()

    async def _settle(self, conn: Any) -> None:
        pool = self._pool
        try:
            if pool is None or not conn.connected:
                raise ConnectionError("pool closed or connection lost")
            async with asyncio.timeout(_CONTROL_TIMEOUT):
                await reset_connection(conn)
                await self._execute(conn, self._session)
        except (Exception, asyncio.CancelledError):
            await self._kill(conn)
            return
        pool.give_back(conn)

    async def _kill(self, conn: Any) -> None:
        """Kill the connection's server thread from a second connection; free the slot once
        the thread has left the processlist (the pool never outgrows its size)."""
        thread = self._threads.pop(id(conn), None)
        try:
            if thread is not None:
                async with asyncio.timeout(_CONTROL_TIMEOUT + _GONE_TIMEOUT):
                    control = await asyncmy.connect(**self._endpoint.connect_kwargs())
                    try:
                        await self._execute(control, f"KILL CONNECTION {int(thread)}")
                    except QueryFailed:
                        pass  # already gone (ER_NO_SUCH_THREAD)
                    try:
                        for _ in range(int(_GONE_TIMEOUT / 0.02)):
                            if not (await self._rows(control, _ALIVE_SQL, [thread]))[0][0]:
                                break
                            await asyncio.sleep(0.02)
                    finally:
                        control.close()
        except (Exception, asyncio.CancelledError) as exc:
            log.warning(
                "mysql source %r: could not confirm thread %s ended: %s",
                self.name,
                thread,
                _scrub(str(exc) or type(exc).__name__, self._dsn),
            )
        conn.close()
        pool = self._pool
        if pool is not None:
            pool.give_back(None)


class _StaleConnection(Exception):
    """The connection failed before the call's statement was sent: safe to retry once."""

    def __init__(self, error: SourceUnavailable) -> None:
        super().__init__(str(error))
        self.error = error


async def reset_connection(conn: Any) -> None:
    """COM_RESET_CONNECTION: the server forgets everything the session did."""
    await conn._execute_command(COM_RESET_CONNECTION, b"")
    await conn._read_ok_packet()


_SYSTEM_SCHEMAS = frozenset({"mysql", "information_schema", "performance_schema", "sys"})


def _columns(cursor: Any) -> list[Column]:
    out = []
    for index, d in enumerate(cursor.description or ()):
        name = _TYPES.get(d[1], "unknown")
        label = _TYPE_LABELS.get(name, name)
        if label == "blob" or label in ("varchar", "char"):
            label = _text_or_binary(cursor, index, label)
        out.append(Column(str(d[0]), label))
    return out


def _text_or_binary(cursor: Any, index: int, label: str) -> str:
    """BLOB/TEXT and VARBINARY/VARCHAR share a type code; charset 63 means binary."""
    try:
        charset = cursor._result.fields[index].charsetnr
    except (AttributeError, IndexError):
        return label
    if charset == 63:
        return {"blob": "blob", "varchar": "varbinary", "char": "binary"}[label]
    return "text" if label == "blob" else label


_ = strip_secret  # re-exported for callers that show grants
