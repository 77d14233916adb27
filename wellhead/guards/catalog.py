"""What the guards need to know about a tool, looked up once and cached briefly.

`FastMCP.get_tool` resolves providers and visibility on every call (a few hundred
microseconds); three guards asking on every call was half the chassis overhead. The facts
below only tune guards (deadline, output schema, budget); FastMCP itself still decides
whether the call may run, so a few seconds of staleness cannot widen access.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Any

from fastmcp.server.middleware import MiddlewareContext
from mcp.types import CallToolRequestParams

_TTL_S = 5.0


@dataclass(frozen=True)
class ToolFacts:
    timeout: float | None
    output_schema: dict[str, Any] | None
    is_sync: bool
    """A sync function tool: FastMCP runs it in a thread that cancellation cannot stop."""


class ToolCatalog:
    def __init__(self, ttl: float = _TTL_S) -> None:
        self.ttl = ttl
        self._cache: dict[str, tuple[float, ToolFacts | None]] = {}

    async def facts(self, context: MiddlewareContext[CallToolRequestParams]) -> ToolFacts | None:
        name = context.message.name
        now = time.monotonic()
        cached = self._cache.get(name)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        facts = await self._look_up(context)
        self._cache[name] = (now, facts)
        return facts

    async def _look_up(self, context: MiddlewareContext[CallToolRequestParams]) -> ToolFacts | None:
        ctx = context.fastmcp_context
        if ctx is None:
            return None
        try:
            tool = await ctx.fastmcp.get_tool(context.message.name)
        except Exception:  # noqa: BLE001 - unknown tools fail later, with their own error
            return None
        if tool is None:
            return None
        tool = await _unwrap_mounted(tool)
        fn = getattr(tool, "fn", None)
        timeout = getattr(tool, "timeout", None)
        return ToolFacts(
            timeout=float(timeout) if timeout else None,
            output_schema=getattr(tool, "output_schema", None) or None,
            is_sync=fn is not None and not inspect.iscoroutinefunction(fn),
        )


async def _unwrap_mounted(tool: Any) -> Any:
    """A tool of a mounted server (a plugin) is a proxy; its timeout and body are the child's."""
    for _ in range(5):  # mounts nest rarely, and never deeply
        server, name = getattr(tool, "_server", None), getattr(tool, "_original_name", None)
        if server is None or name is None:
            return tool
        try:
            inner = await server.get_tool(name)
        except Exception:  # noqa: BLE001 - fall back to what the proxy tells
            return tool
        if inner is None:
            return tool
        tool = inner
    return tool
