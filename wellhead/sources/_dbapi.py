"""Helpers shared by the sources whose drivers follow DB-API (DuckDB, SQLite)."""

from __future__ import annotations

from typing import Any, Protocol

FETCH_CHUNK = 2048


class _Cursor(Protocol):
    def fetchmany(self, size: int) -> list[Any]: ...


def fetch_upto(cursor: _Cursor, limit: int) -> list[tuple[Any, ...]]:
    """Fetch at most `limit` rows in chunks: the engine never produces the rest."""
    rows: list[tuple[Any, ...]] = []
    while len(rows) < limit:
        chunk = cursor.fetchmany(min(FETCH_CHUNK, limit - len(rows)))
        if not chunk:
            break
        rows.extend(chunk)
    return rows
