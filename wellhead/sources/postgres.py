"""PostgreSQL source: an asyncpg pool where every call is read-only, bounded and cancellable.

Why each piece is here:
- every statement runs in `BEGIN READ ONLY` with `SET LOCAL statement_timeout`, `work_mem` and
  `temp_file_limit`, sent as one simple query, and the session default is read-only too, so
  the engine refuses writes even if the SQL layer misses one;
- rows come from a server-side portal in bounded chunks (`max_rows + 1` rows, stopping early
  at `max_bytes`), never a fetchall; a cell over `max_cell_bytes` is refused with advice;
- every way a call can end early (deadline, a cancelled task or anyio cancel scope, a client
  that went away) ends in `_settle`: in its own task, beyond the caller's cancellation, it
  waits for asyncpg's protocol cancel to be acknowledged, rolls back and resets; a backend that
  does not get idle in time is terminated from a control connection and its slot is freed only
  once it is gone, so no query keeps running and the pool never holds more than `pool_max`
  backends (before, a re-cancelled clean-up dropped the socket and left the backend running);
- each connection is cleaned before reuse in the same round trip as the ROLLBACK
  (`_pg.END_CALL_SQL`: the rollback undoes SET, role, cursors, temp tables and LISTEN; advisory
  locks and SQL-prepared statements are removed explicitly), keeping asyncpg's prepared
  statements, so a repeated statement costs no Parse round trip; a connection taken from the
  pool by other code gets the full `_pg.RESET_SQL`;
- `start()` refuses a role that could write, unless told otherwise, and says which grants to use;
- with `roles`, every statement (catalog reads included) runs after `SET LOCAL ROLE` of the
  role the caller maps to (`wellhead.governance.roles`), in the same round trip as `BEGIN`, so
  grants and row-level security apply per caller; the rollback that ends each call undoes it,
  and `start()` checks each mapped role like the login role.
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
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import anyio
import asyncpg

from wellhead.errors import (
    AccessDenied,
    ConfigError,
    InvalidRequest,
    PoolExhausted,
    QueryCancelled,
    QueryFailed,
    QueryTimeout,
    SourceUnavailable,
)
from wellhead.governance.principal import current_principal
from wellhead.governance.roles import RolesConfig, quote_role, resolve_role
from wellhead.sources._pg import (
    RESET_SQL,
    ROLLBACK_AND_RESET_SQL,
    RowReader,
    begin_sql,
    cached_statement,
    drop_statement_cache,
    end_call,
    init_connection,
    parse_iso_duration,
    setting_literal,
)
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

if TYPE_CHECKING:
    from wellhead.config import PostgresSourceConfig

log = logging.getLogger("wellhead.sources.postgres")

_SYSTEM_SCHEMA = r"^(pg_catalog|information_schema|pg_toast.*|pg_temp_.*)$"
_RELKINDS = {"r": "table", "p": "table", "f": "table", "v": "view", "m": "materialized view"}
_CLIENT_GRACE = 0.5
"""Seconds the client waits past the server's statement_timeout before cancelling itself."""
_CONTROL_TIMEOUT = 5.0
"""Bound on bookkeeping round trips (BEGIN, ROLLBACK, catalog reads at start)."""
_SETTLE_TIMEOUT = 5.0
"""How long a cancelled backend may take to get idle before it is terminated instead."""
_GONE_TIMEOUT = 5.0
"""How long a terminated backend may take to leave pg_stat_activity before its slot is freed."""
_BACKEND_ALIVE_SQL = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1"
_ROLE_MEMBER_SQL = (
    "SELECT pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles WHERE rolname = $1"
)
"""NULL: no such role; false: the login role is not a member of it."""
_STATEMENT_CACHE = 256
_COPY_SETTINGS_SQL = (
    "SET LOCAL TimeZone = 'UTC'; SET LOCAL IntervalStyle = 'iso_8601'; "
    "SET LOCAL DateStyle = 'ISO, YMD'"
)
_COPY_FLUSH_BYTES = 1 << 20
"""CSV from COPY is written to the file a MiB at a time, in a worker thread."""
_STREAM_FETCH_ROWS = 2_000
"""Rows per cursor round trip while streaming an export (asyncpg decodes them on the loop)."""
"""asyncpg prepared statements kept per connection (the reset keeps them)."""
DEFAULT_WORK_MEM = "64MB"
DEFAULT_TEMP_FILE_LIMIT = "1GB"
DEFAULT_MAX_CELL_BYTES = 16 * 1024 * 1024


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
SELECT 'write', name FROM rels
    WHERE has_table_privilege(oid, 'INSERT, UPDATE, DELETE, TRUNCATE')
       OR has_any_column_privilege(oid, 'INSERT, UPDATE')
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
  AND has_any_column_privilege(c.oid, 'SELECT')
ORDER BY 1
"""

_RESOLVE_REGCLASS_SQL = """
SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = to_regclass($1) AND n.nspname = ANY($2::text[])
  AND c.relkind IN ('r', 'p', 'f', 'v', 'm') AND has_any_column_privilege(c.oid, 'SELECT')
"""

_RESOLVE_BY_NAME_SQL = """
SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname = $1 AND n.nspname = ANY($2::text[])
  AND c.relkind IN ('r', 'p', 'f', 'v', 'm') AND has_any_column_privilege(c.oid, 'SELECT')
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
  AND has_column_privilege(a.attrelid, a.attnum, 'SELECT')
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
        if type_name == "interval":
            return parse_iso_duration(value)
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
        work_mem: str | None = DEFAULT_WORK_MEM,
        temp_file_limit: str | None = DEFAULT_TEMP_FILE_LIMIT,
        max_cell_bytes: int | None = DEFAULT_MAX_CELL_BYTES,
        roles: RolesConfig | None = None,
    ) -> None:
        super().__init__(name)
        self._roles = roles
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
        if max_cell_bytes is not None and max_cell_bytes < 1024:
            raise ConfigError(f"source {name!r}: max_cell_bytes must be >= 1024")
        try:
            self._work_mem = setting_literal("work_mem", work_mem)
            self._temp_file_limit = setting_literal("temp_file_limit", temp_file_limit)
        except ConfigError as exc:
            raise ConfigError(f"source {name!r}: {exc.public_message}") from None
        self._max_cell_bytes = max_cell_bytes
        self._local_settings = ""
        """`SET LOCAL work_mem ...;` etc., as checked against the role at start()."""
        self._settling: set[asyncio.Task[None]] = set()
        self._clean_pids: set[int] = set()
        """Backends `_settle` just reset: the pool's own reset callback skips them."""
        self._dsn = dsn
        self._configured_schemas = list(schemas) if schemas is not None else None
        self._pool_min = pool_min
        self._pool_max = pool_max
        self._acquire_timeout = acquire_timeout
        self._statement_timeout_ms = statement_timeout_ms
        self._allow_privileged_role = allow_privileged_role
        self._pool: asyncpg.Pool | None = None
        self._schemas: list[str] = []

    @classmethod
    def from_config(
        cls, name: str, config: PostgresSourceConfig, *, query_timeout_s: float
    ) -> PostgresSource:
        """Every key of a `kind: postgres` config entry, none left behind."""
        return cls(
            name,
            dsn=config.dsn,
            schemas=config.schemas,
            pool_min=config.pool.min_size,
            pool_max=config.pool.max_size,
            acquire_timeout=config.pool.acquire_timeout_s,
            statement_timeout_ms=int(query_timeout_s * 1000) + 1000,
            allow_privileged_role=config.allow_privileged_role,
            work_mem=config.work_mem,
            temp_file_limit=config.temp_file_limit,
            max_cell_bytes=config.max_cell_bytes,
            roles=config.roles,
        )

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
                # The reset keeps protocol-level statements: a repeated statement is not re-parsed.
                statement_cache_size=_STATEMENT_CACHE,
                timeout=self._acquire_timeout + _CONTROL_TIMEOUT,
                init=init_connection,
                reset=self._pool_reset,
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
                    await self._check_roles(conn)
                    await self._check_settings(conn)
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
        if self._settling:  # connections still being cancelled, reset or terminated
            await asyncio.wait(set(self._settling), timeout=_SETTLE_TIMEOUT + _GONE_TIMEOUT)
        pool, self._pool = self._pool, None
        if pool is not None:
            await _close_pool(pool)

    async def _check_settings(self, conn: asyncpg.Connection) -> None:
        """Check `work_mem` / `temp_file_limit` once, so every call can send them blind.

        `temp_file_limit` is superuser-only unless granted (`GRANT SET ON PARAMETER
        temp_file_limit TO role`, PostgreSQL 15+): without the right it is left out and a
        warning says how to grant it; a bad value is a configuration error.
        """
        parts: list[str] = []
        for key, literal in (
            ("work_mem", self._work_mem),
            ("temp_file_limit", self._temp_file_limit),
        ):
            if literal is None:
                continue
            statement = f" SET LOCAL {key} = {literal};"
            try:
                await conn.execute(f"BEGIN READ ONLY;{statement} ROLLBACK")
            except asyncpg.InsufficientPrivilegeError:
                await _rollback(conn)
                role = await conn.fetchval("SELECT quote_ident(current_user)")
                log.warning(
                    "postgres source %r: role %s may not set %s, so queries run without it "
                    "(temporary files are bounded only by the server's own setting); run "
                    "GRANT SET ON PARAMETER %s TO %s (PostgreSQL 15+) or set %s: null",
                    self.name,
                    role,
                    key,
                    key,
                    role,
                    key,
                )
                continue
            except asyncpg.PostgresError as exc:
                await _rollback(conn)
                raise ConfigError(
                    f"postgres source {self.name!r}: {key} = {literal} was refused: {exc}"
                ) from None
            parts.append(statement)
        self._local_settings = "".join(parts)

    def _role_sql(self) -> str:
        """` SET LOCAL ROLE "r";` for the current caller, "" without `roles`; or AccessDenied."""
        if self._roles is None:
            return ""
        role = resolve_role(self._roles, current_principal(), self.name)
        return f" SET LOCAL ROLE {quote_role(role)};"

    async def _check_roles(self, conn: asyncpg.Connection) -> None:
        """Each mapped role exists, the login role may take it, and it cannot change data."""
        if self._roles is None:
            return
        login = await conn.fetchval("SELECT quote_ident(current_user)")
        if await conn.fetchval("SELECT rolinherit FROM pg_roles WHERE rolname = current_user"):
            log.warning(
                "postgres source %r: login role %s has INHERIT, so it holds every mapped role's "
                "grants even before SET ROLE; run ALTER ROLE %s NOINHERIT so that only the "
                "caller's role applies (docs/governance.md)",
                self.name,
                login,
                login,
            )
        for role in self._roles.all_roles():
            quoted = quote_role(role)
            member = await conn.fetchval(_ROLE_MEMBER_SQL, role)
            where = f"postgres source {self.name!r}: mapped role {quoted}"
            if member is None:
                raise ConfigError(
                    f"{where} does not exist; create it (CREATE ROLE {quoted} NOLOGIN) and grant "
                    f"it what its callers may read, or fix sources.{self.name}.roles"
                )
            if not member:
                raise ConfigError(
                    f"{where} is not granted to the login role {login}; run GRANT {quoted} TO "
                    f"{login} (the login role needs membership in each mapped role, nothing else)"
                )
            try:
                await conn.execute(f"BEGIN READ ONLY; SET LOCAL ROLE {quoted}")
            except asyncpg.InsufficientPrivilegeError as exc:
                await _rollback(conn)
                raise ConfigError(
                    f"{where}: the login role {login} may not SET ROLE to it ({exc}); run GRANT "
                    f"{quoted} TO {login} WITH SET TRUE (PostgreSQL 16+)"
                ) from None
            try:
                await self._check_privileges(conn)  # current_user is the mapped role now
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc.public_message}") from None
            finally:
                await _rollback(conn)

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
        try:
            async with asyncio.timeout(self._acquire_timeout + _CONTROL_TIMEOUT):
                conn = await self._acquire(self._acquire_timeout)
                clean = False
                try:
                    await conn.fetchval("SELECT 1")
                    clean = True
                finally:
                    await self._release(conn, clean=clean)
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
        if sample_rows > 0 and columns:
            # The columns the caller may read (a column grant can leave some out), not `*`.
            listed = ", ".join('"' + c.name.replace('"', '""') + '"' for c in columns)
            batch = await self.fetch(
                f"SELECT {listed} FROM {info.name} LIMIT {int(sample_rows)}",
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
        """A fully fetched catalog read (small results by construction), read-only and bounded.

        With `roles` it runs as the caller's role, so a caller lists and describes only what
        its own grants let it read."""
        role_sql = self._role_sql()
        conn = await self._acquire(self._acquire_timeout)
        clean = False
        try:
            try:
                async with asyncio.timeout(_CONTROL_TIMEOUT * 4):
                    async with conn.transaction(readonly=True):
                        if role_sql:
                            await conn.execute(role_sql)
                        rows = list(await conn.fetch(sql, *args))
                clean = True
                return rows
            except TimeoutError:
                raise QueryTimeout(
                    f"postgres source {self.name!r}: catalog read took over "
                    f"{_CONTROL_TIMEOUT * 4:g} s"
                ) from None
            except asyncpg.PostgresError as exc:
                raise QueryFailed(f"PostgreSQL: {exc}") from None
        finally:
            await self._release(conn, clean=clean)

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
        return await self._execute(
            sql, params, max_rows=max_rows, timeout=timeout, max_bytes=max_bytes
        )

    async def scan(
        self,
        sql: str,
        params: Sequence[Value],
        *,
        timeout: float,
        sink: ScanSink,
    ) -> None:
        await self._execute(sql, params, max_rows=0, timeout=timeout, sink=sink)

    async def _execute(
        self,
        sql: str,
        params: Sequence[Value],
        *,
        max_rows: int,
        timeout: float,
        max_bytes: int | None = None,
        sink: ScanSink | None = None,
    ) -> RowBatch:
        if max_rows < 0:
            raise InvalidRequest(f"max_rows must be >= 0, got {max_rows}")
        if max_bytes is not None and max_bytes < 0:
            raise InvalidRequest(f"max_bytes must be >= 0, got {max_bytes}")
        if timeout <= 0:
            raise QueryTimeout(f"no time left to run the query on source {self.name!r}")
        role_sql = self._role_sql()  # before taking a connection: a refusal costs none
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        conn = await self._acquire(min(self._acquire_timeout, timeout))
        clean = False
        try:
            remaining = deadline - loop.time()
            if remaining <= 0.001:
                raise QueryTimeout(f"no time left to run the query on source {self.name!r}")
            server_ms = max(1, int(remaining * 1000))
            if self._statement_timeout_ms is not None:
                server_ms = min(server_ms, self._statement_timeout_ms)
            try:
                async with asyncio.timeout(server_ms / 1000 + _CLIENT_GRACE):
                    batch = await self._run(
                        conn, sql, list(params), max_rows, server_ms, max_bytes, sink, role_sql
                    )
            except TimeoutError:
                raise QueryTimeout(
                    f"query on source {self.name!r} exceeded {server_ms / 1000:g} s and was "
                    f"cancelled on the server; narrow it (WHERE, LIMIT) or raise the timeout"
                ) from None
            clean = True
            return batch
        finally:
            await self._release(conn, clean=clean)

    async def _run(
        self,
        conn: asyncpg.Connection,
        sql: str,
        params: list[Value],
        max_rows: int,
        server_ms: int,
        max_bytes: int | None,
        sink: ScanSink | None = None,
        role_sql: str = "",
    ) -> RowBatch:
        for attempt in (1, 2):
            try:
                await conn.execute(begin_sql(server_ms, self._local_settings + role_sql))
            except asyncpg.PostgresError as exc:
                if not role_sql:
                    raise
                raise AccessDenied(  # the role was dropped or revoked after start()
                    f"postgres source {self.name!r} could not take the caller's role: {exc}"
                ) from None
            try:
                return await self._read(conn, sql, params, max_rows, server_ms, max_bytes, sink)
            except asyncpg.InvalidCachedStatementError:
                # A table changed shape under a cached statement; asyncpg dropped it from the
                # cache. Inside a transaction it cannot re-prepare by itself: we do, once.
                if attempt == 2:
                    raise QueryFailed(
                        "the statement's tables changed while it ran; run it again"
                    ) from None
                drop_statement_cache(conn)
                await conn.execute("ROLLBACK")
        raise AssertionError("unreachable")

    async def _read(
        self,
        conn: asyncpg.Connection,
        sql: str,
        params: list[Value],
        max_rows: int,
        server_ms: int,
        max_bytes: int | None,
        sink: ScanSink | None = None,
    ) -> RowBatch:
        """Prepare (or reuse), bind and read; the transaction is ended by `_release`."""
        try:
            stmt = await cached_statement(conn, sql)
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
            reader = RowReader(
                stmt,
                args,
                max_rows=max_rows,
                max_bytes=max_bytes,
                max_cell_bytes=self._max_cell_bytes,
                source=self.name,
            )
            if sink is not None:  # a snapshot: every row, in chunks
                await reader.scan(sink, columns)
                rows: list[tuple[Value, ...]] = []
                more = False
            else:
                rows, more = await reader.read()
            if not conn.is_in_transaction():
                raise QueryFailed(
                    "the statement tried to end wellhead's read-only transaction "
                    "(COMMIT/ROLLBACK/END are not allowed)"
                )
        except asyncpg.InvalidCachedStatementError:
            raise
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
        except asyncpg.ConfigurationLimitExceededError as exc:
            raise QueryFailed(
                f"the query needed more temporary disk than this source allows ({exc}); "
                "narrow it (WHERE, fewer rows to sort or hash) or raise temp_file_limit"
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
        return RowBatch(columns=columns, rows=rows, more=more, nbytes=reader.bytes)

    async def stream(
        self,
        sql: str,
        params: Sequence[Value],
        *,
        sink: RowSink,
        timeout: float,
        batch_rows: int = 65_536,
    ) -> None:
        """Every row through a server-side cursor in the call's read-only transaction.

        The server holds the result; wellhead holds one batch, written by the sink in a
        worker thread while the loop stays free. `statement_timeout` is the deadline.
        """
        if timeout <= 0:
            raise QueryTimeout(f"no time left to run the query on source {self.name!r}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        conn = await self._acquire(min(self._acquire_timeout, timeout))
        clean = False
        try:
            server_ms = max(1, int((deadline - loop.time()) * 1000))
            try:
                async with asyncio.timeout(server_ms / 1000 + _CLIENT_GRACE):
                    await conn.execute(begin_sql(server_ms, self._local_settings))
                    stmt = await cached_statement(conn, sql)
                    expected = stmt.get_parameters()
                    if len(params) != len(expected):
                        raise InvalidRequest(
                            f"the statement takes {len(expected)} parameter(s), got {len(params)}"
                        )
                    args = [
                        _coerce_param(v, t.name, i + 1)
                        for i, (v, t) in enumerate(zip(params, expected, strict=True))
                    ]
                    sink.begin([Column(a.name, _type_label(a.type)) for a in stmt.get_attributes()])
                    if not args and getattr(sink, "engine_csv", False):
                        await self._copy_csv(conn, sql, sink)
                        clean = True
                        return
                    cursor = await stmt.cursor(*args)
                    batch: list[Any] = []
                    # Small fetches: rows are decoded on the loop, a slice at a time.
                    while records := await cursor.fetch(_STREAM_FETCH_ROWS):
                        batch.extend(records)
                        if len(batch) >= batch_rows:
                            await asyncio.to_thread(sink.write_rows, batch)
                            batch = []
                    if batch:
                        await asyncio.to_thread(sink.write_rows, batch)
            except TimeoutError:
                raise QueryTimeout(
                    f"query on source {self.name!r} exceeded {server_ms / 1000:g} s and was "
                    f"cancelled on the server; narrow it (WHERE, LIMIT) or raise the timeout"
                ) from None
            except asyncpg.QueryCanceledError as exc:
                if "statement timeout" in str(exc):
                    raise QueryTimeout(
                        f"query on source {self.name!r} exceeded {server_ms / 1000:g} s and was "
                        "cancelled on the server; narrow it (WHERE, LIMIT) or raise the timeout"
                    ) from None
                raise QueryCancelled(f"the query was cancelled on the server ({exc})") from None
            except asyncpg.ReadOnlySQLTransactionError as exc:
                raise QueryFailed(
                    "the statement tried to write, but wellhead runs every statement in a "
                    f"read-only transaction (PostgreSQL: {exc})"
                ) from None
            except asyncpg.DataError as exc:
                raise InvalidRequest(f"bad parameter: {exc}") from None
            except asyncpg.PostgresError as exc:
                raise QueryFailed(_describe_error(exc)) from None
            except (OSError, asyncpg.InterfaceError) as exc:
                raise SourceUnavailable(
                    f"lost the connection to postgres source {self.name!r}: "
                    f"{_scrub(str(exc), self._dsn)}"
                ) from None
            clean = True
        finally:
            await self._release(conn, clean=clean)

    async def _copy_csv(self, conn: asyncpg.Connection, sql: str, sink: Any) -> None:
        """The server's own CSV (`COPY (...) TO STDOUT`), written as it arrives.

        Only for statements without parameters: asyncpg would inline parameters into the
        text, which is not safe for every statement. The newline ends a trailing comment.
        """
        pending = bytearray()

        async def output(chunk: bytes) -> None:
            pending.extend(chunk)
            if len(pending) >= _COPY_FLUSH_BYTES:
                data = bytes(pending)
                pending.clear()
                await asyncio.to_thread(sink.write_csv, data)

        # Text as the row path writes it: timestamps in UTC, intervals as ISO 8601 durations.
        await conn.execute(_COPY_SETTINGS_SQL)
        status = await conn.copy_from_query(sql + "\n", output=output, format="csv", header=True)
        if pending:
            await asyncio.to_thread(sink.write_csv, bytes(pending))
        await asyncio.to_thread(sink.counted, int(str(status).rsplit(" ", 1)[-1]))

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

    async def _release(self, conn: asyncpg.Connection, *, clean: bool) -> None:
        """Hand the connection to `_settle`; wait for it unless the call ended normally.

        `_settle` runs in its own task, so neither a repeated anyio cancellation nor a
        second `task.cancel()` can cut it short. A call that ended normally does not wait:
        its rows are ready, and the connection re-enters the pool once reset. A call that
        was cancelled, timed out or failed waits (shielded) until the backend is idle or
        gone, so "cancelled" is only reported once nothing runs on the server any more.
        """
        if getattr(conn, "_con", True) is None:
            return  # asyncpg already took back a connection the server closed: nothing runs
        task = asyncio.ensure_future(self._settle(conn))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)
        if clean:
            return
        cancelled: asyncio.CancelledError | None = None
        with anyio.CancelScope(shield=True):
            while not task.done():
                try:
                    await asyncio.shield(task)
                except asyncio.CancelledError as exc:  # a native task.cancel(): keep waiting
                    cancelled = cancelled or exc
        if cancelled is not None:
            raise cancelled

    async def _settle(self, conn: asyncpg.Connection) -> None:
        """Return `conn` to the pool idle and reset, or terminate its backend and wait."""
        pool = self._pool
        pid = conn.get_server_pid()
        try:
            if pool is None or conn.is_closed():
                raise ConnectionError("pool closed or connection lost")
            async with asyncio.timeout(_SETTLE_TIMEOUT):
                # asyncpg first waits until a cancelled command is acknowledged by the server.
                await end_call(conn)
        except (Exception, asyncio.CancelledError) as exc:
            await self._kill(conn, pid, exc)
            return
        self._clean_pids.add(pid)
        try:
            await pool.release(conn, timeout=_CONTROL_TIMEOUT)
        except (Exception, asyncio.CancelledError) as exc:  # pool closing: it terminates
            log.warning("postgres source %r: releasing a connection failed: %r", self.name, exc)
        finally:
            self._clean_pids.discard(pid)

    async def _kill(self, conn: asyncpg.Connection, pid: int, why: BaseException) -> None:
        """Terminate the backend from a control connection; free the slot once it is gone.

        Dropping the socket alone is not enough: a backend busy in pg_sleep or a long sort
        does not notice its client left, keeps running, and the pool would open another.
        """
        log.warning(
            "postgres source %r: backend %d did not settle (%s); terminating it",
            self.name,
            pid,
            type(why).__name__,
        )
        try:
            async with asyncio.timeout(_CONTROL_TIMEOUT + _GONE_TIMEOUT):
                control = await asyncpg.connect(
                    dsn=self._dsn,
                    timeout=_CONTROL_TIMEOUT,
                    statement_cache_size=0,
                    server_settings={"application_name": f"wellhead:{self.name}:control"[:63]},
                )
                try:
                    await control.execute("SELECT pg_terminate_backend($1)", pid)
                    for _ in range(int(_GONE_TIMEOUT / 0.01)):  # poll until the backend exits
                        if not await control.fetchval(_BACKEND_ALIVE_SQL, pid):
                            break
                        await asyncio.sleep(0.01)
                finally:
                    await control.close()
        except (Exception, asyncio.CancelledError) as exc:
            log.warning(
                "postgres source %r: could not confirm backend %d ended: %s",
                self.name,
                pid,
                _scrub(str(exc) or type(exc).__name__, self._dsn),
            )
        _terminate(conn)
        pool = self._pool
        if pool is not None:
            try:
                await pool.release(conn, timeout=_CONTROL_TIMEOUT)
            except (Exception, asyncio.CancelledError):
                pass

    async def _pool_reset(self, conn: asyncpg.Connection) -> None:
        """The pool's reset hook: a no-op after `_settle`, the full reset for anything else.

        Code that takes a connection from the pool directly (a plugin, a test) still gives it
        back clean; the call path reset it already, in the same round trip as its ROLLBACK.
        """
        if conn.get_server_pid() in self._clean_pids:
            return
        await conn.execute(ROLLBACK_AND_RESET_SQL if conn.is_in_transaction() else RESET_SQL)


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


async def _close_pool(pool: asyncpg.Pool) -> None:
    try:
        async with asyncio.timeout(_CONTROL_TIMEOUT):
            await pool.close()
    except (Exception, asyncio.CancelledError):
        pool.terminate()
        raise
