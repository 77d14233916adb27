"""A byte budget for every tool's output, with the same contract as `query`: never silent.

A result over its tool's budget is not cut and sent as if whole. The full text is kept in
the state store (memory, or Redis shared by replicas) for a while, and the agent gets the
first chunk (tools without an output schema) or a structured error (tools with one, whose
schema a partial result would break), both saying how big the result is and carrying a
signed cursor for `read_more`.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools import ToolResult
from key_value.aio.protocols import AsyncKeyValue
from mcp.types import CallToolRequestParams, TextContent

from wellhead.errors import CursorError
from wellhead.guards.calls import ToolFailure, current_call, result_sizes
from wellhead.guards.catalog import ToolCatalog
from wellhead.identity import caller_owner
from wellhead.sql import encoding
from wellhead.sql.paging import CursorCodec, CursorState

OVERFLOW_TTL_S = 900
_COLLECTION = "wellhead-overflow"
READ_MORE = "read_more"
_NOT_FOUND = (
    "this stored result was not found: results are kept for {minutes} minutes, and only for "
    "the caller and session that made them; call the original tool again"
)


def result_text(result: ToolResult) -> str:
    """The text an agent reads: the text blocks, or the structured content as JSON."""
    texts = [block.text for block in result.content if isinstance(block, TextContent)]
    if texts:
        return "\n".join(texts)
    return encoding.dumps(result.structured_content)


def utf8_prefix(data: bytes, limit: int) -> bytes:
    """The longest prefix of `data` of at most `limit` bytes that ends on a character boundary."""
    if len(data) <= limit:
        return data
    end = limit
    while end > 0 and (data[end] & 0xC0) == 0x80:
        end -= 1
    return data[:end]


class OverflowStore:
    """Oversized results, kept for `ttl` seconds and read back in chunks through cursors."""

    def __init__(self, store: AsyncKeyValue, codec: CursorCodec, ttl: float = OVERFLOW_TTL_S):
        self.store = store
        self.codec = codec
        self.ttl = ttl

    async def keep(self, tool: str, text: str, owner: str | None = None) -> tuple[str, int]:
        """Store a result for its caller only: `owner` (identity.caller_owner) is kept with
        it and stamped on the cursor; anyone else is told it does not exist."""
        key = secrets.token_urlsafe(18)
        await self.store.put(
            key, {"tool": tool, "text": text, "owner": owner}, collection=_COLLECTION, ttl=self.ttl
        )
        size = len(text.encode())
        return self.cursor(key, 0, size, owner), size

    def cursor(self, key: str, offset: int, total: int, owner: str | None = None) -> str:
        return self.codec.encode(CursorState(READ_MORE, "", key, {}, offset, total, owner))

    async def chunk(self, cursor: str, budget: int, owner: str | None = None) -> dict[str, Any]:
        state = self.codec.decode(cursor)
        if state.tool != READ_MORE:
            raise CursorError(f"this cursor belongs to tool '{state.tool}'; pass it to that tool")
        if state.owner != owner:
            raise CursorError(_NOT_FOUND.format(minutes=f"{self.ttl / 60:g}"))
        entry = await self.store.get(state.sql, collection=_COLLECTION)
        if entry is not None and entry.get("owner") != owner:
            entry = None  # a stored result of someone else's: it does not exist for this caller
        if entry is None:
            raise CursorError(_NOT_FOUND.format(minutes=f"{self.ttl / 60:g}"))
        data = str(entry["text"]).encode()
        piece = utf8_prefix(data[state.offset :], budget)
        while piece and encoding.encoded_size(piece.decode()) > budget:  # JSON escapes grow it
            piece = utf8_prefix(piece, len(piece) * 9 // 10)
        end = state.offset + len(piece)
        more = end < len(data)
        return {
            "tool": entry["tool"],
            "chunk": piece.decode(),
            "offset": state.offset,
            "total_bytes": len(data),
            "truncated": more,
            "next_cursor": self.cursor(state.sql, end, len(data), owner) if more else None,
            "note": (
                f"Bytes {state.offset + 1}-{end} of {len(data):,}; pass next_cursor to read_more "
                "for the rest."
                if more
                else None
            ),
        }


class BudgetGuard(Middleware):
    def __init__(
        self,
        default_budget: int,
        overflow: OverflowStore,
        overrides: dict[str, int] | None = None,
        catalog: ToolCatalog | None = None,
        max_budget: int | None = None,
    ) -> None:
        self.catalog = catalog or ToolCatalog()
        self.max_budget = max_budget or default_budget
        self.default_budget = default_budget
        self.overflow = overflow
        self.overrides = overrides or {}

    async def on_call_tool(
        self,
        context: MiddlewareContext[CallToolRequestParams],
        call_next: CallNext[CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        result = await call_next(context)
        name = context.message.name
        if name == READ_MORE or not isinstance(result, ToolResult):  # read_more; a task handle
            return result
        budget = self.overrides.get(name, self.default_budget)
        asked = (context.message.arguments or {}).get("budget_bytes")
        if isinstance(asked, int) and not isinstance(asked, bool) and asked > budget:
            # The tool already fitted its result to the budget the caller asked for (query
            # checks it against limits.max_result_budget_bytes): honour it, within that cap.
            budget = min(asked, self.max_budget)
        text_bytes, structured_bytes = result_sizes(result)
        size = max(text_bytes, structured_bytes)  # the larger rendering a client may use
        if size <= budget:
            record = current_call()
            if record is not None:  # measured once: the call's log line reuses it
                record.response_bytes = text_bytes + structured_bytes
            return result
        cursor, total = await self.overflow.keep(name, result_text(result), caller_owner())
        advice = (
            f"tool '{name}' returned {size:,} bytes, more than its {budget:,}-byte budget "
            f"(about {budget // 4:,} tokens)"
        )
        facts = await self.catalog.facts(context)
        schema = facts.output_schema if facts else None
        wraps_text = _wraps_a_string(schema)
        if (schema and not wraps_text) or result.is_error:
            raise ToolFailure(
                "tool_error",
                "budget_exceeded",
                f"{advice}. The full result is kept for {self.overflow.ttl / 60:g} minutes: call "
                f"read_more with cursor={cursor} to read it in chunks, or call '{name}' with "
                "narrower arguments.",
            )
        head = utf8_prefix(result_text(result).encode(), max(budget - 1024, 256)).decode()
        note = (
            f"[truncated by wellhead: showing {len(head.encode()):,} of {total:,} bytes. "
            f"{advice}. Call read_more with cursor={cursor} for the rest, or narrow the call.]"
        )
        text = f"{head}\n{note}"
        return ToolResult(
            content=[TextContent(type="text", text=text)],
            structured_content={"result": text} if wraps_text else None,
            meta={"wellhead": {"truncated": True, "total_bytes": total, "next_cursor": cursor}},
        )


def _wraps_a_string(schema: dict[str, Any] | None) -> bool:
    """FastMCP's schema for a tool returning plain `str`: {"result": string}, marked as wrapped."""
    if not schema or not schema.get("x-fastmcp-wrap-result"):
        return False
    return schema.get("properties", {}).get("result", {}).get("type") == "string"
