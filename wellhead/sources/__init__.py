"""Build a source from its config entry. Engines are imported only when used."""

from __future__ import annotations

from wellhead.config import (
    DuckDBSourceConfig,
    MySQLSourceConfig,
    PostgresSourceConfig,
    SourceConfig,
    SQLiteSourceConfig,
)
from wellhead.sources.base import Source


def build_source(name: str, config: SourceConfig, *, query_timeout_s: float) -> Source:
    """Each engine maps every key of its config entry itself (`from_config`), so none is lost."""
    if isinstance(config, DuckDBSourceConfig):
        from wellhead.sources.duckdb import DuckDBSource

        return DuckDBSource.from_config(name, config)
    if isinstance(config, SQLiteSourceConfig):
        from wellhead.sources.sqlite import SQLiteSource

        return SQLiteSource.from_config(name, config)
    if isinstance(config, PostgresSourceConfig):
        from wellhead.sources.postgres import PostgresSource

        return PostgresSource.from_config(name, config, query_timeout_s=query_timeout_s)
    if isinstance(config, MySQLSourceConfig):
        from wellhead.sources.mysql import MySQLSource

        return MySQLSource.from_config(name, config, query_timeout_s=query_timeout_s)
    raise TypeError(f"unsupported source config {type(config).__name__}")
