"""A plugin with a tool that takes as long as asked: holds a concurrency slot for a while."""

from __future__ import annotations

import asyncio

from fastmcp import FastMCP


def register(mcp: FastMCP) -> None:
    @mcp.tool
    async def nap(seconds: float = 0.0) -> str:
        """Sleep `seconds`, then answer."""
        await asyncio.sleep(seconds)
        return "rested"

    @mcp.tool
    async def fail_after(seconds: float = 0.0) -> str:
        """Sleep `seconds`, then raise."""
        await asyncio.sleep(seconds)
        raise RuntimeError("failed on purpose")
