"""A plugin whose one tool returns as much text as asked: exercises output budgets."""

from __future__ import annotations

from fastmcp import FastMCP


def register(mcp: FastMCP) -> None:
    @mcp.tool
    async def big_text(size: int) -> str:
        """Return `size` characters."""
        return "x" * size
