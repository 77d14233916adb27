"""Table-name handling shared by the embedded engines.

An agent names a table as text; that text is only ever matched against the names the
engine itself reported, and identifiers that reach SQL are always quoted, so a table
name can never inject SQL.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from wellhead.errors import InvalidRequest

T = TypeVar("T")


def quote_ident(name: str) -> str:
    """Quote one identifier the SQL-standard way (both DuckDB and SQLite accept it)."""
    return '"' + name.replace('"', '""') + '"'


def resolve(requested: str, known: Iterable[tuple[str, T]], source: str) -> T:
    """Find `requested` among `(display name, entry)` pairs: exact match first, then a
    unique case-insensitive match (both engines fold unquoted identifiers)."""
    entries = list(known)
    wanted = requested.strip()
    for name, entry in entries:
        if name == wanted:
            return entry
    folded = [entry for name, entry in entries if name.casefold() == wanted.casefold()]
    if len(folded) == 1:
        return folded[0]
    raise InvalidRequest(
        f"unknown table {requested!r} in source {source!r}; call list_tables to see the "
        "tables and views you can query"
    )
