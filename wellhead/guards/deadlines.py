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
from wellhead.guards.catalog import ToolCatalog

log = logging.getLogger("wellhead.deadlines")


class DeadlineGuard(Middleware):
    def __init__(
        self,
        default_timeout: float,
        overrides: dict[str, float] | None = None,
        on_abandoned: Callable[[int], None] | None = None,
        catalog: ToolCatalog | None = None,
    ) -> None:
        self.catalog = catalog or ToolCatalog()
        self.default_timeout = default_timeout
        self.overrides = overrides or {}
        self.on_abandoned = on_abandoned
        self.abandoned = 0

    async def on_call_tool(
        self,
        context: MiddlewareContext[CallToolRequestParams],
        call_next: CallNext[CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        name = context.message.name
        facts = await self.catalog.facts(context)
        timeout = self.overrides.get(name) or (facts and facts.timeout) or self.default_timeout
        if facts is not None and facts.is_sync:
            return await self._run_abandonable(context, call_next, timeout)
        try:
            async with asyncio.timeout(timeout) as scope:
                return await call_next(context)
        except TimeoutError:
            if not scope.expired():
                raise
            raise _timed_out(name, timeout) from None

    async def _run_abandonable(
        self,
        context: MiddlewareContext[CallToolRequestParams],
        call_next: CallNext[CallToolRequestParams, ToolResult],
        timeout: float,
    ) -> ToolResult:
        """A sync tool's thread cannot be stopped: wait for it in a task we can walk away from.

        The call runs in an anyio cancel scope: cancelling the scope (unlike `task.cancel()`)
        keeps the task alive until the worker thread really ends, so it can be counted.
        """
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
        scope.cancel()
        self._track_abandoned(context.message.name, task, timeout)
        raise _timed_out(context.message.name, timeout)

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


def _timed_out(tool: str, timeout: float) -> ToolFailure:
    return ToolFailure(
        "timeout",
        "timeout",
        f"tool '{tool}' did not finish within its {timeout:g} s deadline and was stopped; "
        "try narrower arguments",
    )
