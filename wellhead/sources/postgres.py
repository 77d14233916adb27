"""PostgreSQL source: an asyncpg pool where every call is read-only, bounded and cancellable.

Why each piece is here:
- every statement runs in `BEGIN READ ONLY` with `SET LOCAL statement_timeout`, and the session
  default is read-only too, so the engine refuses writes even if the SQL layer misses one;
- rows come from a server-side portal (`max_rows + 1` at a time), never a fetchall;
- on a deadline or a cancelled task asyncpg sends a protocol cancel and the pool waits for it
  before the connection is reused, so no query keeps running on the server;
- each connection is `DISCARD ALL`-ed before reuse: no SET, temp table, prepared statement,
  advisory lock or GUC leaks from one caller to the next;
- `start()` refuses a role that could write, unless told otherwise, and says which grants to use.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import json
import logging
import re
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

import asyncpg

from wellhead.errors import (
    ConfigError,
    InvalidRequest,
    PoolExhausted,
    QueryCancelled,
    QueryFailed,
    QueryTimeout,
    SourceUnavailable,
)
from wellhead.sources.base import (
    Column,
    ColumnInfo,
    ForeignKey,
    RowBatch,
    Source,
    TableDescription,
    TableInfo,
    Value,
)

log = logging.getLogger("wellhead.sources.postgres")

_SYSTEM_SCHEMA = r"^(pg_catalog|information_schema|pg_toast.*|pg_temp_.*)$"
_RELKINDS = {"r": "table", "p": "table", "f": "table", "v": "view", "m": "materialized view"}
_CLIENT_GRACE = 0.5
"""Seconds the client waits past the server's statement_timeout before cancelling itself."""
_CONTROL_TIMEOUT = 5.0
"""Bound on bookkeeping round trips (BEGIN, ROLLBACK, catalog reads at start)."""


# --------------------------------------------------------------------------- DSN redaction


def _dsn_password(dsn: str) -> str | None:
    """The password written in a URL or key=value DSN, if any."""
    m = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://([^?#]*)@", dsn)
    if m and ":" in m.group(1):
        return m.group(1).split(":", 1)[1]
    m = re.search(r"(?:^|[?&\s])password=('(?:[^'\\]|\\.)*'|[^&\s]*)", dsn)
    if m:
        return m.group(1).strip("'")
    return None


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced by `***`: the only form of a DSN we ever log or show."""
    out = re.sub(
        r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@]*):[^?#]*@",
        lambda m: m.group(1) + ":***@",
        dsn,
    )
    return re.sub(r"((?:^|[?&\s])password=)('(?:[^'\\]|\\.)*'|[^&\s]*)", r"\1***", out)


def _scrub(text: str, dsn: str) -> str:
    """Remove the DSN's password from a driver message, in case the driver echoed it."""
    secret = _dsn_password(dsn)
    if secret:
        for form in {secret, unquote(secret)}:
            if form:
                text = text.replace(form, "***")
    return text


# --------------------------------------------------------------------------- catalog SQL

_SCHEMAS_SQL = """
SELECT n.nspname
FROM pg_namespace n
WHERE n.nspname !~ $1 AND has_schema_privilege(n.oid, 'USAGE')
ORDER BY n.nspname
"""

_MISSING_SCHEMAS_SQL = """
SELECT s FROM unnest($1::text[]) AS s
WHERE NOT EXISTS (
    SELECT 1 FROM pg_namespace n WHERE n.nspname = s AND has_schema_privilege(n.oid, 'USAGE')
)
"""

_PRIVILEGES_SQL = """
WITH rels AS (
    SELECT c.oid, c.relowner, quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'p', 'f', 'v', 'm')
)
SELECT 'superuser' AS problem, quote_ident(current_user) AS object
    FROM pg_roles WHERE rolname = current_user AND rolsuper
UNION ALL
SELECT 'create_database', quote_ident(current_database())
    WHERE has_database_privilege(current_database(), 'CREATE')
UNION ALL
SELECT 'create_schema', quote_ident(n.nspname)
    FROM pg_namespace n
    WHERE n.nspname = ANY($1::text[]) AND has_schema_privilege(n.oid, 'CREATE')
UNION ALL
SELECT 'owner', name FROM rels WHERE pg_has_role(relowner, 'USAGE')
UNION ALL
SELECT 'write', name FROM rels WHERE has_table_privilege(oid, 'INSERT, UPDATE, DELETE, TRUNCATE')
ORDER BY 1, 2
"""

_LIST_SQL = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name,
       c.relkind::text AS relkind,
       CASE WHEN c.relkind = 'p' THEN (
                SELECT sum(greatest(ch.reltuples, 0))::bigint
                FROM pg_inherits i JOIN pg_class ch ON ch.oid = i.inhrelid
                WHERE i.inhparent = c.oid)
            WHEN c.reltuples < 0 THEN NULL
            ELSE c.reltuples::bigint END AS row_estimate,
       d.description AS comment
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_description d
       ON d.objoid = c.oid AND d.classoid = 'pg_class'::regclass AND d.objsubid = 0
WHERE n.nspname = ANY($1::text[])
  AND c.relkind IN ('r', 'p', 'f', 'v', 'm')
  AND NOT c.relispartition
  AND has_table_privilege(c.oid, 'SELECT')
ORDER BY 1
"""

_RESOLVE_REGCLASS_SQL = """
SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = to_regclass($1) AND n.nspname = ANY($2::text[])
  AND c.relkind IN ('r', 'p', 'f', 'v', 'm') AND has_table_privilege(c.oid, 'SELECT')
"""

_RESOLVE_BY_NAME_SQL = """
SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname = $1 AND n.nspname = ANY($2::text[])
  AND c.relkind IN ('r', 'p', 'f', 'v', 'm') AND has_table_privilege(c.oid, 'SELECT')
ORDER BY array_position($2::text[], n.nspname::text)
"""

_TABLE_SQL = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name,
       c.relkind::text AS relkind,
       CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END AS row_estimate,
       obj_description(c.oid, 'pg_class') AS comment
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = $1
"""

_COLUMNS_SQL = """
SELECT a.attname AS name,
       format_type(a.atttypid, a.atttypmod) AS type,
       NOT a.attnotnull AS nullable,
       EXISTS (SELECT 1 FROM pg_constraint k
               WHERE k.conrelid = a.attrelid AND k.contype = 'p'
                 AND a.attnum = ANY(k.conkey)) AS primary_key,
       col_description(a.attrelid, a.attnum) AS comment
FROM pg_attribute a
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

_FOREIGN_KEYS_SQL = """
SELECT k.conname,
       ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(num, i)
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.num
             ORDER BY u.i)::text[] AS columns,
       quote_ident(rn.nspname) || '.' || quote_ident(r.relname) AS references_table,
       ARRAY(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY u(num, i)
             JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.num
             ORDER BY u.i)::text[] AS references_columns
FROM pg_constraint k
JOIN pg_class r ON r.oid = k.confrelid
JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE k.conrelid = $1 AND k.contype = 'f'
ORDER BY k.conname
"""


# --------------------------------------------------------------------------- parameters


def _coerce_param(value: Value, type_name: str, index: int) -> Value:
    """Turn JSON-ish agent values into what asyncpg's binary codecs expect for `type_name`."""
    if value is None:
        return None
    try:
        if type_name in ("json", "jsonb"):
            return value if isinstance(value, str) else json.dumps(value)
        if not isinstance(value, str):
            if type_name == "numeric" and isinstance(value, int | float):
                return decimal.Decimal(str(value))
            if type_name in ("float4", "float8") and isinstance(value, int):
                return float(value)
            return value
        if type_name in ("int2", "int4", "int8", "oid"):
            return int(value)
        if type_name in ("float4", "float8"):
            return float(value)
        if type_name == "numeric":
            return decimal.Decimal(value)
        if type_name == "bool":
            lowered = value.strip().lower()
            if lowered in ("true", "t", "yes", "on", "1"):
                return True
            if lowered in ("false", "f", "no", "off", "0"):
                return False
            raise ValueError(value)
        if type_name == "date":
            return dt.date.fromisoformat(value)
        if type_name in ("timestamp", "timestamptz"):
            return dt.datetime.fromisoformat(value)
        if type_name in ("time", "timetz"):
            return dt.time.fromisoformat(value)
        if type_name == "uuid":
            return uuid.UUID(value)
    except (ValueError, ArithmeticError) as exc:
        raise InvalidRequest(f"parameter ${index} must be a {type_name}, got {value!r}") from exc
    return value


def _type_label(t: Any) -> str:
    """`int8`, `numeric`, `int4[]`: the type name as asyncpg reports it, arrays spelled with []."""
    name = str(t.name)
    if t.kind == "array" and name.startswith("_"):
        return name[1:] + "[]"
    return name


def _summarise(objects: list[str], limit: int = 5) -> str:
    shown = ", ".join(objects[:limit])
    return shown + (f" and {len(objects) - limit} more" if len(objects) > limit else "")


# --------------------------------------------------------------------------- the source


class PostgresSource(Source):
    """A PostgreSQL database read through a least-privilege role."""

    dialect = "postgres"
    placeholder_style = "dollar"

    def __init__(
        self,
        name: str,
        *,
        dsn: str,
        schemas: list[str] | None = None,
        pool_min: int = 1,
        pool_max: int = 10,
        acquire_timeout: float = 5.0,
        statement_timeout_ms: int | None = None,
        allow_privileged_role: bool = False,
    ) -> None:
        super().__init__(name)
        if pool_max < 1 or pool_min < 0 or pool_min > pool_max:
            raise ConfigError(
                f"source {name!r}: need 0 <= pool_min <= pool_max and pool_max >= 1, "
                f"got pool_min={pool_min}, pool_max={pool_max}"
            )
        if acquire_timeout <= 0:
            raise ConfigError(f"source {name!r}: acquire_timeout must be > 0 seconds")
        if statement_timeout_ms is not None and statement_timeout_ms <= 0:
            raise ConfigError(f"source {name!r}: statement_timeout_ms must be > 0")
        if schemas is not None and not schemas:
            raise ConfigError(f"source {name!r}: schemas, when given, must list at least one")
        self._dsn = dsn
        self._configured_schemas = list(schemas) if schemas is not None else None
        self._pool_min = pool_min
        self._pool_max = pool_max
        self._acquire_timeout = acquire_timeout
        self._statement_timeout_ms = statement_timeout_ms
        self._allow_privileged_role = allow_privileged_role
        self._pool: asyncpg.Pool | None = None
        self._schemas: list[str] = []

    def __repr__(self) -> str:
        return f"PostgresSource({self.name!r}, dsn={redact_dsn(self._dsn)!r})"

    @property
    def schemas(self) -> list[str]:
        """The schemas exposed to agents (known after `start()`)."""
        return list(self._schemas)

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self._pool is not None:
            return
        where = f"postgres source {self.name!r} ({redact_dsn(self._dsn)})"
        try:
            pool = await asyncpg.create_pool(
                dsn=self._dsn,
                min_size=self._pool_min,
                max_size=self._pool_max,
                # Named statements would not survive DISCARD ALL; unnamed ones need no cache.
                statement_cache_size=0,
                timeout=self._acquire_timeout + _CONTROL_TIMEOUT,
                reset=_discard_all,
                server_settings={
                    "application_name": f"wellhead:{self.name}"[:63],
                    # Startup-packet settings survive RESET ALL: read-only stays the default.
                    "default_transaction_read_only": "on",
                },
            )
        except (
            asyncpg.InvalidAuthorizationSpecificationError,
            asyncpg.InvalidCatalogNameError,
        ) as exc:
            raise ConfigError(f"{where}: {_scrub(str(exc), self._dsn)}") from None
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            detail = _scrub(str(exc) or type(exc).__name__, self._dsn)
            raise SourceUnavailable(f"{where}: cannot connect: {detail}") from None
        try:
            async with pool.acquire(timeout=self._acquire_timeout) as conn:
                async with asyncio.timeout(_CONTROL_TIMEOUT * 4):
                    self._schemas = await self._resolve_schemas(conn)
                    await self._check_privileges(conn)
        except BaseException:
            await _close_pool(pool)
            raise
        self._pool = pool
        log.info(
            "postgres source %r ready: %s, schemas %s, pool %d..%d",
            self.name,
            redact_dsn(self._dsn),
            ", ".join(self._schemas) or "(none)",
            self._pool_min,
            self._pool_max,
        )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await _close_pool(pool)

    async def _resolve_schemas(self, conn: asyncpg.Connection) -> list[str]:
        if self._configured_schemas is None:
            return [r["nspname"] for r in await conn.fetch(_SCHEMAS_SQL, _SYSTEM_SCHEMA)]
        missing = [r["s"] for r in await conn.fetch(_MISSING_SCHEMAS_SQL, self._configured_schemas)]
        if missing:
            role = await conn.fetchval("SELECT quote_ident(current_user)")
            grants = "; ".join(f"GRANT USAGE ON SCHEMA {s} TO {role}" for s in missing)
            raise ConfigError(
                f"postgres source {self.name!r}: schema(s) {', '.join(missing)} do not exist "
                f"or role {role} cannot use them; fix the `schemas` list or run: {grants}"
            )
        return list(self._configured_schemas)

    async def _check_privileges(self, conn: asyncpg.Connection) -> None:
        """Refuse a role that could change data: the engine must not rely on our SQL checks."""
        rows = await conn.fetch(_PRIVILEGES_SQL, self._schemas)
        if not rows:
            return
        role = await conn.fetchval("SELECT quote_ident(current_user)")
        db = await conn.fetchval("SELECT quote_ident(current_database())")
        found: dict[str, list[str]] = {}
        for r in rows:
            found.setdefault(r["problem"], []).append(r["object"])
        problems: list[str] = []
        fixes: list[str] = []
        if "superuser" in found:
            problems.append(f"role {role} is a superuser")
            fixes.append(
                f"connect as a dedicated non-superuser role (ALTER ROLE {role} NOSUPERUSER)"
            )
        if "create_database" in found:
            problems.append(f"it can CREATE in database {db}")
            fixes.append(f"REVOKE CREATE ON DATABASE {db} FROM {role}")
        if "create_schema" in found:
            schemas = found["create_schema"]
            problems.append(f"it can CREATE in schema(s) {_summarise(schemas)}")
            fixes.extend(f"REVOKE CREATE ON SCHEMA {s} FROM {role}, PUBLIC" for s in schemas[:5])
        if "owner" in found:
            problems.append(f"it owns {_summarise(found['owner'])}")
            fixes.append("leave ownership to another role (ALTER TABLE ... OWNER TO <owner>)")
        if "write" in found:
            tables = found["write"]
            problems.append(f"it can INSERT/UPDATE/DELETE/TRUNCATE {_summarise(tables)}")
            schemas = sorted({t.rsplit(".", 1)[0] for t in tables})
            fixes.extend(
                f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA {s} FROM {role}"
                for s in schemas[:5]
            )
        schema_list = ", ".join(self._schemas) or "<schema>"
        recipe = (
            f"GRANT CONNECT ON DATABASE {db} TO <reader>; "
            f"GRANT USAGE ON SCHEMA {schema_list} TO <reader>; "
            f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema_list} TO <reader>"
        )
        message = (
            f"postgres source {self.name!r} ({redact_dsn(self._dsn)}): the role can change data: "
            f"{'; '.join(problems)}. Use a read-only role instead: {recipe} "
            f"(see docs/postgres.md). To fix this role: {'; '.join(fixes)}. "
            f"Set allow_privileged_role: true only if you accept the risk."
        )
        if not self._allow_privileged_role:
            raise ConfigError(message)
        log.warning(
            "!!! PRIVILEGED ROLE ALLOWED (allow_privileged_role: true) !!! %s "
            "wellhead still runs every statement read-only, but one bypass would be a write.",
            message,
        )

    # ---------------------------------------------------------------- health and discovery

    async def ping(self) -> None:
        pool = self._require_pool()
        try:
            async with asyncio.timeout(self._acquire_timeout + _CONTROL_TIMEOUT):
                async with pool.acquire() as conn:
                    await conn.fetchval("SELECT 1")
        except TimeoutError:
            raise SourceUnavailable(
                f"postgres source {self.name!r} did not answer SELECT 1 within "
                f"{self._acquire_timeout + _CONTROL_TIMEOUT:g} s"
            ) from None
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            detail = _scrub(str(exc), self._dsn)
            raise SourceUnavailable(
                f"postgres source {self.name!r} is unavailable: {detail}"
            ) from None

    async def list_tables(self) -> list[TableInfo]:
        rows = await self._catalog(_LIST_SQL, self._schemas)
        return [
            TableInfo(
                name=r["name"],
                kind=_RELKINDS[r["relkind"]],
                row_estimate=r["row_estimate"],
                comment=r["comment"],
            )
            for r in rows
        ]

    async def describe_table(self, table: str, sample_rows: int) -> TableDescription:
        oid = await self._resolve_table(table)
        info_rows = await self._catalog(_TABLE_SQL, oid)
        if not info_rows:  # dropped between the two reads
            raise InvalidRequest(f"unknown table {table!r} in source {self.name!r}")
        r = info_rows[0]
        info = TableInfo(
            name=r["name"],
            kind=_RELKINDS[r["relkind"]],
            row_estimate=r["row_estimate"],
            comment=r["comment"],
        )
        columns = [
            ColumnInfo(
                name=c["name"],
                type=c["type"],
                nullable=c["nullable"],
                primary_key=c["primary_key"],
                comment=c["comment"],
            )
            for c in await self._catalog(_COLUMNS_SQL, oid)
        ]
        fks = [
            ForeignKey(
                columns=list(f["columns"]),
                references_table=f["references_table"],
                references_columns=list(f["references_columns"]),
            )
            for f in await self._catalog(_FOREIGN_KEYS_SQL, oid)
        ]
        samples: list[list[Value]] = []
        if sample_rows > 0:
            batch = await self.fetch(
                f"SELECT * FROM {info.name} LIMIT {int(sample_rows)}",
                [],
                max_rows=sample_rows,
                timeout=self._sample_timeout(),
            )
            samples = [list(row) for row in batch.rows]
        return TableDescription(table=info, columns=columns, foreign_keys=fks, sample_rows=samples)

    async def _resolve_table(self, table: str) -> int:
        """`schema.table`, a quoted name, or a bare name found in search_path / exposed schemas."""
        name = table.strip()
        if not name:
            raise InvalidRequest("table name is empty")
        try:
            rows = await self._catalog(_RESOLVE_REGCLASS_SQL, name, self._schemas)
        except QueryFailed as exc:
            raise InvalidRequest(f"invalid table name {table!r}: {exc.public_message}") from None
        if rows:
            return int(rows[0]["oid"])
        if "." not in name and '"' not in name:
            matches = await self._catalog(_RESOLVE_BY_NAME_SQL, name.lower(), self._schemas)
            if not matches and name != name.lower():
                matches = await self._catalog(_RESOLVE_BY_NAME_SQL, name, self._schemas)
            if len(matches) == 1:
                return int(matches[0]["oid"])
            if len(matches) > 1:
                options = ", ".join(m["name"] for m in matches)
                raise InvalidRequest(f"table {table!r} is ambiguous: use one of {options}")
        raise InvalidRequest(
            f"unknown table {table!r} in source {self.name!r} "
            f"(schemas: {', '.join(self._schemas)}); call list_tables to see what exists"
        )

    def _sample_timeout(self) -> float:
        if self._statement_timeout_ms is not None:
            return min(10.0, self._statement_timeout_ms / 1000)
        return 10.0

    async def _catalog(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """A fully fetched catalog read (small results by construction), read-only and bounded."""
        conn = await self._acquire(self._acquire_timeout)
        try:
            try:
                async with asyncio.timeout(_CONTROL_TIMEOUT * 4):
                    async with conn.transaction(readonly=True):
                        return list(await conn.fetch(sql, *args))
            except TimeoutError:
                raise QueryTimeout(
                    f"postgres source {self.name!r}: catalog read took over "
                    f"{_CONTROL_TIMEOUT * 4:g} s"
                ) from None
            except asyncpg.PostgresError as exc:
                raise QueryFailed(f"PostgreSQL: {exc}") from None
        finally:
            await self._release(conn)

    # ---------------------------------------------------------------- queries

    async def fetch(
        self, sql: str, params: Sequence[Value], *, max_rows: int, timeout: float
    ) -> RowBatch:
        if max_rows < 0:
            raise InvalidRequest(f"max_rows must be >= 0, got {max_rows}")
        if timeout <= 0:
            raise QueryTimeout(f"no time left to run the query on source {self.name!r}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        conn = await self._acquire(min(self._acquire_timeout, timeout))
        try:
            remaining = deadline - loop.time()
            if remaining <= 0.001:
                raise QueryTimeout(f"no time left to run the query on source {self.name!r}")
            server_ms = max(1, int(remaining * 1000))
            if self._statement_timeout_ms is not None:
                server_ms = min(server_ms, self._statement_timeout_ms)
            try:
                async with asyncio.timeout(server_ms / 1000 + _CLIENT_GRACE):
                    return await self._run(conn, sql, list(params), max_rows, server_ms)
            except TimeoutError:
                raise QueryTimeout(
                    f"query on source {self.name!r} exceeded {server_ms / 1000:g} s and was "
                    f"cancelled on the server; narrow it (WHERE, LIMIT) or raise the timeout"
                ) from None
        finally:
            # asyncpg waits for a pending protocol cancel, rolls back, then runs _discard_all.
            await self._release(conn)

    async def _run(
        self,
        conn: asyncpg.Connection,
        sql: str,
        params: list[Value],
        max_rows: int,
        server_ms: int,
    ) -> RowBatch:
        # `SELECT 1` takes the transaction's first snapshot: from then on PostgreSQL refuses
        # any attempt (SET TRANSACTION, set_config, a DO block) to turn it read-write.
        await conn.execute(
            f"BEGIN TRANSACTION READ ONLY; SET LOCAL statement_timeout = {server_ms}; SELECT 1"
        )
        try:
            stmt = await conn.prepare(sql)
            expected = stmt.get_parameters()
            if len(params) != len(expected):
                raise InvalidRequest(
                    f"the statement takes {len(expected)} parameter(s) ($1..${len(expected)}), "
                    f"got {len(params)}"
                )
            args = [
                _coerce_param(v, t.name, i + 1)
                for i, (v, t) in enumerate(zip(params, expected, strict=True))
            ]
            columns = [Column(a.name, _type_label(a.type)) for a in stmt.get_attributes()]
            cursor = await stmt.cursor(*args)
            records = await cursor.fetch(max_rows + 1)
            if not conn.is_in_transaction():
                raise QueryFailed(
                    "the statement tried to end wellhead's read-only transaction "
                    "(COMMIT/ROLLBACK/END are not allowed)"
                )
        except asyncpg.ReadOnlySQLTransactionError as exc:
            raise QueryFailed(
                "the statement tried to write, but wellhead runs every statement in a read-only "
                f"transaction (PostgreSQL: {exc})"
            ) from None
        except asyncpg.QueryCanceledError as exc:
            if "statement timeout" in str(exc):
                raise QueryTimeout(
                    f"query on source {self.name!r} exceeded {server_ms / 1000:g} s and was "
                    f"cancelled on the server; narrow it (WHERE, LIMIT) or raise the timeout"
                ) from None
            raise QueryCancelled(
                f"the query was cancelled on the server (PostgreSQL: {exc})"
            ) from None
        except (
            asyncpg.PostgresConnectionError,
            asyncpg.AdminShutdownError,
            asyncpg.CrashShutdownError,
            asyncpg.CannotConnectNowError,
        ) as exc:
            raise SourceUnavailable(
                f"postgres source {self.name!r} dropped the connection: {exc}"
            ) from None
        except asyncpg.DataError as exc:
            raise InvalidRequest(f"bad parameter: {exc}") from None
        except asyncpg.PostgresError as exc:
            raise QueryFailed(_describe_error(exc)) from None
        except (OSError, asyncpg.InterfaceError) as exc:
            detail = _scrub(str(exc), self._dsn)
            raise SourceUnavailable(
                f"lost the connection to postgres source {self.name!r}: {detail}"
            ) from None
        finally:
            await _rollback(conn)
        more = len(records) > max_rows
        rows = [tuple(r) for r in records[:max_rows]]
        return RowBatch(columns=columns, rows=rows, more=more)

    # ---------------------------------------------------------------- pool plumbing

    def _require_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise SourceUnavailable(f"postgres source {self.name!r} is not started")
        return self._pool

    async def _acquire(self, wait: float) -> asyncpg.Connection:
        pool = self._require_pool()
        try:
            return await pool.acquire(timeout=wait)
        except TimeoutError:
            raise PoolExhausted(
                f"all {self._pool_max} connections of postgres source {self.name!r} were busy "
                f"for {wait:g} s; retry shortly, narrow slow queries, or raise pool_max"
            ) from None
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise SourceUnavailable(
                f"postgres source {self.name!r} ({redact_dsn(self._dsn)}) is unavailable: "
                f"{_scrub(str(exc), self._dsn)}"
            ) from None

    async def _release(self, conn: asyncpg.Connection) -> None:
        pool = self._pool
        if pool is None:  # closed while we ran
            _terminate(conn)
            return
        await pool.release(conn, timeout=_CONTROL_TIMEOUT)


def _describe_error(exc: asyncpg.PostgresError) -> str:
    """The server's message; asyncpg's str() already appends DETAIL and HINT lines."""
    return f"PostgreSQL rejected the statement: {exc}"


async def _rollback(conn: asyncpg.Connection) -> None:
    """End the read-only transaction; a connection that cannot is dropped, never reused.

    A failure here is not reported: the caller already has its rows or its own error.
    """
    try:
        if conn.is_closed():
            return
        async with asyncio.timeout(_CONTROL_TIMEOUT):
            await conn.execute("ROLLBACK")
    except asyncio.CancelledError:
        _terminate(conn)
        raise
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        _terminate(conn)


def _terminate(conn: asyncpg.Connection) -> None:
    try:
        conn.terminate()
    except asyncpg.InterfaceError:  # the pool already took the dead connection back
        pass


async def _discard_all(conn: asyncpg.Connection) -> None:
    """Pool reset: nothing a caller did to the session survives into the next caller's call."""
    await conn.execute("DISCARD ALL")


async def _close_pool(pool: asyncpg.Pool) -> None:
    try:
        async with asyncio.timeout(_CONTROL_TIMEOUT):
            await pool.close()
    except (Exception, asyncio.CancelledError):
        pool.terminate()
        raise
