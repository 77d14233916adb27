"""The core data tools: list_tables, describe_table, query; schema resources; one prompt.

Each tool is a thin adapter from MCP arguments to the executor and sources; every rule
(safety, deadlines, budgets, cursors) lives below it, so config-declared and plugin tools
reuse the same machinery.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable
from typing import Annotated, Any

from fastmcp import Context, FastMCP
from fastmcp.tools import ToolResult
from mcp.types import TextContent
from pydantic import Field

from wellhead.config import LimitsConfig
from wellhead.errors import BudgetExceeded, InvalidRequest
from wellhead.governance.principal import acting_as, current_principal
from wellhead.governance.request import request_principal
from wellhead.identity import caller_owner, caller_scopes
from wellhead.sources.base import TableDescription
from wellhead.sql import encoding
from wellhead.sql.executor import Page, PageRequest, ProgressCallback, QueryExecutor
from wellhead.sql.paging import CursorState
from wellhead.tools.models import QueryResult, TableDescriptionResult, TableList, lean_schema

READ_ONLY = {"readOnlyHint": True, "destructiveHint": False, "openWorldHint": False}
TABLES_PER_PAGE = 200
_DEFAULT_MAX_PATTERN_CHARS = 256

SourceArg = Annotated[str | None, Field(description="Source name; default when omitted.")]
CursorArg = Annotated[str | None, Field(description="next_cursor from the previous page.")]


def page_result(page: Page) -> ToolResult:
    """Structured content plus a compact text rendering of the same page.

    The structured content is QueryResult's shape built as a plain dict: validating and
    dumping a 2,000-row page through the model cost a third of a big page's server CPU, and
    OutputGuard checks the result against the schema anyway.
    """
    result = {
        "source": page.source,
        "columns": [[c.name, c.type] for c in page.columns],
        "rows": page.rows,
        "row_count": len(page.rows),
        "offset": page.offset,
        "total_rows": page.total_rows,
        "truncated": page.truncated,
        "next_cursor": page.next_cursor,
        "note": page.note,
    }
    if page.row_texts is not None:  # read from a snapshot: each row's JSON text is stored
        text = "\n".join([encoding.dumps([c.name for c in page.columns]), *page.row_texts])
    else:
        text = encoding.render_table([c.name for c in page.columns], page.rows)
    trailer = [f"rows {page.offset + 1}-{page.offset + len(page.rows)}"]
    if page.total_rows is not None:
        trailer.append(f"of {page.total_rows}")
    if page.note:
        trailer.append(f"| {page.note}")
    if page.next_cursor:
        trailer.append(f"| next_cursor: {page.next_cursor}")
    # Constructed, not validated: every value is JSON already (encoding.to_json_value or a
    # snapshot's JSON text), and ToolResult's own pass over a 2,000-row page to make it
    # JSON-able cost a sixth of the page's server CPU. OutputGuard still checks the schema.
    return ToolResult.model_construct(
        content=[TextContent(type="text", text=f"{text}\n{' '.join(trailer)}")],
        structured_content=result,
        meta=None,
        is_error=False,
    )


def name_matcher(pattern: str, limits: LimitsConfig) -> Callable[[str], bool]:
    """A case-insensitive glob on table names ('order*'; a plain word matches anywhere).

    The pattern is bounded (`limits.max_pattern_chars`) and compiled once: a huge pattern
    would stall the event loop in the regex compiler, and fnmatch would cache it.
    """
    limit = getattr(limits, "max_pattern_chars", _DEFAULT_MAX_PATTERN_CHARS)
    if len(pattern) > limit:
        raise InvalidRequest(
            f"pattern is {len(pattern):,} characters, more than the {limit:,} allowed "
            "(limits.max_pattern_chars); use a shorter glob such as 'order*'"
        )
    glob = pattern if any(ch in pattern for ch in "*?[") else f"*{pattern}*"
    regex = re.compile(fnmatch.translate(glob.lower()))
    return lambda name: regex.match(name.lower()) is not None


def progress_reporter(ctx: Context | None) -> ProgressCallback | None:
    """Progress notifications while a query runs (FastMCP sends them only if asked to)."""
    if ctx is None:
        return None

    async def report(elapsed: float, limit: float) -> None:
        await ctx.report_progress(elapsed, limit, f"query running for {elapsed:.0f} s")

    return report


def register_core_tools(
    mcp: FastMCP, executor: QueryExecutor, default_source: str, limits: LimitsConfig
) -> None:
    free_sql_guarded = executor.cost_guard is not None and executor.cost_guard.config.free_sql

    def pick_source(source: str | None) -> str:
        name = source or default_source
        executor.source(name)
        return name

    @mcp.tool(
        annotations=READ_ONLY,
        output_schema=lean_schema(QueryResult),
        description=(
            "Run one read-only SQL statement (SELECT/WITH/EXPLAIN) and get one page of rows. "
            "Use :name placeholders with `params`. When truncated, pass next_cursor as `cursor` "
            "(sql may then be omitted) to get the next page."
        ),
    )
    async def query(
        sql: Annotated[str | None, Field(description="SQL in the source's dialect.")] = None,
        params: Annotated[
            dict[str, str | int | float | bool | None] | None,
            Field(description="Values for :name placeholders."),
        ] = None,
        source: SourceArg = None,
        cursor: CursorArg = None,
        max_rows: Annotated[int | None, Field(ge=1, description="Rows per page.")] = None,
        budget_bytes: Annotated[
            int | None, Field(ge=1024, description="Smaller result budget.")
        ] = None,
        ctx: Context | None = None,
    ) -> ToolResult:
        owner = caller_owner()
        if cursor:
            state = executor.resume(cursor, tool="query", sql=sql, source=source, owner=owner)
            if params is not None and params != state.params:
                raise InvalidRequest("params differ from the cursor's query; omit them to continue")
            request = PageRequest(
                tool="query",
                source=state.source,
                sql=state.sql,
                params=state.params,
                offset=state.offset,
                total=state.total,
                max_rows=max_rows,
                budget_bytes=budget_bytes,
                owner=owner,
                column_types=state.column_types,
                scopes=caller_scopes(),
                snapshot=state.snapshot,
            )
        else:
            if sql is None:
                raise InvalidRequest("pass `sql` (or `cursor` to continue a previous query)")
            request = PageRequest(
                tool="query",
                source=pick_source(source),
                sql=sql,
                params=params or {},
                max_rows=max_rows,
                budget_bytes=budget_bytes,
                owner=owner,
                scopes=caller_scopes(),
                cost_check=free_sql_guarded,
            )
        page = await executor.run(request, progress_reporter(ctx))
        return page_result(page)

    @mcp.tool(
        annotations=READ_ONLY,
        output_schema=lean_schema(TableList),
        description="List tables and views (name, kind, row estimate, comment). "
        "`pattern` filters names (glob, e.g. 'order*').",
    )
    async def list_tables(
        source: SourceArg = None,
        pattern: Annotated[str | None, Field(description="Glob on table names.")] = None,
        cursor: CursorArg = None,
    ) -> ToolResult:
        offset = 0
        owner = caller_owner()
        if cursor:
            state = executor.resume(
                cursor, tool="list_tables", sql=None, source=source, owner=owner
            )
            source, pattern, offset = state.source, state.sql or None, state.offset
        name = pick_source(source)
        tables = await executor.source(name).list_tables()
        if pattern:
            matches = name_matcher(pattern, limits)
            tables = [t for t in tables if matches(t.name)]
        rows = [[t.name, t.kind, t.row_estimate, t.comment] for t in tables]
        window = rows[offset : offset + TABLES_PER_PAGE]
        kept, _ = encoding.fit_rows(window, limits.result_budget_bytes - 1024, ["name"])
        end = offset + len(kept)
        next_cursor = None
        note = None
        if end < len(rows):
            next_cursor = executor.codec.encode(
                CursorState("list_tables", name, pattern or "", {}, end, len(rows), owner)
            )
            note = (
                f"Showing tables {offset + 1}-{end} of {len(rows)}. Pass next_cursor as `cursor` "
                "for more, or filter with `pattern`."
            )
        result = TableList(
            source=name,
            columns=["name", "kind", "row_estimate", "comment"],
            tables=kept,
            total_tables=len(rows),
            truncated=next_cursor is not None,
            next_cursor=next_cursor,
            note=note,
        )
        return ToolResult(
            content=[TextContent(type="text", text=encoding.dumps(result.model_dump()))],
            structured_content=result.model_dump(),
        )

    @mcp.tool(
        annotations=READ_ONLY,
        output_schema=lean_schema(TableDescriptionResult),
        description="Describe a table: columns and types, keys, comments, a few sample rows.",
    )
    async def describe_table(
        table: Annotated[str, Field(description="Table name as listed by list_tables.")],
        source: SourceArg = None,
    ) -> ToolResult:
        name = pick_source(source)
        result = await describe(executor, name, table, limits.sample_rows)
        payload = result.model_dump()
        budget = limits.result_budget_bytes
        if encoding.encoded_size(payload) > budget // 2:
            payload["sample_rows"] = []
            payload["note"] = "Sample rows omitted to fit the result budget; query the table."
        if encoding.encoded_size(payload) > budget // 2:
            raise BudgetExceeded(
                f"table '{table}' has {len(result.columns)} columns, too many to describe within "
                f"the result budget; query information about specific columns with `query`."
            )
        return ToolResult(
            content=[TextContent(type="text", text=encoding.dumps(payload))],
            structured_content=payload,
        )

    @mcp.resource(
        "wellhead://{source}/{table}",
        name="table_schema",
        description="Columns, keys and sample rows of one table, as JSON.",
        mime_type="application/json",
    )
    async def table_schema(source: str, table: str) -> str:
        # Resources pass no tool guard: run as the request's caller here.
        with acting_as(request_principal() or current_principal()):
            result = await describe(executor, pick_source(source), table, limits.sample_rows)
        return json.dumps(result.model_dump(), default=str)

    @mcp.prompt(
        name="analyze_table",
        description="Frame a careful analysis of one table with wellhead's tools.",
    )
    def analyze_table(table: str, question: str = "", source: str = "") -> str:
        target = f"'{table}'" + (f" in source '{source}'" if source else "")
        ask = question or "what does this table hold, and what stands out?"
        return (
            f"Analyse the table {target}. Question: {ask}\n"
            "1. Call describe_table to learn its columns, keys and sample values.\n"
            "2. Use query with aggregates (count, min/max, percentiles, GROUP BY) rather than "
            "reading raw rows; use :name params for values.\n"
            "3. If a result is truncated, narrow the query instead of paging through everything.\n"
            "4. State the SQL behind every number you report, and note any caveats."
        )


async def describe(
    executor: QueryExecutor, source: str, table: str, sample_rows: int
) -> TableDescriptionResult:
    description = await executor.source(source).describe_table(table, sample_rows)
    policies, samples = await column_policies(executor, source, description, caller_scopes())
    return TableDescriptionResult(
        source=source,
        table=description.table.name,
        kind=description.table.kind,
        row_estimate=description.table.row_estimate,
        comment=description.table.comment,
        columns=[
            [c.name, c.type, c.nullable, c.primary_key, c.comment] for c in description.columns
        ],
        foreign_keys=[
            {
                "columns": fk.columns,
                "references": fk.references_table,
                "referenced_columns": fk.references_columns,
            }
            for fk in description.foreign_keys
        ],
        sample_rows=[[encoding.to_json_value(v) for v in row] for row in samples],
        note=None,
        column_policies=policies,
    )


async def column_policies(
    executor: QueryExecutor, source: str, description: TableDescription, scopes: frozenset[str]
) -> tuple[dict[str, str], list[list[Any]]]:
    """The policy each column has for this caller, and the sample rows masked to match."""
    rows = [list(row) for row in description.sample_rows]
    policy = executor.policies.get(source)
    if policy is None:
        return {}, rows
    await policy.ready(executor.source(source))
    lifted = policy.lifted(scopes)
    name = description.table.name
    names = [c.name for c in description.columns]
    return policy.describe(name, lifted), policy.mask_rows(name, names, rows, lifted)
