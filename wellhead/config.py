"""Typed settings: sources, limits, server, observability, plugins.

Loaded from YAML with `${ENV_VAR}` substitution for secrets. Unknown keys are errors
(fail closed): a typo in a safety setting must never be silently ignored.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from wellhead.errors import ConfigError
from wellhead.governance.roles import RolesConfig
from wellhead.sql.cost import CostGuardConfig
from wellhead.sql.policy_config import ColumnPolicyConfig
from wellhead.tools.sql_tool_config import SqlToolConfig, ToolsetsConfig

_SOURCE_KINDS = ("duckdb", "sqlite", "postgres", "mysql")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DuckDBSourceConfig(_Strict):
    kind: Literal["duckdb"]
    path: str | None = Field(None, description="A .duckdb file, opened read-only.")
    views: dict[str, str] = Field(
        default_factory=dict,
        description="View name -> allow-listed Parquet/CSV/JSON path or glob (in-memory mode).",
    )
    threads: int | None = Field(None, ge=1, description="DuckDB threads; null: min(4, CPUs).")
    memory_limit: str | None = Field(
        "1GB", description="DuckDB memory_limit (a query past it fails); null: 80% of RAM."
    )
    max_temp_directory_size: str | None = Field(
        "2GB", description="Disk a query may spill to; null: DuckDB's (90% of free space)."
    )
    temp_directory: str | None = Field(
        None, description="Parent of the private spill directory; null: the system temp dir."
    )
    max_cell_bytes: int | None = Field(
        16 * 1024 * 1024, ge=1024, description="A larger single value is refused; null: no limit."
    )

    @model_validator(mode="after")
    def _path_or_views(self) -> DuckDBSourceConfig:
        if self.path and self.views:
            raise ValueError("set either 'path' (a .duckdb file) or 'views' (files), not both")
        return self


class SQLiteSourceConfig(_Strict):
    kind: Literal["sqlite"]
    path: str
    max_length_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="SQLITE_LIMIT_LENGTH: longest string/BLOB built."
    )
    max_sql_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="SQLITE_LIMIT_SQL_LENGTH: longest statement text."
    )
    heap_limit_bytes: int = Field(
        512 * 1024 * 1024, ge=0, description="PRAGMA hard_heap_limit (process-wide); 0: none."
    )
    max_cell_bytes: int | None = Field(
        16 * 1024 * 1024, ge=1024, description="A larger single value is refused; null: no limit."
    )


class PoolConfig(_Strict):
    min_size: int = Field(1, ge=0)
    max_size: int = Field(10, ge=1)
    acquire_timeout_s: float = Field(5.0, gt=0)


class PostgresSourceConfig(_Strict):
    kind: Literal["postgres"]
    dsn: str
    schemas: list[str] | None = None
    pool: PoolConfig = PoolConfig()
    allow_privileged_role: bool = False
    work_mem: str | None = Field(
        "64MB", description="SET LOCAL work_mem per statement (sort/hash memory); null: server's."
    )
    temp_file_limit: str | None = Field(
        "1GB", description="SET LOCAL temp_file_limit (superuser or GRANT SET); null: server's."
    )
    max_cell_bytes: int | None = Field(
        16 * 1024 * 1024, ge=1024, description="A larger single value is refused; null: no limit."
    )
    roles: RolesConfig | None = Field(
        None, description="Run each caller as a PostgreSQL role (SET LOCAL ROLE); see governance."
    )


class MySQLSourceConfig(_Strict):
    kind: Literal["mysql"]
    dsn: str = Field(
        description="mysql://user:${PASSWORD}@host:3306/database URL; options ssl, ssl_ca, "
        "connect_timeout."
    )
    dialect: Literal["mariadb", "mysql"] = Field(
        "mariadb", description="The server: mariadb (10.6+) or mysql (8.0+); checked at start."
    )
    schemas: list[str] | None = Field(
        None, description="Databases to expose; null: the DSN's database."
    )
    pool: PoolConfig = PoolConfig()
    allow_privileged_role: bool = Field(
        False,
        description="Start even when SHOW GRANTS shows more than SELECT / SHOW VIEW "
        "(refused by default).",
    )
    max_cell_bytes: int | None = Field(
        16 * 1024 * 1024, ge=1024, description="A larger single value is refused; null: no limit."
    )


SourceConfig = Annotated[
    DuckDBSourceConfig | SQLiteSourceConfig | PostgresSourceConfig | MySQLSourceConfig,
    Field(discriminator="kind"),
]


class ToolLimit(_Strict):
    timeout_s: float | None = Field(None, gt=0)
    budget_bytes: int | None = Field(None, ge=1_024)


class LimitsConfig(_Strict):
    query_timeout_s: float = Field(30.0, gt=0, description="Deadline for one SQL statement.")
    tool_timeout_s: float = Field(60.0, gt=0, description="Default deadline for any tool.")
    result_budget_bytes: int = Field(
        32_768, ge=1_024, description="Default text budget of one result (about bytes/4 tokens)."
    )
    max_result_budget_bytes: int = Field(
        262_144, ge=1_024, description="The most a call may ask for with `budget_bytes`."
    )
    default_rows_per_page: int = Field(200, ge=1)
    max_rows_per_page: int = Field(2_000, ge=1)
    count_timeout_s: float = Field(
        2.0, ge=0, description="Time spent counting total rows on a first page; 0 disables."
    )
    sample_rows: int = Field(3, ge=0, le=20)
    max_sql_bytes: int = Field(
        131_072,
        ge=64,
        description="Largest SQL text (UTF-8 bytes) a call may send; more is refused.",
    )
    max_pattern_chars: int = Field(
        256, ge=1, description="Longest `pattern` list_tables accepts; longer is refused."
    )
    max_logged_argument_bytes: int = Field(
        4_096,
        ge=64,
        description="Argument values in log lines are cut to this size with an explicit marker.",
    )
    per_tool: dict[str, ToolLimit] = Field(
        default_factory=dict, description="Deadline and output budget overrides by tool name."
    )

    @model_validator(mode="after")
    def _ordered(self) -> LimitsConfig:
        if self.result_budget_bytes > self.max_result_budget_bytes:
            raise ValueError("result_budget_bytes must not exceed max_result_budget_bytes")
        if self.default_rows_per_page > self.max_rows_per_page:
            raise ValueError("default_rows_per_page must not exceed max_rows_per_page")
        return self


class ServerConfig(_Strict):
    name: str = "wellhead"
    transport: Literal["stdio", "http", "sse"] = "stdio"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    path: str = "/mcp"
    stateless: bool = False
    allowed_hosts: list[str] = Field(default_factory=list)
    allowed_origins: list[str] = Field(default_factory=list)
    mask_error_details: bool = True
    shutdown_grace_s: float = Field(10.0, ge=0)
    workers: int = Field(1, ge=1, description="HTTP worker processes.")
    header_timeout_s: float = Field(
        10.0, gt=0, description="Time a client has to send the request headers."
    )
    max_connections: int = Field(
        1_000, ge=1, description="Concurrent HTTP connections; more are refused with 503."
    )
    keep_alive_s: float = Field(5.0, gt=0, description="Idle keep-alive connection lifetime.")
    body_timeout_s: float = Field(
        30.0, gt=0, description="Time a client has to send a request body after its headers."
    )


class CursorConfig(_Strict):
    secret: str | None = Field(
        None,
        min_length=16,
        description="HMAC key for cursors. Set it (same value on every replica) so cursors "
        "survive restarts and can be continued anywhere; unset means a random per-process key.",
    )


class LoggingConfig(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    arguments: Literal["full", "redacted", "hashed", "none"] = "redacted"
    access_log: bool = Field(
        False, description="Also log one line per HTTP request (each tool call has its own line)."
    )
    third_party_debug: bool = Field(
        False,
        description="At level DEBUG, also let libraries (fastmcp, mcp, sse_starlette, uvicorn, "
        "httpx) log DEBUG lines; they print request and response bodies, SQL and rows included.",
    )


class SyslogConfig(_Strict):
    host: str
    port: int = Field(514, ge=1, le=65535)
    protocol: Literal["udp", "tcp", "tls"] = Field(
        "udp",
        description="udp (one datagram per event, 64 KiB max, no delivery check), tcp (RFC "
        "6587 octet counting) or tls (RFC 5425, usually port 6514). tcp and tls spool while "
        "the collector is away.",
    )
    ca_file: str | None = Field(
        None,
        description="tls: PEM CA bundle the collector's certificate must chain to "
        "(default: the system CAs).",
    )
    cert_file: str | None = Field(
        None, description="tls: PEM client certificate, for collectors that require one."
    )
    key_file: str | None = Field(
        None, description="tls: PEM private key of cert_file (if not inside cert_file)."
    )
    server_name: str | None = Field(
        None, description="tls: name the collector's certificate must carry (default: host)."
    )

    @model_validator(mode="after")
    def _tls_files_need_tls(self) -> SyslogConfig:
        tls_keys = [
            k for k in ("ca_file", "cert_file", "key_file", "server_name") if getattr(self, k)
        ]
        if tls_keys and self.protocol != "tls":
            raise ValueError(f"{', '.join(tls_keys)} need protocol: tls")
        if self.key_file and not self.cert_file:
            raise ValueError("key_file needs cert_file")
        return self


class OtlpAuditConfig(_Strict):
    endpoint: str = Field(
        description="OTLP/HTTP logs URL, e.g. http://collector:4318/v1/logs (a bare host:port "
        "gets /v1/logs). https verifies the collector's certificate.",
        pattern=r"^https?://",
    )
    timeout_s: float = Field(10, gt=0, description="How long one export request may take.")
    ca_file: str | None = Field(
        None, description="https: PEM CA bundle for the collector (default: the system CAs)."
    )
    cert_file: str | None = Field(None, description="https: PEM client certificate (mTLS).")
    key_file: str | None = Field(None, description="https: PEM private key of cert_file.")


class SpoolConfig(_Strict):
    directory: str | None = Field(
        None,
        description="Where events wait while a tcp/tls syslog or OTLP receiver is away, one "
        "subdirectory per receiver; one process per directory (default: "
        "$WELLHEAD_CACHE_DIR or the user cache dir, then audit-spool).",
    )
    max_bytes: int = Field(
        256_000_000,
        ge=1_000_000,
        description="Most the spool of one receiver holds; events beyond are dropped, "
        "counted and logged.",
    )


class ChainConfig(_Strict):
    enabled: bool = Field(
        True, description="Hash-chain the JSONL file's lines (checked by wellhead audit verify)."
    )
    secret: str | None = Field(
        None,
        min_length=16,
        description="HMAC key for the chain: without it anyone who can edit the file can "
        "also recompute the hashes. Keep a copy off the host to verify.",
    )


class AuditConfig(_Strict):
    path: str | None = None
    max_bytes: int = Field(50_000_000, ge=1_000)
    backup_count: int = Field(10, ge=1)
    syslog: SyslogConfig | None = None
    otlp: OtlpAuditConfig | None = Field(
        None, description="Also (or instead) export events as OpenTelemetry logs over OTLP/HTTP."
    )
    spool: SpoolConfig = Field(
        SpoolConfig(), description="On-disk buffer of the remote receivers (syslog tcp/tls, otlp)."
    )
    chain: ChainConfig = Field(ChainConfig(), description="Tamper evidence of the JSONL file.")


class MetricsConfig(_Strict):
    enabled: bool = True
    port: int | None = Field(None, ge=1, le=65535, description="Separate port (stdio mode).")


class WatchdogConfig(_Strict):
    interval_s: float = Field(0.05, gt=0)
    threshold_s: float = Field(0.2, gt=0, description="Loop lag that logs a warning.")


class TracingConfig(_Strict):
    enabled: bool = False
    otlp_endpoint: str | None = None
    service_name: str = "wellhead"


class StateConfig(_Strict):
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str | None = None
    overflow_ttl_s: float = Field(900, gt=0, description="How long over-budget results are kept.")

    @model_validator(mode="after")
    def _redis_needs_url(self) -> StateConfig:
        if self.backend == "redis" and not self.redis_url:
            raise ValueError("backend 'redis' needs redis_url")
        return self


class ExportsConfig(_Strict):
    """`export_query`: whole results written to files, handed out as resources and URLs."""

    enabled: bool = Field(True, description="Serve export_query and its resources and links.")
    directory: str | None = Field(
        None, description="Export store; a private temp dir when unset (shared volume: replicas)."
    )
    max_export_bytes: int = Field(1 << 30, ge=1024, description="Largest single export file.")
    max_owner_bytes: int = Field(4 << 30, ge=1024, description="Exports kept per caller, in bytes.")
    max_total_bytes: int = Field(16 << 30, ge=1024, description="Whole store; oldest go first.")
    ttl_s: float = Field(3600, gt=0, description="How long an export is kept and its URL valid.")
    timeout_s: float = Field(300, gt=0, description="Deadline for writing one export.")
    chunk_bytes: int = Field(
        1 << 20, ge=1024, le=16 << 20, description="Bytes per resources/read chunk."
    )
    secret: str | None = Field(
        None, description="HMAC key for download URLs; cursor.secret when unset."
    )
    public_url: str | None = Field(
        None, description="Base URL of download links (behind a proxy); the request's when unset."
    )


class TasksConfig(_Strict):
    """MCP tasks (FastMCP + Docket): `query` and `export_query` can run in the background."""

    enabled: bool = Field(False, description="Let clients run query/export_query as tasks.")
    backend: Literal["memory", "redis"] = Field(
        "memory", description="memory (one process) or redis (tasks shared by replicas)."
    )
    redis_url: str | None = Field(None, description="Redis URL; required with backend redis.")
    queue: str = Field("wellhead", description="Docket queue name; replicas share it.")
    concurrency: int = Field(4, ge=1, le=256, description="Tasks one process runs at once.")

    @model_validator(mode="after")
    def _redis_needs_url(self) -> TasksConfig:
        if self.backend == "redis" and not self.redis_url:
            raise ValueError("backend 'redis' needs redis_url")
        return self


class QuotaRule(_Strict):
    """One tool's quota; a key left out inherits the `quotas` default, `null` lifts it."""

    rate_per_s: float | None = Field(
        None,
        gt=0,
        description="Calls per second a principal may make (the bucket's refill); left out: "
        "quotas.rate_per_s; null: no rate limit.",
    )
    burst: int | None = Field(
        None,
        ge=1,
        description="Calls allowed in a row after a quiet spell (the bucket's size); left out: "
        "quotas.burst.",
    )
    max_concurrent: int | None = Field(
        None,
        ge=1,
        description="Calls of the tool a principal may have running at once; left out: "
        "quotas.max_concurrent; null: no cap.",
    )


class QuotasConfig(_Strict):
    """Per principal and per tool: a token bucket and a cap on running calls.

    Shared through Redis (atomic scripts) when `state.backend` is redis, so replicas
    enforce one limit; in memory otherwise.
    """

    enabled: bool = Field(False, description="Apply quotas to every tool call.")
    rate_per_s: float | None = Field(
        10.0, gt=0, description="Calls per second per principal and tool; null: no rate limit."
    )
    burst: int | None = Field(
        None, ge=1, description="Bucket size per principal and tool; null: ceil(rate_per_s)."
    )
    max_concurrent: int | None = Field(
        4, ge=1, description="Running calls per principal and tool; null: no cap."
    )
    per_tool: dict[str, QuotaRule] = Field(
        default_factory=dict, description="Overrides by tool name (keys left out inherit)."
    )
    redis_url: str | None = Field(
        None,
        description="Redis for quotas; null: state.redis_url when state.backend is redis, "
        "else quotas are kept in this process's memory.",
    )
    key_prefix: str = Field(
        "wellhead:quota", min_length=1, description="Prefix of the Redis keys quotas use."
    )
    on_backend_error: Literal["local", "open", "closed"] = Field(
        "local",
        description="Redis unreachable: local (each replica enforces the limits alone), open "
        "(admit every call) or closed (refuse every call, retry-after given).",
    )
    backend_timeout_s: float = Field(
        0.25, gt=0, description="Longest wait for Redis on a call before on_backend_error applies."
    )
    lease_s: float = Field(
        30.0,
        gt=0,
        description="A running call's slot expires this long after its replica last renewed "
        "it (renewed every lease_s/3): a crashed replica frees its slots within lease_s.",
    )
    busy_retry_after_s: float = Field(
        1.0, gt=0, description="Retry hint given when max_concurrent is reached."
    )
    max_tracked_keys: int = Field(
        100_000,
        ge=100,
        description="In memory (and in the local fallback): (principal, tool) pairs tracked; "
        "past it the least recently seen idle ones are forgotten (their buckets refill).",
    )


class SnapshotsConfig(_Strict):
    """Result snapshots: a walk's result spilled once, so deep pages cost what the first does."""

    enabled: bool = Field(True, description="Spill a result that needs more than one page.")
    dir: str | None = Field(
        None, description="Spill directory (a shared volume for replicas); null: a private one."
    )
    ttl_s: float = Field(900, gt=0, description="How long a snapshot can be read.")
    max_bytes: int = Field(4 << 30, ge=1 << 20, description="Disk all snapshots may take.")
    max_bytes_per_caller: int = Field(
        1 << 30, ge=1 << 20, description="Disk one caller's snapshots may take."
    )
    max_rows: int = Field(10_000_000, ge=1, description="Larger results page without one.")
    max_result_bytes: int = Field(
        2 << 30, ge=1 << 20, description="Encoded result size past which no snapshot is kept."
    )
    spill_timeout_s: float = Field(
        20.0, gt=0, description="Time allowed to spill; slower results page without one."
    )


class StaticToken(_Strict):
    client_id: str
    scopes: list[str] = Field(default_factory=list)
    claims: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra claims of this token (e.g. tenant_id, groups, sub), as a JWT has.",
    )

    @field_validator("claims")
    @classmethod
    def _own_claims(cls, value: dict[str, Any]) -> dict[str, Any]:
        clash = sorted({"client_id", "scopes", "expires_at"} & set(value))
        if clash:
            raise ValueError(f"claims must not set {', '.join(clash)} (they are token fields)")
        return value


class StaticTokenAuthConfig(_Strict):
    """Bearer tokens listed in config (from `${ENV}`): simple service-to-service access.

    Written as a list of `{token, client_id, scopes}` so the secret is a value, never a key;
    the older mapping `token -> {client_id, scopes}` is still read. Either way it is held as
    a mapping by token, which is what the verifier looks tokens up in.
    """

    kind: Literal["static"]
    tokens: dict[str, StaticToken] = Field(
        description="A list of {token, client_id, scopes}; token is ${VAR} from the environment "
        "(the older mapping token -> {client_id, scopes} is also read)."
    )
    required_scopes: list[str] = Field(default_factory=list)

    @field_validator("tokens", mode="before")
    @classmethod
    def _token_list(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        tokens: dict[Any, Any] = {}
        for number, entry in enumerate(value, 1):
            if not isinstance(entry, dict) or "token" not in entry:
                raise ValueError(
                    f"entry #{number} must be a mapping with token, client_id and scopes"
                )
            token = entry["token"]
            if not isinstance(token, str):
                raise ValueError(f"entry #{number}: token must be a string")
            if token in tokens:
                raise ValueError(f"entry #{number} repeats the token of an earlier entry")
            tokens[token] = {k: v for k, v in entry.items() if k != "token"}
        return tokens

    @model_validator(mode="after")
    def _strong_tokens(self) -> StaticTokenAuthConfig:
        if not self.tokens:
            raise ValueError("list at least one token")
        weak = [t.client_id for token, t in self.tokens.items() if len(token) < 16]
        if weak:
            raise ValueError(f"tokens must be at least 16 characters (weak: {', '.join(weak)})")
        spaced = [
            t.client_id
            for token, t in self.tokens.items()
            if any(c.isspace() or not c.isprintable() for c in token)
        ]
        if spaced:
            raise ValueError(
                "tokens must not contain whitespace or control characters (a trailing newline "
                f"from a secret file?): {', '.join(dict.fromkeys(spaced))}"
            )
        return self


class JWTAuthConfig(_Strict):
    """OAuth 2.1 / OIDC access tokens (JWT) checked against a JWKS endpoint or a public key."""

    kind: Literal["jwt"]
    jwks_uri: str | None = None
    public_key: str | None = None
    issuer: str | None = None
    audience: str | None = None
    algorithm: str | None = None
    required_scopes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_key_source(self) -> JWTAuthConfig:
        if bool(self.jwks_uri) == bool(self.public_key):
            raise ValueError("set exactly one of jwks_uri or public_key")
        return self


AuthConfig = Annotated[StaticTokenAuthConfig | JWTAuthConfig, Field(discriminator="kind")]


class Settings(_Strict):
    server: ServerConfig = ServerConfig()
    auth: AuthConfig | None = Field(
        None, description="Who may call over HTTP (stdio is the local user's own process)."
    )
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    default_source: str | None = None
    limits: LimitsConfig = LimitsConfig()
    cursor: CursorConfig = CursorConfig()
    logging: LoggingConfig = LoggingConfig()
    audit: AuditConfig = AuditConfig()
    metrics: MetricsConfig = MetricsConfig()
    tracing: TracingConfig = TracingConfig()
    watchdog: WatchdogConfig = WatchdogConfig()
    state: StateConfig = StateConfig()
    quotas: QuotasConfig = Field(
        QuotasConfig(), description="Rate limits and concurrency caps per principal and tool."
    )
    snapshots: SnapshotsConfig = Field(
        SnapshotsConfig(), description="Result snapshots: walks page from a result spilled once."
    )
    plugins: list[str] = Field(default_factory=list)
    plugin_entry_points: bool = Field(
        True, description="Also load plugins installed packages declare (group wellhead.plugins)."
    )
    tools: dict[str, SqlToolConfig] = Field(
        default_factory=dict, description="SQL tools declared in config, by tool name."
    )
    toolsets: ToolsetsConfig = ToolsetsConfig()
    exports: ExportsConfig = Field(
        ExportsConfig(), description="export_query: whole results as files (resources, URLs)."
    )
    tasks: TasksConfig = Field(
        TasksConfig(), description="MCP tasks: long queries and exports in the background."
    )
    column_policies: dict[str, dict[str, dict[str, ColumnPolicyConfig]]] = Field(
        default_factory=dict,
        description="source -> table -> column -> deny | hash | redact | partial | null "
        "(or {policy, keep, unless_scopes}); see docs/column-policies.md.",
    )

    cost_guard: CostGuardConfig = Field(
        CostGuardConfig(), description="Refuse statements the engine estimates as too costly."
    )

    @model_validator(mode="after")
    def _policies_name_sources(self) -> Settings:
        unknown = sorted(set(self.column_policies) - set(self.sources))
        if unknown:
            known = ", ".join(sorted(self.sources)) or "none"
            raise ValueError(
                f"column_policies names unknown source(s) {', '.join(unknown)} (sources: {known})"
            )
        return self

    @model_validator(mode="after")
    def _default_source_exists(self) -> Settings:
        if self.default_source is not None and self.default_source not in self.sources:
            known = ", ".join(sorted(self.sources)) or "none"
            raise ValueError(f"default_source '{self.default_source}' is not a source ({known})")
        for name in self.sources:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]{0,62}", name):
                raise ValueError(
                    f"source name '{name}' must be an identifier (letters, digits, _-)"
                )
        return self

    @property
    def primary_source(self) -> str:
        """The source used when a call names none."""
        if self.default_source:
            return self.default_source
        return next(iter(self.sources))


MAX_CONFIG_BYTES = 1_048_576
"""Largest config file read; a config is a few KiB, so more is a mistake or an attack."""
MAX_YAML_NODES = 100_000
"""Most YAML nodes once aliases are expanded: bounds "billion laughs" anchors and aliases."""
MAX_YAML_DEPTH = 64
"""Deepest nesting of mappings and lists in a config file."""

_MASK = "***"
_TOKEN_PATH = ("auth", "tokens")
_MERGE_TAG = "tag:yaml.org,2002:merge"


def expand_env(value: Any, where: str = "") -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in every string, mapping keys included.

    Fail closed: an unset (or empty) variable without a default, a malformed `${`, or two keys
    that expand to the same text is an error naming the key path; `$${` writes a literal `${`.
    Token keys under `auth.tokens` are named by position, never by their text.
    """
    return _expand(value, tuple(where.split(".")) if where else ())


def _expand(value: Any, path: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return _expand_text(value, path)
    if isinstance(value, list):
        return [_expand(v, (*path, f"[{i}]")) for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    out: dict[Any, Any] = {}
    for number, (key, item) in enumerate(value.items(), 1):
        secret_key = path == _TOKEN_PATH
        name = f"[#{number}]" if secret_key else str(key)
        new_key = _expand_text(key, (*path, name)) if isinstance(key, str) else key
        if new_key in out:
            shown = f"entry #{number}" if secret_key else f"'{new_key}'"
            raise ConfigError(f"{_location(path)}: {shown} appears twice once ${{...}} is expanded")
        out[new_key] = _expand(item, (*path, name))
    return out


def _expand_text(text: str, path: tuple[str, ...]) -> str:
    """One linear pass; substituted values are not expanded again."""
    if "$" not in text:
        return text
    out: list[str] = []
    position = 0
    while True:
        start = text.find("${", position)
        if start < 0:
            out.append(text[position:])
            return "".join(out)
        if start > position and text[start - 1] == "$" and start - 1 >= position:
            out.append(text[position : start - 1] + "${")  # `$${` is a literal `${`
            position = start + 2
            continue
        out.append(text[position:start])
        match = _ENV_REF.match(text, start)
        where = _location(path)
        if match is None or "${" in (match.group(2) or ""):
            raise ConfigError(
                f"{where}: malformed variable reference near {_ref_preview(text, start)}; write "
                "${NAME} or ${NAME:-default} (NAME: letters, digits, _), or $${ for a literal ${"
            )
        name, default = match.group(1), match.group(2)
        found = os.environ.get(name, "")
        if found:
            out.append(found)
        elif default is not None:
            out.append(default)
        else:
            state = "is empty" if name in os.environ else "is not set"
            raise ConfigError(
                f"{where}: environment variable ${{{name}}} {state}; set it, or write "
                f"${{{name}:-default}}"
            )
        position = match.end()


def _ref_preview(text: str, start: int) -> str:
    """The reference's own text, up to its name: never the value around it (maybe a secret)."""
    name = re.match(r"\$\{[A-Za-z0-9_]{0,40}", text[start:])
    return f"'{name.group(0) if name else '${'}'"


def _location(path: tuple[str, ...] | list[Any]) -> str:
    text = ""
    for part in path:
        part = str(part)
        text += part if part.startswith("[") or not text else f".{part}"
    return text or "config"


def secret_values(raw: Any) -> set[str]:
    """Every secret a config holds: static tokens, cursor secret, passwords in URLs and DSNs.

    Error messages are scrubbed of these, so whatever text a library puts in an error, the
    secret itself is never printed.
    """
    found: set[str] = set()

    def walk(value: Any, path: tuple[str, ...]) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if path == _TOKEN_PATH:
                    found.add(str(key))
                walk(item, (*path, str(key)))
        elif isinstance(value, list):
            for item in value:
                walk(item, (*path, "[]"))
        elif isinstance(value, str):
            key = path[-1] if path else ""
            if key in ("secret", "token", "password") or path[:2] == _TOKEN_PATH:
                if key not in ("client_id", "scopes") and path[3:4] != ("claims",):
                    found.add(value)
            found.update(_passwords_in(value))

    if isinstance(raw, BaseModel):
        raw = raw.model_dump(mode="json")
        auth = raw.get("auth") or {}
        found.update(str(token) for token in (auth.get("tokens") or {}))
    walk(raw, ())
    return {s for s in found if len(s) >= 3}


def _passwords_in(value: str) -> set[str]:
    found: set[str] = set()
    if "://" in value and "@" in value:
        from urllib.parse import unquote, urlsplit

        try:
            password = urlsplit(value.strip()).password
        except ValueError:
            password = None
        if password:
            found.update({password, unquote(password)})
    if "password" in value:
        for match in re.finditer(r"password\s*=\s*('[^']*'|[^\s']+)", value):
            found.add(match.group(1).strip("'"))
    return found


def mask_secrets(text: str, secrets: set[str]) -> str:
    """`text` with every secret replaced by ***, longest first (one may contain another)."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, _MASK)
    return text


def format_validation_error(error: ValidationError, raw: Any = None) -> str:
    """One line per problem: which key, what was expected. Token keys are shown by position."""
    order: list[str] = []
    auth = raw.get("auth") if isinstance(raw, dict) else None
    if isinstance(auth, dict) and isinstance(auth.get("tokens"), dict):
        order = [str(k) for k in auth["tokens"]]
    elif isinstance(auth, dict) and isinstance(auth.get("tokens"), list):
        order = [str(e.get("token")) for e in auth["tokens"] if isinstance(e, dict)]
    lines = []
    for item in error.errors():
        parts = list(item["loc"])
        if len(parts) > 2 and parts[0] == "sources" and parts[2] in _SOURCE_KINDS:
            del parts[2]  # pydantic's discriminator tag, not a key the user wrote
        if len(parts) > 1 and parts[0] == "auth" and parts[1] in ("static", "jwt"):
            del parts[1]
        if len(parts) > 2 and tuple(parts[:2]) == _TOKEN_PATH:
            key = str(parts[2])
            parts[2] = f"[#{order.index(key) + 1}]" if key in order else "[#?]"
        location = _location(parts) if parts else "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; unknown keys are refused)"
        elif item["type"] == "union_tag_invalid":
            message = "unknown source kind; expected one of duckdb, sqlite, postgres, mysql"
        lines.append(f"{location}: {message}")
    return "\n".join(lines)


def parse_settings(raw: Any, origin: str = "config") -> Settings:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level")
    try:
        expanded = expand_env(raw)
    except ConfigError as exc:
        raise ConfigError(f"{origin} is invalid:\n{exc}") from None
    try:
        return Settings.model_validate(expanded)
    except ValidationError as exc:
        text = format_validation_error(exc, expanded)
        text = mask_secrets(text, secret_values(expanded))
        raise ConfigError(f"{origin} is invalid:\n{text}") from None


def load_settings(path: str | Path) -> Settings:
    path = Path(path)
    try:
        with path.open("rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path} is larger than {MAX_CONFIG_BYTES} bytes, the most a config file may be"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    raw = load_yaml(text, str(path))
    if isinstance(raw, dict):
        raw = _resolve_relative_paths(raw, path.parent)
    return parse_settings(raw, origin=str(path))


def load_yaml(text: str, origin: str = "config") -> Any:
    """Safe YAML with bounds: aliases may not expand past MAX_YAML_NODES, nesting past
    MAX_YAML_DEPTH, and a key may not appear twice in one mapping (YAML keeps the last one
    silently). Messages give line and column, never the text there (it may be a secret)."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise ConfigError(
                f"{origin} nests too deeply (at most {MAX_YAML_DEPTH} levels)"
            ) from None
        if node is None:
            return None
        _check_yaml_bounds(node, origin)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin} is not valid YAML: {_yaml_problem(exc)}") from None
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if not isinstance(exc, yaml.MarkedYAMLError):
        return type(exc).__name__
    problem = exc.problem or exc.context or "syntax error"
    mark = exc.problem_mark or exc.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    context = f" ({exc.context})" if exc.context and exc.problem else ""
    return f"{problem}{context}{where}"


def _check_yaml_bounds(root: yaml.Node, origin: str) -> None:
    """Walk the node graph once (aliases are shared nodes, memoised), counting what the
    aliases would expand to, so a few hundred bytes cannot stand for gigabytes."""
    seen_nodes: dict[int, tuple[int, int]] = {}  # node -> (expanded size, height)
    open_nodes: set[int] = set()

    def walk(node: yaml.Node, depth: int, path: tuple[str, ...] = ()) -> tuple[int, int]:
        line = f"line {node.start_mark.line + 1}"
        key = id(node)
        if key in open_nodes:
            raise ConfigError(f"{origin}: an alias at {line} refers to its own anchor")
        if key not in seen_nodes:
            open_nodes.add(key)
            seen_nodes[key] = _walk_children(node, depth, path, walk, origin)
            open_nodes.discard(key)
        total, height = seen_nodes[key]
        if depth + height > MAX_YAML_DEPTH:
            raise ConfigError(f"{origin} nests deeper than {MAX_YAML_DEPTH} levels at {line}")
        if total > MAX_YAML_NODES:
            raise ConfigError(
                f"{origin}: expanding the aliases (*name) at {line} would make more than "
                f"{MAX_YAML_NODES} values; a config this large is refused (YAML alias bomb?)"
            )
        return total, height

    walk(root, 0)


def _walk_children(
    node: yaml.Node, depth: int, path: tuple[str, ...], walk: Any, origin: str
) -> tuple[int, int]:
    if depth > MAX_YAML_DEPTH:
        line = node.start_mark.line + 1
        raise ConfigError(f"{origin} nests deeper than {MAX_YAML_DEPTH} levels at line {line}")
    total, height = 1, 0
    children: list[tuple[yaml.Node, tuple[str, ...]]] = []
    if isinstance(node, yaml.SequenceNode):
        children = [(child, path) for child in node.value]
    elif isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            name = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                if name in lines:
                    shown = "a token" if path == _TOKEN_PATH else f"key '{name}'"
                    raise ConfigError(
                        f"{origin}: {shown} appears twice in one mapping (lines {lines[name]} "
                        f"and {key_node.start_mark.line + 1}); YAML would keep only the last"
                    )
                lines[name] = key_node.start_mark.line + 1
            children += [(key_node, path), (value_node, (*path, name))]
    for child, child_path in children:
        size, child_height = walk(child, depth + 1, child_path)
        total += size
        height = max(height, child_height + 1)
        if total > MAX_YAML_NODES:
            break
    return total, height


def _resolve_relative_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Paths in a config file are relative to that file, not to the working directory."""
    sources = raw.get("sources")
    if not isinstance(sources, dict):
        return raw

    def absolute(value: Any) -> Any:
        if isinstance(value, str) and value and "${" not in value and not Path(value).is_absolute():
            return str(base / value)
        return value

    resolved = {}
    for name, source in sources.items():
        if isinstance(source, dict) and source.get("kind") in ("duckdb", "sqlite"):
            source = dict(source)
            if "path" in source:
                source["path"] = absolute(source["path"])
            if isinstance(source.get("views"), dict):
                source["views"] = {k: absolute(v) for k, v in source["views"].items()}
        resolved[name] = source
    return {**raw, "sources": resolved}
