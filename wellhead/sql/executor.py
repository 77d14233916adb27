"""Run one agent statement as one honest page: safe, deadlined, budgeted, resumable.

A first page costs one engine round trip when the result is small: the statement runs as
written with a row limit of one more than the page, and when that is complete and fits the
budget it is the answer. Only a result that really has more pays for exactness: the page is
fetched again in a deterministic total order (the user's ORDER BY, then every column), the
total is counted when that is cheap (bounded by `count_timeout_s`), and the cursor carries
the column types so later pages need no probe.

Statements are checked, bound and compiled once: a bounded cache keyed by source, SQL text
and parameter names holds the checked statement, its positional SQL and its page templates,
so repeated SQL (SQL tools, re-runs with new values, every page of a walk) skips sqlglot.
Large texts are checked in a worker thread so parsing never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from wellhead.config import LimitsConfig
from wellhead.errors import (
    BudgetExceeded,
    CursorError,
    InvalidRequest,
    QueryFailed,
    QueryTimeout,
    UnsafeSQL,
)
from wellhead.sources.base import Column, RowBatch, Source
from wellhead.sql import encoding
from wellhead.sql.cost import CostGuard
from wellhead.sql.paging import CursorCodec, CursorState, PageTemplate, count_tree
from wellhead.sql.policies import NOTHING_LIFTED, ColumnPolicies, Lifted, SourcePolicies
from wellhead.sql.safety import CheckedStatement, bind_named, check_read_only
from wellhead.sql.snapshots import Snapshots

ProgressCallback = Callable[[float, float], Awaitable[None]]
_PROGRESS_EVERY_S = 1.0
_ENCODE_IN_THREAD_ROWS = 2_000
_CHECK_IN_THREAD_BYTES = 4_096
"""Statements longer than this are checked in a worker thread (about a millisecond of parsing)."""
_CACHE_ENTRIES = 512
_CACHE_MAX_SQL_BYTES = 16_384
"""Longer statements are compiled every time: the cache stays small (at most ~8 MiB)."""
_DEFAULT_MAX_SQL_BYTES = 131_072
_LAST_NOTE_BYTES = 64
"""`Last page: rows 1001-1200.`"""
NOT_FOUND = (
    "cursor not found: it has expired, or it belongs to another caller (cursors and stored "
    "results only work for the caller and session that made them); run the query again"
)


@dataclass(frozen=True)
class Page:
    source: str
    columns: list[Column]
    rows: list[list[Any]]
    offset: int
    total_rows: int | None
    next_cursor: str | None
    note: str | None
    more: bool = False
    """There are rows after this page; normally `next_cursor` continues, but a volatile
    statement (random(), now()) is not pageable and has `more` without a cursor."""
    row_texts: list[str] | None = None
    """Each row's JSON text when the page was read from a snapshot (the text rendering)."""

    @property
    def truncated(self) -> bool:
        return self.next_cursor is not None or self.more


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
    owner: str | None = None
    """Who asks (identity.caller_owner()); stamped on the cursor so only they can continue."""
    column_types: list[str] | None = None
    """From the cursor: the result's column types, which the total order of a page needs."""
    scopes: frozenset[str] = frozenset()
    """The caller's token scopes (identity.caller_scopes()): they may lift column policies."""
    snapshot: str | None = None
    """From the cursor: the snapshot the walk reads its pages from."""
    cost_check: bool = False
    """Ask the cost guard (if any) before the first page: free SQL, or a guarded SQL tool."""


@dataclass
class CompiledStatement:
    """Everything about a statement that does not depend on its parameter values."""

    checked: CheckedStatement
    sql: str
    """The positional (bound) SQL."""
    slots: list[str]
    """The parameter name behind each positional value, in order."""
    tree: exp.Expression | None
    first: PageTemplate | None
    """The statement in its own order with an open window: the one-round-trip first page."""
    ordered: dict[tuple[str, ...], PageTemplate] = field(default_factory=dict)
    count_sql: str | None = None

    @property
    def volatile(self) -> bool:
        """Calls random(), now(), sampling...: every run differs, so pages would not join up."""
        return bool(getattr(self.checked, "volatile", False))

    def values(self, params: dict[str, Any]) -> list[Any]:
        return [params[name] for name in self.slots]

    def ordered_template(self, dialect: str, types: list[str]) -> PageTemplate:
        """The total-order page template for these column types (built once, kept)."""
        key = tuple(types)
        template = self.ordered.get(key)
        if template is None:
            assert self.tree is not None
            template = PageTemplate(
                self.tree, dialect=dialect, column_count=len(types), column_types=types
            )
            if len(self.ordered) < 8:  # a statement's types rarely change; never unbounded
                self.ordered[key] = template
        return template

    def counting_sql(self, dialect: str) -> str:
        if self.count_sql is None:
            assert self.tree is not None
            self.count_sql = count_tree(self.tree).sql(dialect=dialect)
        return self.count_sql


class _Slot:
    """Stands in for a parameter value while binding, to learn which name goes where."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


CacheKey = tuple[str, str, tuple[str, ...], Lifted]
"""Source, SQL text, parameter names, and the column policies the caller's scopes lift (a
statement compiled with a policy lifted must never serve a caller without that scope)."""


class StatementCache:
    """A bounded LRU of compiled statements, keyed by source, SQL text, parameter names and
    lifted column policies."""

    def __init__(self, entries: int = _CACHE_ENTRIES) -> None:
        self.entries = entries
        self._items: OrderedDict[CacheKey, CompiledStatement] = OrderedDict()

    def get(self, key: CacheKey) -> CompiledStatement | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: CacheKey, item: CompiledStatement) -> None:
        if len(key[1]) > _CACHE_MAX_SQL_BYTES:
            return
        self._items[key] = item
        self._items.move_to_end(key)
        while len(self._items) > self.entries:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class QueryExecutor:
    """Turns page requests into pages for a set of named sources."""

    def __init__(
        self,
        sources: dict[str, Source],
        limits: LimitsConfig,
        codec: CursorCodec,
        policies: ColumnPolicies | None = None,
        snapshots: Snapshots | None = None,
        cost_guard: CostGuard | None = None,
    ):
        self.sources = sources
        self.limits = limits
        self.codec = codec
        self.statements = StatementCache()
        self.policies = policies or ColumnPolicies({})
        self.snapshots = snapshots
        """Where walks spill their result (None: every page re-runs the statement)."""
        self.cost_guard = cost_guard

    def source(self, name: str) -> Source:
        try:
            return self.sources[name]
        except KeyError:
            known = ", ".join(sorted(self.sources))
            raise InvalidRequest(
                f"unknown source '{_clip(name)}'; available sources: {known}"
            ) from None

    def resume(
        self,
        cursor: str,
        *,
        tool: str,
        sql: str | None,
        source: str | None,
        owner: str | None = None,
    ) -> CursorState:
        """Decode a cursor and check it belongs to this caller, this tool and this query."""
        state = self.codec.decode(cursor)
        if state.owner != owner:
            raise CursorError(NOT_FOUND)
        if state.tool != tool:
            raise CursorError(f"this cursor belongs to tool '{state.tool}', not '{_clip(tool)}'")
        if sql is not None and sql.strip() != state.sql.strip():
            raise CursorError(
                "this cursor belongs to a different query; pass only the cursor to continue, "
                "or run the new query without one"
            )
        if source is not None and source != state.source:
            raise CursorError(
                f"this cursor belongs to source '{state.source}', not '{_clip(source)}'"
            )
        return state

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
        compiled = await self.compile(source, request.sql, request.params, request.scopes)
        values = compiled.values(request.params)
        deadline = time.monotonic() + limits.query_timeout_s
        guard = self.cost_guard
        if guard and request.cost_check and request.offset == 0 and not request.column_types:
            tree, pageable = compiled.checked.tree, compiled.first is not None
            timeout = deadline - time.monotonic()
            await guard.check(source, compiled.sql, tree, values, timeout, pageable=pageable)

        reporter = None
        if on_progress is not None:
            reporter = asyncio.ensure_future(_report_progress(on_progress, limits.query_timeout_s))
        try:
            page = await self._page(source, compiled, values, request, max_rows, budget, deadline)
        finally:
            if reporter is not None:
                reporter.cancel()
        return page

    async def compile(
        self,
        source: Source,
        sql: str,
        params: dict[str, Any],
        scopes: frozenset[str] = frozenset(),
    ) -> CompiledStatement:
        """The compiled statement, from the cache or checked now (off the loop when long)."""
        if not isinstance(sql, str) or not sql.strip():
            raise InvalidRequest("sql is empty; pass one read-only SQL statement")
        self._check_size(sql)
        names = tuple(sorted(params))
        policy = self.policies.get(source.name)
        lifted = policy.lifted(scopes) if policy is not None else NOTHING_LIFTED
        key = (source.name, sql, names, lifted)
        cached = self.statements.get(key)
        if cached is not None:
            return cached
        if policy is not None:
            await policy.ready(source)
        if len(sql) > _CHECK_IN_THREAD_BYTES:
            compiled = await asyncio.to_thread(self._compile, source, sql, names, policy, lifted)
        else:
            compiled = self._compile(source, sql, names, policy, lifted)
        self.statements.put(key, compiled)
        return compiled

    def _compile(
        self,
        source: Source,
        sql: str,
        names: tuple[str, ...],
        policy: SourcePolicies | None = None,
        lifted: Lifted = NOTHING_LIFTED,
    ) -> CompiledStatement:
        try:
            checked = check_read_only(sql, source.dialect)
            tree: exp.Expression | None = None
            first: PageTemplate | None = None
            slots: list[str]
            if not names and not _has_markers(checked.tree):
                # Nothing to bind: the checked text and tree are the statement as it runs
                # (skips a re-lex and a re-parse, most of the cost of a long statement).
                bound, slots = checked.sql, []
                if checked.pageable:
                    tree = checked.tree
            else:
                bound, markers = bind_named(
                    checked,
                    {name: _Slot(name) for name in names},
                    source.placeholder_style,  # type: ignore[arg-type]
                )
                slots = [marker.name for marker in markers if isinstance(marker, _Slot)]
            if checked.pageable and tree is None:
                try:
                    tree = sqlglot.parse_one(bound, read=source.dialect)  # type: ignore[assignment]
                except SqlglotError as exc:  # the checked text parsed; its bound twin must too
                    raise UnsafeSQL(f"could not re-parse the bound statement: {exc}") from None
            if policy is not None:  # column policies: masking projections, or a refusal
                if tree is None:
                    policy.check_unpageable(bound)
                else:
                    masked = policy.apply(tree, lifted)
                    if masked is not None:
                        tree, bound = masked, masked.sql(dialect=source.dialect)
            if checked.pageable:
                first = PageTemplate(tree, dialect=source.dialect, column_count=None)  # type: ignore[arg-type]
        except RecursionError:
            raise UnsafeSQL(_TOO_DEEP) from None
        return CompiledStatement(
            checked=checked,
            sql=bound,
            slots=slots,
            tree=tree,
            first=first,
        )

    def _check_size(self, sql: str) -> None:
        limit = getattr(self.limits, "max_sql_bytes", _DEFAULT_MAX_SQL_BYTES)
        size = len(sql.encode("utf-8", "surrogatepass"))
        if size > limit:
            raise InvalidRequest(
                f"sql is {size:,} bytes, more than the {limit:,}-byte limit "
                "(limits.max_sql_bytes); for long value lists use a parameter per value, a "
                "join against a table, or a range condition"
            )

    async def _page(
        self,
        source: Source,
        compiled: CompiledStatement,
        values: list[Any],
        request: PageRequest,
        max_rows: int,
        budget: int,
        deadline: float,
    ) -> Page:
        offset = request.offset
        if request.snapshot is not None:
            return await self._snapshot_page(request, request.snapshot, max_rows, budget)
        if compiled.first is None:  # EXPLAIN, SHOW...: not wrappable; the engine runs it as is
            batch = await self._fetch(
                source, compiled.sql, values, offset + max_rows, deadline, max_bytes=None
            )
            return await self._finish(
                request, batch.columns, batch.rows[offset:], batch.more, budget, max_rows
            )

        if offset == 0 and request.column_types is None:
            # The statement as written, one more row than a page: most results end here.
            sql = compiled.first.render(0, max_rows + 1)
            batch = await self._fetch(source, sql, values, max_rows, deadline, max_bytes=budget)
            names = [c.name for c in batch.columns]
            kept = await self._convert(
                batch.rows, budget, batch.columns, names, cursor_bytes=0, source=request.source
            )
            if not batch.more and len(kept) == len(batch.rows):
                return Page(request.source, batch.columns, kept, 0, len(kept), None, None)
            if compiled.volatile:
                kept = await self._convert(
                    batch.rows,
                    budget,
                    batch.columns,
                    names,
                    cursor_bytes=0,
                    source=request.source,
                    note_bytes=len(_VOLATILE_NOTE.encode()) + 8,
                )
                return Page(
                    request.source, batch.columns, kept, 0, None, None, _VOLATILE_NOTE, more=True
                )
            if self.snapshots is not None:  # more than one page: spill once, page from it
                snap = await self.snapshots.take(
                    source, compiled.sql, values, request.owner, deadline
                )
                if snap is not None:
                    return await self._snapshot_page(request, snap.id, max_rows, budget)
            types = [c.type for c in batch.columns]
        else:
            types = list(request.column_types or [])

        template = compiled.ordered_template(source.dialect, types)
        sql = template.render(offset, max_rows + 1)
        batch = await self._fetch(source, sql, values, max_rows, deadline, max_bytes=budget)
        counter = None
        if offset == 0 and request.total is None:
            counter = (source, compiled, values, deadline)
        return await self._finish(
            request, batch.columns, batch.rows, batch.more, budget, max_rows, counter
        )

    async def _snapshot_page(
        self, request: PageRequest, snapshot: str, max_rows: int, budget: int
    ) -> Page:
        """One page read from a snapshot: rows already encoded, fitted by their sizes."""
        assert self.snapshots is not None
        offset = request.offset
        texts, total, columns = await self.snapshots.read(snapshot, request.owner, offset, max_rows)
        names = [c.name for c in columns]
        types = [c.type for c in columns]
        sizes = [len(text.encode()) + 1 for text in texts]  # and the separating comma
        if offset + len(texts) >= total:  # perhaps the last page: no room for a cursor
            room = self._room(columns, budget, 0, _LAST_NOTE_BYTES if offset else 0, request)
            if sum(sizes) <= room:
                note = _note(offset, len(texts), total, False, False, max_rows)
                rows = json.loads(f"[{','.join(texts)}]")
                return Page(request.source, columns, rows, offset, total, None, note, False, texts)
        widest = self._cursor(request, total, total, types, snapshot)
        cursor_bytes = len(widest) + _CURSOR_KEY_BYTES
        note_bytes = _note_bytes(offset, len(texts), total, True, max_rows)
        room = self._room(columns, budget, cursor_bytes, note_bytes, request)
        kept, used = 0, 0
        for size in sizes:
            if used + size > room:
                break
            used += size
            kept += 1
        if kept == 0 and texts:
            raise self._row_too_big(tuple(json.loads(texts[0])), names, budget, room)
        page_texts = texts[:kept]
        rows = json.loads(f"[{','.join(page_texts)}]")
        end = offset + kept
        more = end < total
        next_cursor = None
        if more:
            next_cursor = self._cursor(request, end, total, types, snapshot)
        more_rows = kept == max_rows and more
        note = _note(offset, kept, total, more, more_rows, max_rows)
        return Page(
            request.source, columns, rows, offset, total, next_cursor, note, False, page_texts
        )

    def _cursor(
        self,
        request: PageRequest,
        offset: int,
        total: int | None,
        types: list[str],
        snapshot: str | None = None,
    ) -> str:
        """The signed cursor that continues `request` at `offset` (bound to its owner)."""
        state = CursorState(
            request.tool,
            request.source,
            request.sql,
            request.params,
            offset,
            total,
            request.owner,
            types,
            snapshot,
        )
        return self.codec.encode(state)

    def _room(
        self,
        columns: list[Column],
        budget: int,
        cursor_bytes: int,
        note_bytes: int,
        request: PageRequest,
    ) -> int:
        """Bytes left for rows once the rest of the result is counted (as `_convert` does)."""
        shell = {
            "source": request.source,
            "columns": [[c.name, c.type] for c in columns],
            "rows": [],
            "row_count": 10**6,
            "offset": 10**12,
            "total_rows": 10**12,
            "truncated": False,
            "next_cursor": None,
            "note": None,
        }
        room = budget - encoding.encoded_size(shell) - note_bytes - cursor_bytes
        if room < _MIN_ROW_ROOM:
            raise BudgetExceeded(
                f"the page's columns, note and cursor leave no room for rows within "
                f"budget_bytes={budget:,}; select fewer columns or raise budget_bytes (at most "
                f"{self.limits.max_result_budget_bytes:,})"
            )
        return room

    async def _finish(
        self,
        request: PageRequest,
        columns: list[Column],
        rows: list[tuple[Any, ...]],
        engine_more: bool,
        budget: int,
        max_rows: int,
        counter: tuple[Source, CompiledStatement, list[Any], float] | None = None,
    ) -> Page:
        """Fit fetched rows to the budget and add the cursor (and total) when there is more."""
        offset = request.offset
        names = [c.name for c in columns]
        if not engine_more:  # perhaps the last page: it needs no room for a cursor
            kept = await self._convert(
                rows,
                budget,
                columns,
                names,
                cursor_bytes=0,
                source=request.source,
                note_bytes=_LAST_NOTE_BYTES if offset else 0,
            )
            if len(kept) == len(rows):
                known = request.total if request.total is not None else offset + len(kept)
                note = _note(offset, len(kept), known, False, False, max_rows)
                return Page(request.source, columns, kept, offset, known, None, note)
        types = [c.type for c in columns]
        widest = self._cursor(
            request,
            offset + len(rows) + 1,
            request.total if request.total is not None else 10**12,
            types,
        )
        cursor_bytes = len(widest) + _CURSOR_KEY_BYTES
        kept = await self._convert(
            rows,
            budget,
            columns,
            names,
            cursor_bytes=cursor_bytes,
            source=request.source,
            note_bytes=_note_bytes(offset, len(rows), request.total, engine_more, max_rows),
        )
        more = engine_more or len(kept) < len(rows)

        total: int | None = request.total
        if total is None:
            if not more:
                total = offset + len(kept)
            elif counter is not None:
                total = await self._count(*counter)

        next_cursor = None
        if more:
            next_cursor = self._cursor(request, offset + len(kept), total, types)
        return Page(
            source=request.source,
            columns=columns,
            rows=kept,
            offset=offset,
            total_rows=total,
            next_cursor=next_cursor,
            note=_note(offset, len(kept), total, more, engine_more, max_rows),
        )

    async def _convert(
        self,
        rows: list[tuple[Any, ...]],
        budget: int,
        columns: list[Column],
        names: list[str],
        *,
        cursor_bytes: int,
        source: str = "",
        note_bytes: int = 0,
    ) -> list[list[Any]]:
        """The longest prefix of rows, as JSON values, that fits the budget with the rest of
        the result: its keys, columns, note and cursor, measured rather than guessed, so a
        result that fits is returned. Converting a big page is CPU work: off the loop."""
        shell = {
            "source": source,
            "columns": [[c.name, c.type] for c in columns],
            "rows": [],
            "row_count": 10**6,
            "offset": 10**12,
            "total_rows": 10**12,
            "truncated": False,
            "next_cursor": None,
            "note": None,
        }
        meta = encoding.encoded_size(shell) + note_bytes + cursor_bytes
        room = budget - meta
        if room < _MIN_ROW_ROOM:
            if not cursor_bytes:
                raise BudgetExceeded(
                    f"the result's {len(columns)} column names and types alone take {meta:,} "
                    f"bytes, too many for budget_bytes={budget:,}; select fewer columns or "
                    f"raise budget_bytes (at most {self.limits.max_result_budget_bytes:,})"
                )
            raise BudgetExceeded(
                f"this result needs more than one page, and the cursor that continues it is "
                f"{cursor_bytes:,} bytes (it carries the SQL and its parameters), which leaves "
                f"no room for rows within budget_bytes={budget:,}; raise budget_bytes (at most "
                f"{self.limits.max_result_budget_bytes:,}) or shorten the statement"
            )
        try:
            if len(rows) > _ENCODE_IN_THREAD_ROWS:
                kept, _ = await asyncio.to_thread(encoding.fit_rows, rows, room, names)
            else:
                kept, _ = encoding.fit_rows(rows, room, names)
        except BudgetExceeded:
            raise self._row_too_big(rows[0], names, budget, room) from None
        return kept

    def _row_too_big(
        self, row: tuple[Any, ...], names: list[str], budget: int, room: int
    ) -> BudgetExceeded:
        encoded = [encoding.to_json_value(v) for v in row]
        sizes = [encoding.encoded_size(v) for v in encoded]
        widest = max(range(len(sizes)), key=sizes.__getitem__) if sizes else 0
        size = sum(sizes) + len(sizes) + 1
        column = (
            f"; its largest column is '{names[widest]}' ({sizes[widest]:,} bytes)" if sizes else ""
        )
        return BudgetExceeded(
            f"one row is {size:,} bytes, but a page within budget_bytes={budget:,} has room for "
            f"{max(room, 0):,} bytes of rows (the rest holds the columns, the note and the cursor)"
            f"{column}. Select fewer or shorter columns (e.g. substr(col, 1, 200) or "
            f"length(col)) or raise budget_bytes (at most {self.limits.max_result_budget_bytes:,})."
        )

    async def _fetch(
        self,
        source: Source,
        sql: str,
        values: list[Any],
        max_rows: int,
        deadline: float,
        *,
        timeout: float | None = None,
        max_bytes: int | None = None,
    ) -> RowBatch:
        """One engine round trip. `max_bytes`: the source may stop fetching once its rows
        pass this size (marking `more`), so a page of wide rows never sits whole in memory."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timeout(self.limits.query_timeout_s)
        try:
            return await source.fetch(
                sql,
                values,
                max_rows=max_rows,
                timeout=min(remaining, timeout or remaining),
                max_bytes=max_bytes,
            )
        except QueryTimeout:
            if timeout is not None and time.monotonic() < deadline:
                raise  # only the count's own limit passed; the caller decides
            raise _timeout(self.limits.query_timeout_s) from None
        except QueryFailed as exc:
            raise QueryFailed(_without_wrapper_context(exc.public_message)) from None
        except RecursionError:
            raise UnsafeSQL(_TOO_DEEP) from None

    async def _count(
        self, source: Source, compiled: CompiledStatement, values: list[Any], deadline: float
    ) -> int | None:
        """The total row count, or None when counting would take longer than allowed."""
        if self.limits.count_timeout_s <= 0:
            return None
        sql = compiled.counting_sql(source.dialect)
        try:
            batch = await self._fetch(
                source, sql, values, 1, deadline, timeout=self.limits.count_timeout_s
            )
        except QueryTimeout:
            if time.monotonic() >= deadline:
                raise
            return None
        return int(batch.rows[0][0]) if batch.rows else None


_CURSOR_KEY_BYTES = 4
"""The cursor's quotes replace `null` in the JSON; the text rendering's overhead is smaller."""
_MIN_ROW_ROOM = 64
_TOO_DEEP = (
    "statement is too deeply nested for wellhead to check safely; simplify it (fewer nested "
    "parentheses, subqueries or CASE expressions, e.g. with a CTE)"
)
_VOLATILE_NOTE = (
    "Showing the first rows only: this statement uses a volatile function (random(), now(), "
    "uuid(), sampling...), so every run returns different rows and its pages could not join "
    "up exactly; it has no next_cursor. Add LIMIT, or filter with a deterministic condition, "
    "to get a result that fits one page."
)


def _has_markers(tree: exp.Expression) -> bool:
    """Any placeholder or parameter (`:name`, `?`, `$1`) in the tree: binding has work to do."""
    return tree.find(exp.Placeholder, exp.Parameter) is not None


def _clip(text: str, limit: int = 120) -> str:
    """User input echoed in an error, cut so errors stay small."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[{len(text) - limit:,} more characters]"


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


def _note_bytes(offset: int, rows: int, total: int | None, more_rows: bool, max_rows: int) -> int:
    """The most bytes the note of a page with more can take (the widest numbers it may show)."""
    widest = _note(offset, rows, total if total is not None else 10**15, True, more_rows, max_rows)
    return len((widest or "").encode()) + 2


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
