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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from wellhead.errors import ConfigError
from wellhead.tools.sql_tool_config import SqlToolConfig, ToolsetsConfig

_SOURCE_KINDS = ("duckdb", "sqlite", "postgres")
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


SourceConfig = Annotated[
    DuckDBSourceConfig | SQLiteSourceConfig | PostgresSourceConfig, Field(discriminator="kind")
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


class SyslogConfig(_Strict):
    host: str
    port: int = Field(514, ge=1, le=65535)
    protocol: Literal["udp", "tcp"] = "udp"


class AuditConfig(_Strict):
    path: str | None = None
    max_bytes: int = Field(50_000_000, ge=1_000)
    backup_count: int = Field(10, ge=1)
    syslog: SyslogConfig | None = None


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


class StaticToken(_Strict):
    client_id: str
    scopes: list[str] = Field(default_factory=list)


class StaticTokenAuthConfig(_Strict):
    """Bearer tokens listed in config (from `${ENV}`): simple service-to-service access."""

    kind: Literal["static"]
    tokens: dict[str, StaticToken] = Field(description="token -> its client id and scopes")
    required_scopes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _strong_tokens(self) -> StaticTokenAuthConfig:
        if not self.tokens:
            raise ValueError("list at least one token")
        weak = [t.client_id for token, t in self.tokens.items() if len(token) < 16]
        if weak:
            raise ValueError(f"tokens must be at least 16 characters (weak: {', '.join(weak)})")
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
    plugins: list[str] = Field(default_factory=list)
    plugin_entry_points: bool = Field(
        True, description="Also load plugins installed packages declare (group wellhead.plugins)."
    )
    tools: dict[str, SqlToolConfig] = Field(
        default_factory=dict, description="SQL tools declared in config, by tool name."
    )
    toolsets: ToolsetsConfig = ToolsetsConfig()

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


def expand_env(value: Any, where: str = "") -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in every string; a missing variable is an error."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(f"{where or 'config'}: environment variable ${{{name}}} is not set")

        return _ENV_REF.sub(substitute, value)
    if isinstance(value, dict):
        return {k: expand_env(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def format_validation_error(error: ValidationError) -> str:
    """One line per problem: which key, what was expected."""
    lines = []
    for item in error.errors():
        parts = list(item["loc"])
        if len(parts) > 2 and parts[0] == "sources" and parts[2] in _SOURCE_KINDS:
            del parts[2]  # pydantic's discriminator tag, not a key the user wrote
        location = ".".join(str(part) for part in parts) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; unknown keys are refused)"
        elif item["type"] == "union_tag_invalid":
            message = "unknown source kind; expected one of duckdb, sqlite, postgres"
        lines.append(f"{location}: {message}")
    return "\n".join(lines)


def parse_settings(raw: Any, origin: str = "config") -> Settings:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level")
    try:
        return Settings.model_validate(expand_env(raw))
    except ValidationError as exc:
        raise ConfigError(f"{origin} is invalid:\n{format_validation_error(exc)}") from None


def load_settings(path: str | Path) -> Settings:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if isinstance(raw, dict):
        raw = _resolve_relative_paths(raw, path.parent)
    return parse_settings(raw, origin=str(path))


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
