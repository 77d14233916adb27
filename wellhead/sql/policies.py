"""Column policies: deny or mask columns in every statement a caller sends, on every engine.

Masking does not trust the statement to leave a column alone. Every reference to a policed
table, however it is spelled (alias, schema-qualified, quoted, in a CTE, a subquery, a
LATERAL, a UNION branch, a PIVOT), is replaced by a *masking projection*:

    customers AS c   ->   (SELECT "id", sha256(CAST("email" AS VARCHAR)) AS "email", ...
                           FROM customers) AS c

so the rest of the statement only ever sees masked values: `*`, functions over the column,
casts, window functions, JSON of the whole row, joins and predicates (`WHERE email = '...'`
compares the masked value) all work on the mask. Denied columns are left out of the
projection, and any reference to one (`*` and whole-row references included) is refused
first with a message that names it; the refusal is found by qualifying the statement against
the policed tables' columns (sqlglot's qualify and scopes), while the projection alone
already keeps the value out (an undetected reference fails in the engine).

Statements that are not SELECTs (EXPLAIN, DESCRIBE, SUMMARIZE, SHOW) may not name a policed
table, and engine statistics that hold column values (pg_stats, sqlite_stat4, DuckDB
pragma_storage_info) are refused on a source with policies. What masking cannot stop is in
docs/column-policies.md. Pure SQL layer: the caller's scopes arrive as data.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import traverse_scope

from wellhead.errors import ConfigError, PolicyDenied
from wellhead.sources.base import Source
from wellhead.sql.policy_config import ColumnPolicyConfig

Lifted = frozenset[tuple[str, str]]
"""(table, column) pairs whose policy the caller's scopes lift: the cache keys on it."""
NOTHING_LIFTED: Lifted = frozenset()

_HASH = {
    "duckdb": "SHA256(CAST({c} AS VARCHAR))",
    "postgres": "ENCODE(SHA256(CONVERT_TO(CAST({c} AS TEXT), 'UTF8')), 'hex')",
    "sqlite": "WELLHEAD_SHA256(CAST({c} AS TEXT))",
    "mysql": "SHA2(CAST({c} AS CHAR), 256)",
}
_TEXT = {"duckdb": "VARCHAR", "postgres": "TEXT", "sqlite": "TEXT", "mysql": "CHAR"}
REDACTED = "[redacted]"
_WORD = re.compile(r'"((?:[^"]|"")*)"|([A-Za-z_][A-Za-z0-9_$]*)')
_PARTIAL_PREFIX = "***"

# Names whose rows hold column values outside the table: refused on a source with policies.
SIDE_CHANNELS: dict[str, frozenset[str]] = {
    "postgres": frozenset(
        {
            "pg_stats",
            "pg_stats_ext",
            "pg_stats_ext_exprs",
            "pg_statistic",
            "pg_statistic_ext",
            "pg_statistic_ext_data",
            "pg_mcv_list_items",
        }
    ),
    "duckdb": frozenset({"pragma_storage_info", "pragma_metadata_info"}),
    "sqlite": frozenset({"sqlite_stat1", "sqlite_stat2", "sqlite_stat3", "sqlite_stat4"}),
    "mysql": frozenset({"column_statistics", "innodb_cached_indexes"}),
}


@dataclass(frozen=True)
class ColumnRule:
    column: str
    """The column's name as the catalog spells it."""
    policy: str
    keep: int
    unless_scopes: frozenset[str]

    def label(self) -> str:
        return f"partial (last {self.keep})" if self.policy == "partial" else self.policy


@dataclass
class TableRules:
    key: str
    """The table as config names it."""
    config: Mapping[str, ColumnPolicyConfig]
    name: str = ""
    """Normalised table name (unquoted identifiers folded as the engine folds them)."""
    schema: str | None = None
    display: str = ""
    """The catalog's name for the table (describe_table's `table`)."""
    columns: list[str] = field(default_factory=list)
    """Every column in catalog order: the masking projection lists them."""
    types: dict[str, str] = field(default_factory=dict)
    """Column -> catalog type: a `null` mask (and a denied column) keeps its type."""
    rules: dict[str, ColumnRule] = field(default_factory=dict)
    """Lower-case column name -> rule."""


class SourcePolicies:
    """The column policies of one source; loads the policed tables' columns once."""

    def __init__(
        self, source: str, dialect: str, tables: Mapping[str, Mapping[str, ColumnPolicyConfig]]
    ) -> None:
        if dialect not in _HASH:
            raise ConfigError(f"column policies are not supported for dialect {dialect!r}")
        self.source = source
        self.dialect = dialect
        self.tables = [TableRules(key, cols) for key, cols in tables.items()]
        self._by_name: dict[str, list[TableRules]] = {}
        self._liftable = any(c.unless_scopes for t in tables.values() for c in t.values())
        self._loaded = False
        self._lock: asyncio.Lock | None = None
        self._masks: dict[tuple[str, int], Any] = {}
        self._items: dict[tuple[str, frozenset[str]], list[Any]] = {}
        self._schema: dict[str, object] = {}
        self._side = SIDE_CHANNELS[dialect]

    # -- loading ------------------------------------------------------------------------

    async def ready(self, source: Source) -> None:
        """Read each policed table's columns from the catalog (once), failing closed: a
        policy naming a table or column that does not exist is a configuration error,
        raised on every call until it is fixed, never a policy silently not applied."""
        if self._loaded:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._loaded:
                return
            for table in self.tables:
                await self._load(source, table)
            self._by_name = {}
            for table in self.tables:
                self._by_name.setdefault(table.name, []).append(table)
            self._schema = {t.name: {c: "text" for c in t.columns} for t in self.tables}
            self._loaded = True

    async def _load(self, source: Source, table: TableRules) -> None:
        where = f"column_policies.{self.source}.{table.key}"
        try:
            description = await source.describe_table(table.key, 0)
        except Exception as exc:  # noqa: BLE001 - any failure: the policy cannot be applied
            message = getattr(exc, "public_message", type(exc).__name__)
            raise ConfigError(f"{where}: cannot read the table's columns: {message}") from None
        table.display = description.table.name
        table.columns = [c.name for c in description.columns]
        table.types = {c.name: c.type for c in description.columns}
        parsed = exp.to_table(table.display, dialect=self.dialect)
        table.name = self._norm(parsed.this)
        db = parsed.args.get("db")
        table.schema = self._norm(db) if isinstance(db, exp.Identifier) else None
        exact = set(table.columns)
        folded: dict[str, list[str]] = {}
        for name in table.columns:
            folded.setdefault(name.lower(), []).append(name)
        for column, conf in table.config.items():
            found = [column] if column in exact else folded.get(column.lower(), [])
            if len(found) != 1:
                known = ", ".join(table.columns)
                raise ConfigError(
                    f"{where}.{column}: the table has no column {column!r} (columns: {known})"
                )
            table.rules[found[0].lower()] = ColumnRule(
                found[0], conf.policy, conf.keep, frozenset(conf.unless_scopes)
            )

    # -- per caller ---------------------------------------------------------------------

    def lifted(self, scopes: Iterable[str] | None) -> Lifted:
        """The policies this caller's scopes lift (empty for most callers, and always
        empty when no policy names a scope)."""
        if not self._liftable or not scopes:
            return NOTHING_LIFTED
        held = frozenset(scopes)
        return frozenset(
            (table, column)
            for table, columns in ((t.key, t.config) for t in self.tables)
            for column, conf in columns.items()
            if held.intersection(conf.unless_scopes)
        )

    def _active(self, table: TableRules, lifted: Lifted) -> dict[str, ColumnRule]:
        """The rules of a table that apply to this caller, by lower-case column name."""
        if not lifted:
            return table.rules
        lifted_cols = {c.lower() for t, c in lifted if t == table.key}
        return {k: r for k, r in table.rules.items() if k not in lifted_cols}

    # -- statements ---------------------------------------------------------------------

    def check_unpageable(self, sql: str) -> None:
        """EXPLAIN, DESCRIBE, SUMMARIZE, SHOW: no projection can be put inside them, so they
        may not name a policed table (EXPLAIN ANALYZE counts rows of a predicate;
        SUMMARIZE shows min and max)."""
        self._require_loaded()
        names = {t.name for t in self.tables}
        for match in _WORD.finditer(sql):  # words in strings count too: refusing is safe
            quoted, bare = match.group(1), match.group(2)
            text = quoted.replace('""', '"') if quoted is not None else bare
            folded = text if quoted is not None and self.dialect == "postgres" else text.lower()
            if folded in names or text.lower() in self._side:
                raise PolicyDenied(
                    f"this statement names {text!r}, which has column policies; EXPLAIN, "
                    "DESCRIBE, SUMMARIZE and SHOW are refused on such tables: run a SELECT "
                    "(masked columns read masked) or use describe_table"
                )

    def apply(self, tree: exp.Expression, lifted: Lifted) -> exp.Expression | None:
        """Replace every policed table by its masking projection, in place; None when the
        statement reads no policed table. PolicyDenied for a denied column or a side
        channel."""
        self._require_loaded()
        self._refuse_side_channels(tree)
        refs = [t for t in tree.find_all(exp.Table) if self._match(t) is not None]
        if not refs:
            return None
        denied = {
            t.key: {k for k, r in self._active(t, lifted).items() if r.policy == "deny"}
            for t in self.tables
        }
        if any(denied.values()):
            self._refuse_joins(tree, denied)
            if _may_name(tree, refs, denied):
                self._refuse_denied(tree, denied)
        for node in tree.find_all(exp.Describe, exp.Summarize):
            if any(self._match(t) is not None for t in node.find_all(exp.Table)):
                raise PolicyDenied(
                    "DESCRIBE and SUMMARIZE of a table with column policies are refused "
                    "(SUMMARIZE shows min and max values); use describe_table"
                )
        for ref in refs:  # in place: the tree is this compile's own (a fresh parse)
            table = self._match(ref)
            if table is not None:
                ref.replace(self._projection(ref, table, lifted))
        return tree

    def _require_loaded(self) -> None:
        """Fail closed: without the catalog no table would match, and nothing be policed."""
        if not self._loaded:
            raise ConfigError(f"column policies of source {self.source!r} are not loaded yet")

    def _refuse_joins(self, tree: exp.Expression, denied: Mapping[str, set[str]]) -> None:
        """`USING (ssn)` names a denied column without a column node; NATURAL JOIN may join
        on one without naming it at all."""
        names = set().union(*denied.values())
        for join in tree.find_all(exp.Join):
            for ident in join.args.get("using") or []:
                if isinstance(ident, exp.Expression) and ident.name.lower() in names:
                    raise PolicyDenied(
                        f"JOIN ... USING ({ident.name}) names a column denied by a column "
                        f"policy on source {self.source!r}; join on other columns"
                    )
            if join.args.get("kind") == "NATURAL" or join.args.get("method") == "NATURAL":
                select = join.parent
                tables = list(select.find_all(exp.Table)) if select is not None else []
                for ref in tables:
                    table = self._match(ref)
                    if table is not None and denied.get(table.key):
                        raise PolicyDenied(
                            f"NATURAL JOIN with {table.display} could join on its denied "
                            f"column(s) {', '.join(sorted(self._names(table, denied)))}; "
                            "use JOIN ... ON with the columns you mean"
                        )

    def _refuse_side_channels(self, tree: exp.Expression) -> None:
        for node in tree.find_all(exp.Identifier, exp.Anonymous):
            name = node.name.lower()
            if name in self._side:
                raise PolicyDenied(
                    f"{name} is not allowed on source {self.source!r}: it holds column values "
                    "(statistics) outside the tables, and this source has column policies"
                )

    def _refuse_denied(self, tree: exp.Expression, denied: Mapping[str, set[str]]) -> None:
        """Name the first denied column the statement reads, `*` and whole rows included."""
        try:
            qualified = qualify(
                tree.copy(),
                schema=self._schema,
                dialect=self.dialect,
                validate_qualify_columns=False,
                quote_identifiers=False,
            )
            scopes = traverse_scope(qualified)
        except Exception:  # noqa: BLE001 - unanalysable: the projection still keeps it NULL
            return
        star = _has_star(tree)
        for scope in scopes:
            self._refuse_stars(scope, denied)
            whole_rows: list[Any] = list(scope.expression.find_all(_TABLE_COLUMN))
            for node in whole_rows:  # DuckDB's whole-row reference
                source = scope.sources.get(node.name)
                table = self._match(source) if isinstance(source, exp.Table) else None
                if table is not None and denied.get(table.key):
                    raise PolicyDenied(_whole_row(table, self._names(table, denied)))
            for column in scope.columns:
                source = scope.sources.get(column.table) if column.table else None
                if not column.table and column.name in scope.sources:
                    source = scope.sources[column.name]  # a whole-row reference: `t`
                    table = self._match(source) if isinstance(source, exp.Table) else None
                    if table is not None and denied.get(table.key):
                        raise PolicyDenied(_whole_row(table, self._names(table, denied)))
                    continue
                if not isinstance(source, exp.Table):
                    continue
                table = self._match(source)
                if table is None:
                    continue
                name = _unaliased(source, table, column.name).lower()
                if name not in denied.get(table.key, set()):
                    continue
                rule = table.rules[name]
                hint = (
                    f" (SELECT * includes it: list the columns you need, without {rule.column})"
                    if star
                    else ""
                )
                raise PolicyDenied(
                    f"column {table.display}.{rule.column} is denied by a column policy on "
                    f"source {self.source!r}; it may not be read, filtered, joined or sorted "
                    f"on{hint}"
                )

    def _refuse_stars(self, scope: Any, denied: Mapping[str, set[str]]) -> None:
        """A `*` / `t.*` qualify could not expand (a table of unknown columns is joined in)."""
        select = scope.expression
        if not isinstance(select, exp.Select):
            return
        for item in select.expressions:
            if isinstance(item, exp.Star):
                names, excluded = list(scope.sources), item.args.get("except") or []
            elif isinstance(item, exp.Column) and isinstance(item.this, exp.Star):
                names, excluded = [item.table], item.this.args.get("except") or []
            else:
                continue
            left_out = {e.name.lower() for e in excluded if isinstance(e, exp.Expression)}
            for name in names:
                source = scope.sources.get(name)
                table = self._match(source) if isinstance(source, exp.Table) else None
                hidden = denied.get(table.key, set()) - left_out if table else set()
                if table is not None and hidden:
                    column = table.rules[sorted(hidden)[0]].column
                    raise PolicyDenied(
                        f"column {table.display}.{column} is denied by a column policy on "
                        f"source {self.source!r}, and * includes it: list the columns you "
                        f"need, without {column}"
                    )

    def _names(self, table: TableRules, denied: Mapping[str, set[str]]) -> list[str]:
        return [table.rules[k].column for k in denied.get(table.key, set())]

    def _match(self, ref: exp.Table) -> TableRules | None:
        """The policed table a FROM item names, in any spelling the engine resolves to it."""
        if not self._by_name or not isinstance(ref.this, exp.Identifier):
            return None
        candidates = self._by_name.get(self._norm(ref.this))
        if not candidates:
            return None
        db = ref.args.get("db")
        if isinstance(db, exp.Identifier):
            schema = self._norm(db)
            candidates = [t for t in candidates if t.schema in (None, schema)]
            return candidates[0] if candidates else None
        if len(candidates) > 1:
            names = ", ".join(t.display for t in candidates)
            raise PolicyDenied(
                f"table {ref.name} is ambiguous between policed tables {names}: qualify it "
                "with its schema"
            )
        return candidates[0]

    def _projection(self, ref: exp.Table, table: TableRules, lifted: Lifted) -> exp.Subquery:
        rules = self._active(table, lifted)
        inner = exp.Table(
            this=ref.this.copy(),
            db=_copy(ref.args.get("db")),
            catalog=_copy(ref.args.get("catalog")),
        )
        for arg in ("only", "sample", "version", "when", "system_time", "hints"):
            if ref.args.get(arg) is not None:
                inner.set(arg, _copy(ref.args[arg]))
        key = (table.key, frozenset(rules))
        items = self._items.get(key)
        if items is None:
            items = self._items[key] = self._select_list(table, rules)
        alias = ref.args.get("alias")
        if alias is None:
            alias = exp.TableAlias(this=ref.this.copy())
        else:
            alias = alias.copy()
        select = exp.select(*(item.copy() for item in items)).from_(inner)
        subquery = exp.Subquery(this=select, alias=alias)
        for arg in ("pivots", "joins", "laterals"):  # `FROM (t JOIN u ON ...)` hangs u on t
            if ref.args.get(arg):
                subquery.set(arg, [node.copy() for node in ref.args[arg]])
        return subquery

    def _select_list(self, table: TableRules, rules: Mapping[str, ColumnRule]) -> list[Any]:
        """The projection's columns in catalog order, masked per rule (built once per table
        and set of active rules, copied into each statement)."""
        items: list[Any] = []
        for name in table.columns:
            rule = rules.get(name.lower())
            column = exp.column(exp.to_identifier(name, quoted=True))
            if rule is None:
                items.append(column)
            elif rule.policy in ("deny", "null"):  # a typed NULL keeps `* EXCLUDE`, positions
                items.append(exp.alias_(self._null(table.types.get(name)), name, quoted=True))
            else:
                items.append(exp.alias_(self._mask(rule, column), name, quoted=True))
        return items

    def _null(self, type_name: str | None) -> Any:
        """NULL of the column's own type, so sums and comparisons still bind (plain NULL when
        the catalog's type name is not one sqlglot can write back)."""
        if type_name:
            try:
                return exp.cast(exp.null(), exp.DataType.build(type_name, dialect=self.dialect))
            except (SqlglotError, ValueError):
                pass
        return exp.null()

    def _mask(self, rule: ColumnRule, column: exp.Expression) -> exp.Expression:
        key = (rule.policy, rule.keep)
        template: Any = self._masks.get(key)
        if template is None:
            template = sqlglot.parse_one(
                _mask_sql(rule.policy, rule.keep, self.dialect, "__wh_col__"), read=self.dialect
            )
            self._masks[key] = template
        return template.copy().transform(
            lambda n: column.copy() if isinstance(n, exp.Column) and n.name == "__wh_col__" else n
        )

    # -- describe_table -----------------------------------------------------------------

    def describe(self, table: str, lifted: Lifted) -> dict[str, str]:
        """Column -> the policy this caller gets, for a table as the catalog names it."""
        found = self._table_named(table)
        if found is None:
            return {}
        active = self._active(found, lifted)
        out = {}
        for key, rule in found.rules.items():
            out[rule.column] = rule.label() if key in active else f"{rule.label()} (lifted)"
        return out

    def mask_rows(
        self, table: str, columns: list[str], rows: list[list[Any]], lifted: Lifted
    ) -> list[list[Any]]:
        """Sample rows as the caller may see them (masked in Python, like the SQL masks)."""
        found = self._table_named(table)
        if found is None:
            return rows
        active = self._active(found, lifted)
        rules = [active.get(name.lower()) for name in columns]
        if not any(rules):
            return rows
        return [
            [
                v if r is None else mask_value(r.policy, r.keep, v)
                for v, r in zip(row, rules, strict=False)
            ]
            for row in rows
        ]

    def _table_named(self, table: str) -> TableRules | None:
        for candidate in self.tables:
            if table in (candidate.display, candidate.key):
                return candidate
        return None

    # -- names --------------------------------------------------------------------------

    def _norm(self, ident: exp.Expression) -> str:
        """How the engine compares this identifier: PostgreSQL folds unquoted names to lower
        case and keeps quoted ones; DuckDB and SQLite ignore case either way."""
        name = ident.name
        if self.dialect == "postgres" and isinstance(ident, exp.Identifier) and ident.quoted:
            return name
        return name.lower()


class ColumnPolicies:
    """Every source's policies, by source name; sources without any are absent."""

    def __init__(self, by_source: Mapping[str, SourcePolicies]) -> None:
        self._by_source = dict(by_source)

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Mapping[str, Mapping[str, ColumnPolicyConfig]]],
        dialects: Mapping[str, str],
    ) -> ColumnPolicies:
        return cls(
            {
                name: SourcePolicies(name, dialects[name], tables)
                for name, tables in config.items()
                if any(tables.values())
            }
        )

    def get(self, source: str) -> SourcePolicies | None:
        return self._by_source.get(source)

    def __bool__(self) -> bool:
        return bool(self._by_source)


def _mask_sql(policy: str, keep: int, dialect: str, column: str) -> str:
    text = f"CAST({column} AS {_TEXT[dialect]})"
    if policy == "hash":
        return _HASH[dialect].format(c=column)
    if policy == "redact":
        return f"CASE WHEN {column} IS NULL THEN NULL ELSE '{REDACTED}' END"
    if policy == "partial":
        tail = f"SUBSTR({text}, LENGTH({text}) - {keep - 1})"
        joined = (  # MySQL reads `||` as OR
            f"CONCAT('{_PARTIAL_PREFIX}', {tail})"
            if dialect == "mysql"
            else f"'{_PARTIAL_PREFIX}' || {tail}"
        )
        return (
            f"CASE WHEN {column} IS NULL THEN NULL WHEN LENGTH({text}) > {keep} "
            f"THEN {joined} ELSE '{_PARTIAL_PREFIX}' END"
        )
    if policy == "null":
        return f"CAST(NULL AS {_TEXT[dialect]})"
    raise ConfigError(f"unknown mask {policy!r}")


def mask_value(policy: str, keep: int, value: Any) -> Any:
    """One value masked in Python the way the SQL masks it (for describe_table samples)."""
    if value is None or policy in ("deny", "null"):
        return None
    text = value if isinstance(value, str) else str(value)
    if policy == "hash":
        return sha256_hex(text)
    if policy == "redact":
        return REDACTED
    if policy == "partial":
        return _PARTIAL_PREFIX + text[-keep:] if len(text) > keep else _PARTIAL_PREFIX
    raise ConfigError(f"unknown mask {policy!r}")


def sha256_hex(value: Any) -> str | None:
    """The `hash` mask: SHA-256 of the value's text, in hex (SQLite registers this)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return hashlib.sha256(value).hexdigest()
    return hashlib.sha256(str(value).encode("utf-8", "surrogatepass")).hexdigest()


def _unaliased(ref: exp.Table, table: TableRules, name: str) -> str:
    """The table's own name for a column renamed by an alias list: `FROM t AS p(a, b)`."""
    alias = ref.args.get("alias")
    renamed = [c.name for c in alias.columns] if isinstance(alias, exp.TableAlias) else []
    for position, given in enumerate(renamed):
        if given.lower() == name.lower() and position < len(table.columns):
            return table.columns[position]
    return name


def _whole_row(table: TableRules, denied: list[str]) -> str:
    return (
        f"a whole-row reference to {table.display} includes denied column(s) "
        f"{', '.join(sorted(denied))}; select the columns you need instead"
    )


_TABLE_COLUMN: type = getattr(exp, "TableColumn", exp.Column)
"""sqlglot's node for a table named as a value (`SELECT t FROM t`) where it has one."""


def _copy(node: Any) -> Any:
    return node.copy() if isinstance(node, exp.Expression) else node


def _may_name(tree: exp.Expression, refs: list[exp.Table], denied: Mapping[str, set[str]]) -> bool:
    """Whether the statement could name a denied column at all: a `*`, a column spelled like
    one, a whole-row reference (a column spelled like a policed table's alias) or an alias
    list that renames columns. Most statements are none of these and skip the qualify pass
    (the projection keeps a denied column NULL whatever the answer)."""
    if _has_star(tree):
        return True
    names = set().union(*denied.values())
    for ref in refs:
        alias = ref.args.get("alias")
        if isinstance(alias, exp.TableAlias) and alias.columns:
            return True
        names.add((ref.alias or ref.name).lower())
    nodes: list[Any] = list(tree.find_all(exp.Column, _TABLE_COLUMN))
    return any(node.name.lower() in names for node in nodes)


def _has_star(tree: exp.Expression) -> bool:
    """A `*` or `t.*` in some select list (not `count(*)`), or DuckDB's `COLUMNS(...)`."""
    for select in tree.find_all(exp.Select):
        for item in select.expressions:
            if isinstance(item, exp.Star) or (
                isinstance(item, exp.Column) and isinstance(item.this, exp.Star)
            ):
                return True
    return hasattr(exp, "Columns") and tree.find(exp.Columns) is not None
