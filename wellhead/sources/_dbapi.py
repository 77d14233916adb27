"""Helpers shared by the sources whose drivers follow DB-API (DuckDB, SQLite)."""

from __future__ import annotations

from typing import Any, Protocol

FETCH_CHUNK = 2048
DISCOVERY_TIMEOUT = 15.0
"""Seconds a catalog query (list or describe tables) may take."""
PING_TIMEOUT = 5.0
MAX_ERROR_CHARS = 2000
"""Engine error messages are cut to this length before they reach an agent."""


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
