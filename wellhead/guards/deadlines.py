"""A deadline for every tool, sync tools included.

FastMCP runs a sync tool in a worker thread that cancellation cannot stop, and its own
`timeout=` waits for that thread before reporting. Here the call runs in its own task: at
the deadline the caller gets a timeout at once; an async tool is cancelled, a sync tool's
thread is abandoned, counted, and logged when it finally ends. Tools that can really be
interrupted (the SQL tools) enforce tighter deadlines in the engine themselves.

The task is stopped through an anyio cancel scope, not `Task.cancel()`: a native cancel
ends the task at once even while its worker thread runs on (anyio's shield only holds
against anyio cancellation), which would hide the thread from the abandoned count.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import anyio
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools import ToolResult
from mcp.types import CallToolRequestParams

from wellhead.guards.calls import ToolFailure

log = logging.getLogger("wellhead.deadlines")


class DeadlineGuard(Middleware):
    def __init__(
        self,
        default_timeout: float,
        overrides: dict[str, float] | None = None,
        on_abandoned: Callable[[int], None] | None = None,
    ) -> None:
        self.default_timeout = default_timeout
        self.overrides = overrides or {}
        self.on_abandoned = on_abandoned
        self.abandoned = 0

    async def timeout_for(self, context: MiddlewareContext[CallToolRequestParams]) -> float:
        name = context.message.name
        if name in self.overrides:
            return self.overrides[name]
        ctx = context.fastmcp_context
        if ctx is not None:
            try:
                tool = await ctx.fastmcp.get_tool(name)
            except Exception:  # noqa: BLE001 - unknown tools fail later, with their own error
                tool = None
            declared = getattr(tool, "timeout", None)
            if declared:
                return float(declared)
        return self.default_timeout

    async def on_call_tool(
        self,
        context: MiddlewareContext[CallToolRequestParams],
        call_next: CallNext[CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        timeout = await self.timeout_for(context)
        scope = anyio.CancelScope()

        async def run() -> ToolResult | None:
            with scope:
                return await call_next(context)
            return None  # stopped at the deadline: nobody waits for this

        task = asyncio.ensure_future(run())
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:
            scope.cancel()
            task.cancel()
            raise
        result = task.result() if task in done else None
        if result is not None:
            return result
        scope.cancel()  # a worker thread shields its task from this until the thread ends
        self._track_abandoned(context.message.name, task, timeout)
        raise ToolFailure(
            "timeout",
            "timeout",
            f"tool '{context.message.name}' did not finish within its {timeout:g} s deadline "
            "and was stopped; try narrower arguments",
        )

    def _track_abandoned(self, tool: str, task: asyncio.Future[Any], timeout: float) -> None:
        """A cancelled task that has not ended is a thread still running: count it until it ends."""
        started = time.monotonic()

        def finished(_: asyncio.Future[Any]) -> None:
            self._set_abandoned(self.abandoned - 1)
            log.warning(
                "abandoned call of %s ended %.1f s after its deadline",
                tool,
                time.monotonic() - started,
                extra={"tool_name": tool, "deadline_s": timeout},
            )
            if not task.cancelled():
                task.exception()  # retrieve it so asyncio does not log "never retrieved"

        loop = asyncio.get_running_loop()

        def check() -> None:
            if not task.done():
                self._set_abandoned(self.abandoned + 1)
                log.warning(
                    "tool %s ignored cancellation at its %g s deadline; its thread keeps running",
                    tool,
                    timeout,
                    extra={"tool_name": tool, "deadline_s": timeout},
                )
                task.add_done_callback(finished)

        loop.call_later(0.2, check)  # an async tool needs a moment to unwind

    def _set_abandoned(self, value: int) -> None:
        self.abandoned = value
        if self.on_abandoned is not None:
            self.on_abandoned(value)
