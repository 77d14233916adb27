"""Layer 1 of "read-only that holds": prove a statement is one read, before any engine sees it.

The check parses the agent's SQL with sqlglot in the source's dialect and fails closed:
exactly one statement, of a read kind (SELECT and friends, EXPLAIN of one, DuckDB
DESCRIBE/SHOW/SUMMARIZE, PostgreSQL SHOW), with no write or DDL node anywhere in the tree,
no locking clause, no SELECT ... INTO, and no function from a per-dialect deny-list of things
that touch the filesystem, the network, extensions, settings, sequences, other sessions or
run dynamic SQL. Layer 2 (the engine opened read-only) must hold on its own as well.

Decisions worth knowing (each is tested):

* Statement splitting is done on sqlglot's tokens, so a ';' inside a string, a quoted
  identifier, a dollar-quoted body or a comment never counts. For DuckDB, whose Python
  `execute` runs every statement in a string, DuckDB's own parser re-counts the statements
  and must agree (one statement, of type SELECT or EXPLAIN).
* Control characters, zero-width/format characters and non-ASCII whitespace are refused
  outside string literals and quoted identifiers: engines and sqlglot disagree about them.
* Reading settings: PostgreSQL `current_setting('name')` and `SHOW name` are allowed for
  ordinary settings (read-only, the engine enforces privileges), not for settings that hold
  a file path, a command or a connection string, and not `SHOW ALL` / `pg_settings`. DuckDB
  `current_setting`, `duckdb_settings`, `duckdb_secrets` and its `pg_catalog.pg_settings`
  view are denied: DuckDB settings can hold S3 keys and temp/allowed paths.
* Server introspection: every caller shares one PostgreSQL role, so `pg_stat_activity`
  (and `pg_stat_get_activity()`, `pg_locks`, `pg_stat_statements`, `pg_prepared_xacts`,
  memory contexts, hba/config files...) would show other callers' SQL with its literals.
  Refused by name in any schema and any quoting, and on tokens as well as in the tree;
  `allow_introspection=True` lifts it for a source that wants it. DuckDB
  `duckdb_databases`/`pragma_database_list`/`duckdb_extensions` reveal file paths: refused.
* Nesting: more than MAX_NESTING levels (tokens) or MAX_TREE_DEPTH (tree) is refused as
  "too deeply nested" before sqlglot or SQL generation can hit the recursion limit.
* `volatile` and `percent_limit` on CheckedStatement tell the paging layer which
  statements cannot be split into pages that add up (random(), now(), TABLESAMPLE) and
  which LIMIT is a percentage (`LIMIT 10%`), not a row count.
* `pg_sleep` / DuckDB `sleep_ms` are allowed: they only spend time, and the query deadline
  cancels them like any slow query. `currval`/`lastval` are allowed (they read this
  session's sequence state and cannot change it); `nextval`/`setval` are denied.
* DuckDB table names that look like paths (`FROM 'orders.csv'`, `FROM "s3://b/x"`) are
  denied: DuckDB would scan the file directly (a replacement scan).
* SQLite `pragma_*` table functions are denied except the schema readers
  (`pragma_table_info`, ...); DuckDB `pragma_*` likewise except read-only introspection.
* Named parameters are written `:name`. sqlglot's DuckDB parser reads `:name` at the start
  of an expression as a prefix alias (`SELECT a: 1`), so for DuckDB the check parses a copy
  where each `:name` is spelled `$name` (same length, same offsets). A `:` right after an
  identifier, number, string or closing bracket is never a placeholder (`{'a':x}`,
  `arr[1:n]`, DuckDB `alias: expr`); `arr[:n]` IS a placeholder, write `arr[ : n]` for a
  slice bound by a column.
"""

from __future__ import annotations

from wellhead.sql.safety.check import (
    DIALECTS,
    MAX_NESTING,
    MAX_TREE_DEPTH,
    CheckedStatement,
    bind_named,
    check_read_only,
    named_parameters,
)

__all__ = [
    "DIALECTS",
    "MAX_NESTING",
    "MAX_TREE_DEPTH",
    "CheckedStatement",
    "bind_named",
    "check_read_only",
    "named_parameters",
]
