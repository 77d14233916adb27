"""Wellhead's guards as one FastMCP middleware.

FastMCP runs every middleware twice per request (an outer pass for `on_message` and
`on_request`, a typed pass for `on_call_tool` and friends), each pass building a chain
of wrappers: tens of microseconds per middleware on every request. Here the guards keep
their `Middleware` hooks (each stays usable on its own), and this one middleware runs
them in order, outermost first, on the same context.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from functools import partial
from typing import Any

from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext

_HOOKS = ("on_call_tool", "on_list_tools", "on_list_resource_templates")


class GuardChain(Middleware):
    def __init__(self, guards: Sequence[Middleware]) -> None:
        self.guards = list(guards)
        # Per hook, only the guards that implement it (innermost first, for composing).
        self._hooks: dict[str, list[Any]] = {
            hook: [
                getattr(guard, hook)
                for guard in reversed(self.guards)
                if getattr(type(guard), hook) is not getattr(Middleware, hook)
            ]
            for hook in _HOOKS
        }

    def _run(
        self, hook: str, context: MiddlewareContext[Any], call_next: CallNext[Any, Any]
    ) -> Awaitable[Any]:
        handler = call_next
        for guard_hook in self._hooks[hook]:
            handler = partial(guard_hook, call_next=handler)
        return handler(context)

    async def on_call_tool(self, context: Any, call_next: Any) -> Any:
        return await self._run("on_call_tool", context, call_next)

    async def on_list_tools(self, context: Any, call_next: Any) -> Any:
        return await self._run("on_list_tools", context, call_next)

    async def on_list_resource_templates(self, context: Any, call_next: Any) -> Any:
        return await self._run("on_list_resource_templates", context, call_next)
