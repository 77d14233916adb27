"""Per-client state kept the supported way: in the server's session store, never in globals.

Two mechanisms, both backed by the store wellhead passes to FastMCP (memory by default):

- `remember` / `recall` use `ctx.set_state` / `ctx.get_state`, keyed by `ctx.session_id`.
  That id lasts for an MCP session only on handshake-era (legacy) connections; on the
  2026-07-28 protocol every request is its own connection and gets a fresh id.
- `remember_in` / `recall_from` take a `session_id: SessionId` minted by the
  `create_session` tool (`SessionProvider`) and resolve it with `get_session`, which
  rejects ids that were never minted. This works on either protocol.
"""

from __future__ import annotations

from fastmcp import Context, FastMCP
from fastmcp.server.dependencies import get_session
from fastmcp.server.sessions import SessionId, SessionProvider


def register(mcp: FastMCP) -> None:
    mcp.add_provider(SessionProvider())

    @mcp.tool
    async def remember(value: str, ctx: Context) -> str:
        """Store `value` in this MCP session's state; returns the session id it is keyed by."""
        await ctx.set_state("value", value)
        return ctx.session_id

    @mcp.tool
    async def recall(ctx: Context) -> dict[str, str | None]:
        """The value this MCP session stored (None if none), and the session id."""
        return {"value": await ctx.get_state("value"), "session_id": ctx.session_id}

    @mcp.tool
    async def remember_in(session_id: SessionId, value: str) -> str:
        """Store `value` in an explicit session created with `create_session`."""
        session = await get_session(session_id)
        await session.set("value", value)
        return "remembered"

    @mcp.tool
    async def recall_from(session_id: SessionId) -> str | None:
        """The value stored in an explicit session (None if none)."""
        session = await get_session(session_id)
        value = await session.get("value")
        return None if value is None else str(value)
