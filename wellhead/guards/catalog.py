"""What the guards need to know about a tool, looked up once per caller and cached briefly.

`FastMCP.get_tool` resolves providers and visibility on every call (a few hundred
microseconds); three guards asking on every call was half the chassis overhead. The facts
below tune guards (deadline, output schema, budget) and name the tool in metrics; FastMCP
itself still decides whether the call may run.

What `get_tool` answers depends on who asks (per-tool scopes), so a cached answer is kept
for that caller only: the key is (principal, its scopes, tool). Only found tools are cached:
a "not found" (an invented name, or a tool this caller may not see) is looked up again next
time, so it can neither stick for the caller nor change how anyone else's calls are guarded,
and invented names never become keys. The cache holds at most `max_entries` keys, least
recently used first out.
"""

from __future__ import annotations

import inspect
import time
from collections import OrderedDict
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from fastmcp.server.dependencies import get_access_token
from fastmcp.server.middleware import MiddlewareContext
from mcp.types import CallToolRequestParams

_TTL_S = 5.0
_MAX_ENTRIES = 4096

CallerKey = tuple[str | None, tuple[str, ...]]
"""(principal, its scopes): whose view of the tools an answer is."""


@dataclass(frozen=True)
class ToolFacts:
    name: str
    """The registered name: safe as a metric label or a map key."""
    timeout: float | None
    output_schema: dict[str, Any] | None
    is_sync: bool
    """A sync function tool: FastMCP runs it in a thread that cancellation cannot stop."""


# The facts of the call running in this context, so the guards of one call look up once.
# Holds the request's message itself, compared by identity: never another call's answer.
_this_call: ContextVar[tuple[object, ToolFacts | None] | None] = ContextVar(
    "wellhead_tool_facts", default=None
)


class ToolCatalog:
    def __init__(self, ttl: float = _TTL_S, max_entries: int = _MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._cache: OrderedDict[tuple[CallerKey, str], tuple[float, ToolFacts]] = OrderedDict()

    async def facts(self, context: MiddlewareContext[CallToolRequestParams]) -> ToolFacts | None:
        """The tool this call names, as this caller sees it; None if it sees no such tool."""
        message = context.message
        memo = _this_call.get()
        if memo is not None and memo[0] is message:
            return memo[1]
        if context.fastmcp_context is None:
            return None
        key = (caller_key(), message.name)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self.ttl:
            self._cache.move_to_end(key)
            facts: ToolFacts | None = cached[1]
        else:
            facts = await self._look_up(context)
            if facts is not None:
                self._cache[key] = (now, facts)
                self._cache.move_to_end(key)
                while len(self._cache) > self.max_entries:
                    self._cache.popitem(last=False)
            else:
                self._cache.pop(key, None)
        _this_call.set((message, facts))
        return facts

    def __len__(self) -> int:
        return len(self._cache)

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
        name = str(getattr(tool, "name", None) or context.message.name)
        tool = await _unwrap_mounted(tool)
        fn = getattr(tool, "fn", None)
        timeout = getattr(tool, "timeout", None)
        return ToolFacts(
            name=name,
            timeout=float(timeout) if timeout else None,
            output_schema=getattr(tool, "output_schema", None) or None,
            is_sync=fn is not None and not inspect.iscoroutinefunction(fn),
        )


def caller_key() -> CallerKey:
    """Whose view of the tools this call gets: the principal and scopes of its token.

    Not the session: in the stateless protocol era every request has a new session id, so
    a key with it would never hit. Session transforms only hide tools, and a hidden tool's
    call is refused by FastMCP whatever facts the guards hold; a "not found" is never cached.
    """
    try:
        token = get_access_token()
    except Exception:  # noqa: BLE001 - no auth context on this transport
        return None, ()
    if token is None:
        return None, ()
    return str(token.client_id), tuple(sorted(token.scopes or ()))


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
