"""Build a source from its config entry. Engines are imported only when used."""

from __future__ import annotations

from wellhead.config import (
    DuckDBSourceConfig,
    PostgresSourceConfig,
    SourceConfig,
    SQLiteSourceConfig,
)
from wellhead.sources.base import Source


def build_source(name: str, config: SourceConfig, *, query_timeout_s: float) -> Source:
    if isinstance(config, DuckDBSourceConfig):
        from wellhead.sources.duckdb import DuckDBSource

        return DuckDBSource(
            name,
            path=config.path,
            views=config.views or None,
            threads=config.threads,
            memory_limit=config.memory_limit,
        )
    if isinstance(config, SQLiteSourceConfig):
        from wellhead.sources.sqlite import SQLiteSource

        return SQLiteSource(name, path=config.path)
    if isinstance(config, PostgresSourceConfig):
        from wellhead.sources.postgres import PostgresSource

        return PostgresSource(
            name,
            dsn=config.dsn,
            schemas=config.schemas,
            pool_min=config.pool.min_size,
            pool_max=config.pool.max_size,
            acquire_timeout=config.pool.acquire_timeout_s,
            statement_timeout_ms=int(query_timeout_s * 1000) + 1000,
            allow_privileged_role=config.allow_privileged_role,
        )
    raise TypeError(f"unsupported source config {type(config).__name__}")
