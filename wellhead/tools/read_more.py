"""`read_more`: the next chunk of a result that was over its tool's budget."""

from __future__ import annotations

from typing import Annotated

from fastmcp import FastMCP
from fastmcp.tools import ToolResult
from mcp.types import TextContent
from pydantic import BaseModel, Field

from wellhead.guards.budget import READ_MORE, OverflowStore
from wellhead.identity import caller_owner
from wellhead.tools.core import READ_ONLY
from wellhead.tools.models import lean_schema


class Chunk(BaseModel):
    tool: str
    chunk: str
    offset: int
    total_bytes: int
    truncated: bool
    next_cursor: str | None
    note: str | None


def register_read_more(mcp: FastMCP, overflow: OverflowStore, budget: int) -> None:
    @mcp.tool(
        name=READ_MORE,
        annotations=READ_ONLY,
        output_schema=lean_schema(Chunk),
        description="Read the next chunk of a result that exceeded its budget (cursor from it).",
    )
    async def read_more(
        cursor: Annotated[str, Field(description="The cursor the truncated result gave.")],
    ) -> ToolResult:
        chunk = await overflow.chunk(cursor, max(budget - 2048, 1024), caller_owner())
        trailer = chunk["note"] or f"End of result ({chunk['total_bytes']:,} bytes)."
        return ToolResult(
            content=[TextContent(type="text", text=f"{chunk['chunk']}\n[{trailer}]")],
            structured_content=chunk,
        )
