"""Cost guard: ask the engine what a statement would cost before running it, refuse the hopeless.

A hallucinated cartesian join would otherwise burn the engine for the whole query timeout
(and again for the count and every later page). Before the first page of a guarded statement
the engine plans it, unwrapped (the statement as the agent wrote it, which is what paging
and counting will run), and the estimate is compared with a ceiling:

- PostgreSQL: `EXPLAIN (FORMAT JSON)`, the plan's total cost (PostgreSQL's own unit of work;
  it accounts for a LIMIT stopping early), with the largest step's row estimate in the message;
- DuckDB: `EXPLAIN (FORMAT JSON)`, the largest estimated cardinality of any operator (a cross
  product, which DuckDB leaves unestimated, is the product of its inputs);
- SQLite has no row estimates: only a full cross join (no ON, USING or WHERE) of base tables is
  estimated, as the product of their row counts.

An estimate is a guess: the guard refuses only what is far over the ceiling by the engine's own
numbers, and says how to narrow. Estimates are cached per statement and parameter values for
`cache_ttl_s`, so a repeated statement (a SQL tool, an agent's retry) pays no extra round trip.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from sqlglot import exp

from wellhead.errors import CostExceeded

if TYPE_CHECKING:  # config.py imports this module, and sources import config
    from wellhead.sources.base import Source

log = logging.getLogger("wellhead.sql.cost")

_CACHE_ENTRIES = 1_024
_CACHE_MAX_KEY_CHARS = 4_096
"""A statement plus values longer than this is estimated every time (the cache stays small)."""
_CROSS = {"CROSS_PRODUCT", "NESTED_LOOP_JOIN", "BLOCKWISE_NL_JOIN"}


class CostGuardConfig(BaseModel):
    """`cost_guard`: refuse statements whose plan estimate is over a ceiling."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    free_sql: bool = Field(True, description="Guard the `query` tool's ad-hoc SQL.")
    sql_tools: bool = Field(
        False, description="Guard config-declared SQL tools (each may set `cost_guard`)."
    )
    max_rows: int = Field(
        1_000_000_000,
        gt=0,
        description="DuckDB: most rows any plan step may estimate; SQLite: most rows of a full "
        "cross join.",
    )
    max_postgres_cost: int = Field(
        100_000_000,
        gt=0,
        description="PostgreSQL: the highest total plan cost (EXPLAIN units) allowed.",
    )
    explain_timeout_s: float = Field(5.0, gt=0, description="Deadline of the estimate itself.")
    cache_ttl_s: float = Field(
        300.0, ge=0, description="How long a statement's estimate is reused; 0: never."
    )


@dataclass(frozen=True)
class Estimate:
    """What the engine expects a statement to take."""

    rows: float | None
    """The largest row count of any step (for SQLite: of the cross join)."""
    step: str | None
    """The step that many rows flow through (`Nested Loop`, `CROSS_PRODUCT`, `a × b`)."""
    cost: float | None = None
    """PostgreSQL's total plan cost; None on other engines."""


class CostGuard:
    """Estimates statements on their source and refuses those over the ceiling."""

    def __init__(self, config: CostGuardConfig) -> None:
        self.config = config
        self._cache: OrderedDict[tuple[str, str, str], tuple[float, Estimate | None]] = (
            OrderedDict()
        )
        self.estimates = 0
        """Estimates asked of an engine (cache misses), for tests and benchmarks."""

    async def check(
        self,
        source: Source,
        sql: str,
        tree: exp.Expression | None,
        values: Sequence[Any],
        timeout: float,
        *,
        pageable: bool = True,
    ) -> Estimate | None:
        """Raise `CostExceeded` when the statement is estimated over the ceiling.

        A query (`pageable`) is estimated as it is; `EXPLAIN ANALYZE` runs its target, so the
        target is estimated; other statements (`EXPLAIN`, `SHOW`, `DESCRIBE`) run nothing.
        """
        if not pageable:
            target = _analyzed_target(sql, tree)
            if target is None:
                return None
            sql, tree = target, tree.expression if tree is not None else None
        estimate = await self.estimate(source, sql, tree, values, timeout)
        if estimate is not None:
            self._verdict(source, estimate)
        return estimate

    async def estimate(
        self,
        source: Source,
        sql: str,
        tree: exp.Expression | None,
        values: Sequence[Any],
        timeout: float,
    ) -> Estimate | None:
        """The cached or fresh estimate; None when the engine offers none for this statement."""
        key = (source.name, sql, repr(list(values)))
        cacheable = self.config.cache_ttl_s > 0 and len(key[1]) + len(key[2]) <= (
            _CACHE_MAX_KEY_CHARS
        )
        now = time.monotonic()
        if cacheable:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                self._cache.move_to_end(key)
                return hit[1]
        timeout = min(timeout, self.config.explain_timeout_s)
        self.estimates += 1
        estimate: Estimate | None
        if source.dialect == "postgres":
            estimate = await _postgres(source, sql, values, timeout)
        elif source.dialect == "duckdb":
            estimate = await _duckdb(source, sql, values, timeout)
        elif source.dialect == "sqlite" and tree is not None:
            estimate = await _sqlite(source, tree, timeout, walk_in_thread=len(sql) > 4_096)
        else:
            estimate = None
        if cacheable:
            self._cache[key] = (now + self.config.cache_ttl_s, estimate)
            self._cache.move_to_end(key)
            while len(self._cache) > _CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return estimate

    def _verdict(self, source: Source, estimate: Estimate) -> None:
        config = self.config
        rows = _count(estimate.rows)
        if source.dialect == "postgres":
            if estimate.cost is None or estimate.cost <= config.max_postgres_cost:
                return
            measure = (
                f"PostgreSQL estimates a total cost of {_count(estimate.cost)} (ceiling "
                f"{_count(config.max_postgres_cost)}, cost_guard.max_postgres_cost), with "
                f"{rows} rows at its largest step ({estimate.step})"
            )
        else:
            if estimate.rows is None or estimate.rows <= config.max_rows:
                return
            engine = "DuckDB" if source.dialect == "duckdb" else "SQLite"
            measure = (
                f"{engine} estimates {rows} rows at its largest step ({estimate.step}), over the "
                f"{_count(config.max_rows)}-row ceiling (cost_guard.max_rows)"
            )
        raise CostExceeded(
            f"refused before running: {measure}. This usually means a join without a join "
            "condition (a cartesian product) or a scan of a huge table. Narrow it: join on keys "
            "(JOIN ... ON a.id = b.a_id), filter with WHERE, aggregate (GROUP BY), or add LIMIT."
        )


_EXPLAIN_ANALYZE = re.compile(
    r"^\s*EXPLAIN\s*(?:\((?P<options>[^()]*)\)\s*)?(?P<words>(?:(?:ANALYZE|ANALYSE|VERBOSE)\s+)*)",
    re.IGNORECASE,
)


def _analyzed_target(sql: str, tree: exp.Expression | None) -> str | None:
    """The statement an `EXPLAIN ANALYZE` (which runs it) would run; None for anything else."""
    if not isinstance(tree, exp.Command) or "EXPLAIN" not in str(tree.this).upper():
        return None
    match = _EXPLAIN_ANALYZE.match(sql)
    if match is None:
        return None
    options = (match.group("options") or "").upper()
    words = match.group("words").upper()
    analyze = "ANALY" in words or re.search(r"\bANALY[SZ]E\b(?!\s+(?:FALSE|OFF|0)\b)", options)
    return sql[match.end() :] if analyze else None


def _count(value: float | None) -> str:
    if value is None:
        return "an unknown number of"
    if value >= 1e15 or not math.isfinite(value):
        return f"{value:.3g}"
    return f"{round(value):,}"


# --------------------------------------------------------------------------- PostgreSQL


async def _postgres(source: Source, sql: str, values: Sequence[Any], timeout: float) -> Estimate:
    batch = await source.fetch(f"EXPLAIN (FORMAT JSON) {sql}", values, max_rows=1, timeout=timeout)
    document = batch.rows[0][0]
    plan = (json.loads(document) if isinstance(document, str) else document)[0]["Plan"]
    rows, step = 0.0, str(plan.get("Node Type"))
    for node in _walk(plan, "Plans"):
        planned = float(node.get("Plan Rows") or 0)
        # A parallel step's estimate is per process: the leader and its workers share it.
        planned *= 1 + int(node.get("Workers Planned") or 0) if node.get("Parallel Aware") else 1
        if planned > rows:
            rows, step = planned, str(node.get("Node Type"))
    return Estimate(rows=rows, step=step, cost=float(plan.get("Total Cost") or 0))


def _walk(node: dict[str, Any], children: str) -> list[dict[str, Any]]:
    found, stack = [], [node]
    while stack:
        item = stack.pop()
        found.append(item)
        stack.extend(item.get(children) or [])
    return found


# --------------------------------------------------------------------------- DuckDB


async def _duckdb(
    source: Source, sql: str, values: Sequence[Any], timeout: float
) -> Estimate | None:
    batch = await source.fetch(f"EXPLAIN (FORMAT JSON) {sql}", values, max_rows=4, timeout=timeout)
    for row in batch.rows:
        if len(row) >= 2 and row[0] == "physical_plan":
            roots = json.loads(row[1])
            best: tuple[float, str] = (0.0, "")
            for root in roots:
                best = max(best, _duckdb_node(root)[1])
            return Estimate(rows=best[0], step=best[1] or None)
    log.warning("DuckDB EXPLAIN returned no physical_plan; the statement is not cost-guarded")
    return None


def _duckdb_node(node: dict[str, Any]) -> tuple[float, tuple[float, str]]:
    """(this operator's estimated rows, the largest (rows, operator) in its subtree)."""
    results = [_duckdb_node(child) for child in node.get("children") or []]
    name = str(node.get("name", "")).strip()
    text = str((node.get("extra_info") or {}).get("Estimated Cardinality", "")).strip()
    try:
        own = float(text.lstrip("~"))
    except ValueError:
        own = math.nan
    if math.isnan(own):
        inputs = [rows for rows, _ in results]
        if name in _CROSS and inputs:
            own = math.prod(inputs)
        else:
            own = max(inputs, default=0.0)
    best = max([(own, name), *(sub for _, sub in results)])
    return own, best


# --------------------------------------------------------------------------- SQLite


async def _sqlite(
    source: Source, tree: exp.Expression, timeout: float, *, walk_in_thread: bool
) -> Estimate | None:
    """The biggest full cross join of base tables in the statement, by their row counts.

    A long statement's tree is walked in a worker thread, as the executor parses it there."""
    worst: Estimate | None = None
    counts: dict[str, float] = {}
    if walk_in_thread:
        joins = await asyncio.to_thread(_full_cross_joins, tree)
    else:
        joins = _full_cross_joins(tree)
    for tables in joins:
        product = 1.0
        for table in tables:
            if table not in counts:
                quoted = exp.to_table(table).sql("sqlite", identify=True)
                try:
                    batch = await source.fetch(
                        f"SELECT count(*) FROM {quoted}", [], max_rows=1, timeout=timeout
                    )
                    counts[table] = float(batch.rows[0][0])
                except Exception:  # noqa: BLE001 - a CTE name, a view that fails: not estimable
                    counts[table] = math.nan
            product *= counts[table]
        if math.isnan(product):
            continue
        if worst is None or (worst.rows or 0) < product:
            worst = Estimate(rows=product, step="cross join of " + " × ".join(tables))
    return worst


def _full_cross_joins(tree: exp.Expression) -> list[list[str]]:
    """Per SELECT without WHERE: its base tables joined with no ON/USING (two or more)."""
    found = []
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    for select in tree.find_all(exp.Select):
        if select.args.get("where") is not None:
            continue
        source = select.args.get("from_") or select.args.get("from")
        joins = select.args.get("joins") or []
        if source is None or not joins:
            continue
        first = source.this
        tables = [_table_name(first, ctes)]
        for join in joins:
            if join.args.get("on") is not None or join.args.get("using"):
                continue
            if join.method or (join.kind or "").upper() in ("SEMI", "ANTI"):
                continue  # NATURAL joins have a condition; semi/anti joins do not multiply
            tables.append(_table_name(join.this, ctes))
        names = [t for t in tables if t is not None]
        if len(names) >= 2 and len(names) == len(tables):
            found.append(names)
    return found


def _table_name(node: exp.Expression, ctes: set[str]) -> str | None:
    if not isinstance(node, exp.Table) or not node.name or node.name.lower() in ctes:
        return None
    return ".".join(part for part in (node.db, node.name) if part)
