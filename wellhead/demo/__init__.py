"""Deterministic demo commerce dataset, generated on first use (no binary blobs in the repo)."""

from wellhead.demo.build import (
    DEMO_COUNTS,
    DEMO_SCHEMA_VERSION,
    DEMO_TABLES,
    demo_database_path,
    ensure_demo_database,
)

__all__ = [
    "DEMO_COUNTS",
    "DEMO_SCHEMA_VERSION",
    "DEMO_TABLES",
    "demo_database_path",
    "ensure_demo_database",
]
