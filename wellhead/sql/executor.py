"""Run one agent statement as one honest page: safe, deadlined, budgeted, resumable.

The flow for a call: check the SQL in the source's dialect, bind `:name` parameters, learn
the output columns (a LIMIT 0 probe), fetch exactly one page in a deterministic total order,
fit it to the byte budget, and, on a first page with more to come, count the total when that
is cheap (bounded by `count_timeout_s`). Anything left over is reachable through the cursor.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from wellhead.config import LimitsConfig
from wellhead.errors import CursorError, InvalidRequest, QueryFailed, QueryTimeout, UnsafeSQL
from wellhead.sources.base import Column, RowBatch, Source
from wellhead.sql import encoding
from wellhead.sql.paging import CursorCodec, CursorState, count_tree, paged_tree, probe_tree
from wellhead.sql.safety import CheckedStatement, bind_named, check_read_only

ProgressCallback = Callable[[float, float], Awaitable[None]]
_PROGRESS_EVERY_S = 1.0
_ENVELOPE_SLACK = 256
_ENCODE_IN_THREAD_ROWS = 2_000


@dataclass(frozen=True)
class Page:
    source: str
    columns: list[Column]
    rows: list[list[Any]]
    offset: int
    total_rows: int | None
    next_cursor: str | None
    note: str | None

    @property
    def truncated(self) -> bool:
        return self.next_cursor is not None


@dataclass(frozen=True)
class BoundStatement:
    """A checked statement with its `:name` parameters turned into positional ones."""

    checked: CheckedStatement
    sql: str
    tree: exp.Expression | None
    """The bound statement parsed again, for paging; None when it is not pageable."""
    values: list[Any]


@dataclass(frozen=True)
class PageRequest:
    tool: str
    source: str
    sql: str
    params: dict[str, Any]
    offset: int = 0
    total: int | None = None
    max_rows: int | None = None
    budget_bytes: int | None = None


class QueryExecutor:
    """Turns page requests into pages for a set of named sources."""

    def __init__(self, sources: dict[str, Source], limits: LimitsConfig, codec: CursorCodec):
        self.sources = sources
        self.limits = limits
        self.codec = codec

    def source(self, name: str) -> Source:
        try:
            return self.sources[name]
        except KeyError:
            known = ", ".join(sorted(self.sources))
            raise InvalidRequest(f"unknown source '{name}'; available sources: {known}") from None

    def resume(self, cursor: str, *, tool: str, sql: str | None, source: str | None) -> CursorState:
        """Decode a cursor and check it belongs to this tool and (if repeated) this query."""
        state = self.codec.decode(cursor)
        if state.tool != tool:
            raise CursorError(f"this cursor belongs to tool '{state.tool}', not '{tool}'")
        if sql is not None and sql.strip() != state.sql.strip():
            raise CursorError(
                "this cursor belongs to a different query; pass only the cursor to continue, "
                "or run the new query without one"
            )
        if source is not None and source != state.source:
            raise CursorError(f"this cursor belongs to source '{state.source}', not '{source}'")
        return state

    def check(self, source: Source, sql: str) -> CheckedStatement:
        if not sql or not sql.strip():
            raise InvalidRequest("sql is empty; pass one read-only SQL statement")
        return check_read_only(sql, source.dialect)

    async def run(self, request: PageRequest, on_progress: ProgressCallback | None = None) -> Page:
        limits = self.limits
        max_rows = request.max_rows or limits.default_rows_per_page
        if not 1 <= max_rows <= limits.max_rows_per_page:
            raise InvalidRequest(
                f"max_rows must be between 1 and {limits.max_rows_per_page} (got {max_rows})"
            )
        budget = request.budget_bytes or limits.result_budget_bytes
        if not 1_024 <= budget <= limits.max_result_budget_bytes:
            raise InvalidRequest(
                f"budget_bytes must be between 1024 and {limits.max_result_budget_bytes} "
                f"(got {budget})"
            )
        source = self.source(request.source)
        statement = self.bind(source, self.check(source, request.sql), request.params)
        deadline = time.monotonic() + limits.query_timeout_s

        reporter = None
        if on_progress is not None:
            reporter = asyncio.ensure_future(_report_progress(on_progress, limits.query_timeout_s))
        try:
            page = await self._page(source, statement, request, max_rows, budget, deadline)
        finally:
            if reporter is not None:
                reporter.cancel()
        return page

    def bind(
        self, source: Source, checked: CheckedStatement, params: dict[str, Any]
    ) -> BoundStatement:
        sql, values = bind_named(checked, params, source.placeholder_style)  # type: ignore[arg-type]
        tree: exp.Expression | None = None
        if checked.pageable:
            try:
                tree = sqlglot.parse_one(sql, read=source.dialect)  # type: ignore[assignment]
            except SqlglotError as exc:  # the checked text parsed; its bound twin must too
                raise UnsafeSQL(f"could not re-parse the bound statement: {exc}") from None
        return BoundStatement(checked=checked, sql=sql, tree=tree, values=values)

    async def _page(
        self,
        source: Source,
        statement: BoundStatement,
        request: PageRequest,
        max_rows: int,
        budget: int,
        deadline: float,
    ) -> Page:
        offset = request.offset
        if statement.tree is not None:
            probe = await self._fetch(source, statement, probe_tree(statement.tree), 0, deadline)
            tree = paged_tree(
                statement.tree,
                column_count=len(probe.columns),
                offset=offset,
                limit=max_rows + 1,
                dialect=source.dialect,
                column_types=[c.type for c in probe.columns],
            )
            batch = await self._fetch(source, statement, tree, max_rows, deadline)
            rows: list[tuple[Any, ...]] = batch.rows
        else:
            batch = await self._fetch(source, statement, None, offset + max_rows, deadline)
            rows = batch.rows[offset:]

        columns = batch.columns
        names = [c.name for c in columns]
        envelope = self._envelope_size(request, columns, offset)
        if len(rows) > _ENCODE_IN_THREAD_ROWS:  # converting a big page is CPU work: off the loop
            kept, _ = await asyncio.to_thread(
                encoding.fit_rows, rows, max(budget - envelope, 1), names
            )
        else:
            kept, _ = encoding.fit_rows(rows, max(budget - envelope, 1), names)
        more = batch.more or len(kept) < len(rows)

        total = request.total
        if total is None:
            if not more:
                total = offset + len(kept)
            elif offset == 0 and statement.tree is not None:
                total = await self._count(source, statement, statement.tree, deadline)

        next_cursor = None
        if more:
            next_cursor = self.codec.encode(
                CursorState(
                    tool=request.tool,
                    source=request.source,
                    sql=request.sql,
                    params=request.params,
                    offset=offset + len(kept),
                    total=total,
                )
            )
        return Page(
            source=request.source,
            columns=columns,
            rows=kept,
            offset=offset,
            total_rows=total,
            next_cursor=next_cursor,
            note=_note(offset, len(kept), total, more, batch.more, max_rows),
        )

    async def _fetch(
        self,
        source: Source,
        statement: BoundStatement,
        tree: exp.Expression | None,
        max_rows: int,
        deadline: float,
        *,
        timeout: float | None = None,
    ) -> RowBatch:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timeout(self.limits.query_timeout_s)
        sql = statement.sql if tree is None else tree.sql(dialect=source.dialect)
        try:
            return await source.fetch(
                sql,
                statement.values,
                max_rows=max_rows,
                timeout=min(remaining, timeout or remaining),
            )
        except QueryTimeout:
            if timeout is not None and time.monotonic() < deadline:
                raise  # only the count's own limit passed; the caller decides
            raise _timeout(self.limits.query_timeout_s) from None
        except QueryFailed as exc:
            raise QueryFailed(_without_wrapper_context(exc.public_message)) from None

    async def _count(
        self, source: Source, statement: BoundStatement, tree: exp.Expression, deadline: float
    ) -> int | None:
        """The total row count, or None when counting would take longer than allowed."""
        if self.limits.count_timeout_s <= 0:
            return None
        try:
            batch = await self._fetch(
                source,
                statement,
                count_tree(tree),
                1,
                deadline,
                timeout=self.limits.count_timeout_s,
            )
        except QueryTimeout:
            if time.monotonic() >= deadline:
                raise
            return None
        return int(batch.rows[0][0]) if batch.rows else None

    def _envelope_size(self, request: PageRequest, columns: list[Column], offset: int) -> int:
        """Bytes of everything in a result except its rows (columns, cursor, note)."""
        cursor = self.codec.encode(
            CursorState(request.tool, request.source, request.sql, request.params, 10**12, 10**12)
        )
        meta = {"columns": [{"name": c.name, "type": c.type} for c in columns], "cursor": cursor}
        return encoding.encoded_size(meta) + _ENVELOPE_SLACK


def _note(
    offset: int, shown: int, total: int | None, more: bool, more_rows: bool, max_rows: int
) -> str | None:
    if not more:
        if offset:
            return f"Last page: rows {offset + 1}-{offset + shown}."
        return None
    of_total = f"{total:,}" if total is not None else "an uncounted number of"
    reason = "max_rows" if shown == max_rows and more_rows else "the byte budget"
    return (
        f"Showing rows {offset + 1}-{offset + shown} of {of_total} (page limited by {reason}). "
        "Pass next_cursor as `cursor` for the next page, or narrow the query "
        "(WHERE, fewer columns, GROUP BY, LIMIT)."
    )


def _without_wrapper_context(message: str) -> str:
    """Engine errors quote the statement as run; paging wrapped it, which would only confuse."""
    if "_wh_q" not in message:
        return message
    kept = []
    for line in message.splitlines():
        if line.startswith("LINE ") or (line.strip() and set(line.strip()) <= {"^"}):
            continue
        kept.append(line)
    return "\n".join(kept).strip()


def _timeout(seconds: float) -> QueryTimeout:
    return QueryTimeout(
        f"query exceeded the {seconds:g} s limit and was cancelled in the engine; narrow it "
        "(add WHERE filters, aggregate, or LIMIT) or query a smaller table"
    )


async def _report_progress(on_progress: ProgressCallback, limit_s: float) -> None:
    started = time.monotonic()
    while True:
        await asyncio.sleep(_PROGRESS_EVERY_S)
        await on_progress(time.monotonic() - started, limit_s)
