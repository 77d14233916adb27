"""The deny-lists of every dialect, assembled into one immutable `Rules` per
(dialect, allow_introspection). Nothing here changes after import, so threads share it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from wellhead.sql.safety import duckdb_rules, mysql_rules, postgres_rules, sqlite_rules
from wellhead.sql.safety.reasons import SETTINGS, Rule


@dataclass(frozen=True)
class DenyList:
    exact: Mapping[str, str]
    prefixes: list[Rule]
    suffixes: list[Rule]
    pragma_ok: frozenset[str] | None
    """When set, `pragma_*` functions are denied unless listed here."""

    def reason(self, name: str) -> str | None:
        name = name.lower()
        if name in self.exact:
            return self.exact[name]
        if self.pragma_ok is not None and name.startswith("pragma_"):
            return None if name in self.pragma_ok else SETTINGS
        for prefix, why in self.prefixes:
            if name.startswith(prefix):
                return why
        for suffix, why in self.suffixes:
            if name.endswith(suffix):
                return why
        return None


_DENY = {
    "duckdb": DenyList(
        duckdb_rules.EXACT, duckdb_rules.PREFIX, duckdb_rules.SUFFIX, duckdb_rules.PRAGMA_OK
    ),
    "sqlite": DenyList(sqlite_rules.EXACT, sqlite_rules.PREFIX, [], sqlite_rules.PRAGMA_OK),
    "postgres": DenyList(postgres_rules.EXACT, postgres_rules.PREFIX, [], None),
    "mysql": DenyList(mysql_rules.EXACT, mysql_rules.PREFIX, [], None),
    "mariadb": DenyList(mysql_rules.EXACT, mysql_rules.PREFIX, [], None),
}
# Denied names that an engine also accepts as a bare table name (SQLite: every one).
EPONYMOUS: dict[str, frozenset[str]] = {"duckdb": duckdb_rules.EPONYMOUS}
_TABLES: dict[str, dict[str, str]] = {
    "postgres": postgres_rules.INTROSPECTION_TABLES,
    "duckdb": duckdb_rules.TABLES,
    "sqlite": {},
    "mysql": mysql_rules.TABLES,
    "mariadb": mysql_rules.TABLES,
}
_TABLE_PREFIXES: dict[str, list[Rule]] = {"postgres": postgres_rules.INTROSPECTION_TABLE_PREFIX}
PATH_SETTINGS = postgres_rules.PATH_SETTINGS


@dataclass(frozen=True)
class Rules:
    """Everything one check consults, fixed per (dialect, allow_introspection); immutable, so
    concurrent checks in worker threads share it safely."""

    dialect: str
    deny: DenyList
    tables: Mapping[str, str]
    """Table or view names refused in any schema (lowercase) -> reason."""
    table_prefixes: list[Rule]
    introspection: bool
    """PostgreSQL only: server introspection (other sessions, settings with paths) allowed."""
    schemas: Mapping[str, str] = field(default_factory=dict)
    """Schemas refused as a table's qualifier (MySQL: mysql, performance_schema, sys)."""
    token_tables: bool = True
    """Also refuse the table names on any token (not only in FROM): off where the names are
    common words (MySQL's information_schema `files`, `disks`; checked when qualified)."""

    def table_reason(self, name: str) -> str | None:
        name = name.lower()
        if name in self.tables:
            return self.tables[name]
        for prefix, why in self.table_prefixes:
            if name.startswith(prefix):
                return why
        return None


def _make_rules(dialect: str, allow_introspection: bool) -> Rules:
    deny = _DENY[dialect]
    tables = _TABLES[dialect]
    prefixes = _TABLE_PREFIXES.get(dialect, [])
    if dialect == "postgres" and not allow_introspection:
        deny = DenyList(
            {**postgres_rules.EXACT, **postgres_rules.INTROSPECTION_FUNCS},
            postgres_rules.PREFIX + postgres_rules.INTROSPECTION_PREFIX,
            [],
            None,
        )
    elif dialect == "postgres":
        tables, prefixes = {}, []
    if dialect in mysql_rules.MYSQL_DIALECTS:
        return Rules(dialect, deny, tables, prefixes, False, mysql_rules.SCHEMAS, False)
    return Rules(dialect, deny, tables, prefixes, allow_introspection and dialect == "postgres")


RULES = {
    (d, allow): _make_rules(d, allow)
    for d in ("duckdb", "sqlite", "postgres", *mysql_rules.MYSQL_DIALECTS)
    for allow in (False, True)
}
