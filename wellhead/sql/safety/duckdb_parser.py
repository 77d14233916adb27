"""DuckDB's own parser as a second opinion on statement count and type.

DuckDB's Python `execute` runs every statement in a string, so a tokenizer disagreement
between sqlglot and DuckDB would be a smuggling hole: the check asks DuckDB too.
"""

from __future__ import annotations

import threading

from wellhead.errors import UnsafeSQL


class _DuckDBStatementCounter:
    """DuckDB's own parser, used to confirm sqlglot's statement count and type.

    DuckDB's `execute` runs every statement in a string, so a tokenizer disagreement would
    be a smuggling hole. One private in-memory database parses only (no data, no
    extensions). A DuckDB connection must not be used by two threads at once, and parsing
    100 KiB takes DuckDB ~0.15 s, so each thread gets its own cursor (a connection to the
    same database) instead of queueing behind one lock.
    """

    def __init__(self) -> None:
        import duckdb

        self._duckdb = duckdb
        self._con = duckdb.connect(":memory:")
        self._lock = threading.Lock()  # guards cursor creation on the shared connection
        self._local = threading.local()

    def types(self, sql: str) -> list[str]:
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            with self._lock:
                cursor = self._con.cursor()
            self._local.cursor = cursor
        statements = cursor.extract_statements(sql)
        return [str(s.type).rsplit(".", 1)[-1].upper() for s in statements]


_COUNTER_LOCK = threading.Lock()
_COUNTER: list[_DuckDBStatementCounter] = []  # set once, under the lock


def _duckdb_counter() -> _DuckDBStatementCounter:
    if not _COUNTER:
        with _COUNTER_LOCK:
            if not _COUNTER:
                _COUNTER.append(_DuckDBStatementCounter())
    return _COUNTER[0]


def duckdb_agrees(text: str, kind: str) -> None:
    counter = _duckdb_counter()
    try:
        types = counter.types(text)
    except counter._duckdb.Error as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UnsafeSQL(f"could not parse the statement in dialect duckdb: {msg[:200]}") from None
    if len(types) != 1:
        raise UnsafeSQL(f"only one statement per call; found {len(types)}")
    expected = "EXPLAIN" if kind == "explain" else "SELECT"
    if types[0] == "MULTI":
        raise UnsafeSQL(
            "this PIVOT/UNPIVOT runs as several statements in DuckDB and cannot be checked: "
            "list the pivot values explicitly, e.g. PIVOT t ON col IN ('a', 'b') USING ..."
        )
    if types[0] != expected:
        raise UnsafeSQL(f"{types[0]} is not allowed: only read statements are accepted")
