"""Long queries and exports as MCP tasks (FastMCP's tasks extension, on Docket).

A client that opts in gets a task id at once and polls `tasks/get` (status, progress as
the status message, then the result); `tasks/cancel` cancels the worker's asyncio task,
which interrupts the engine exactly as a cancelled call does (DuckDB/SQLite interrupt,
PostgreSQL cancel and settle). A client that does not opt in calls the same tools
synchronously, unchanged. Tasks are scoped to the caller's token by FastMCP.

Backends: Docket's in-memory one for one process, Redis for replicas (any replica's
worker may run a task; any replica answers `tasks/get`, since the state is in Redis).

The worker runs a tool's function outside the middleware chain, so here the guarded
tools' functions are wrapped: inside a task the same guard chain (log line, metrics,
audit, deadline, budget, output validation) runs around the body, and the task's result
is the very result a direct call returns.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastmcp import FastMCP
from fastmcp.server.middleware import MiddlewareContext
from fastmcp.tools.function_tool import FunctionTool
from fastmcp.utilities.tasks import TaskConfig
from mcp.types import CallToolRequestParams

from wellhead.config import Settings
from wellhead.guards.calls import current_call

TASK_TOOLS = ("query", "export_query")
"""The tools that may run as tasks: the ones whose work can take long."""


def tasks_extension(settings: Settings) -> Any:
    """The FastMCP tasks extension for `settings.tasks`, or None when tasks are off."""
    tasks = settings.tasks
    if not tasks.enabled:
        return None
    from fastmcp_tasks import TasksExtension

    url = tasks.redis_url if tasks.backend == "redis" else "memory://"
    return TasksExtension(url=url, name=tasks.queue, concurrency=tasks.concurrency)


def in_task() -> bool:
    """True inside a Docket worker running one of this server's tasks."""
    from fastmcp_tasks.context import get_task_context

    return get_task_context() is not None


def enable_tasks(mcp: FastMCP, guards: Any, names: Iterable[str] = TASK_TOOLS) -> list[str]:
    """Mark the named tools task-capable (optional mode) and guard their task runs."""
    wanted = set(names)
    enabled = []
    # The registered components themselves: the Docket worker calls their `fn`.
    for component in list(mcp.local_provider._components.values()):
        if isinstance(component, FunctionTool) and component.name in wanted:
            component.task_config = TaskConfig(mode="optional")
            component.fn = _guarded(component.name, component.fn, guards)
            enabled.append(component.name)
    return enabled


def _guarded(
    name: str, fn: Callable[..., Awaitable[Any]], guards: Any
) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(fn)
    async def run(*args: Any, **kwargs: Any) -> Any:
        if not in_task():
            return await fn(*args, **kwargs)
        from fastmcp.server.dependencies import get_context

        ctx = get_context()
        arguments = {k: v for k, v in kwargs.items() if k != "ctx"}
        context = MiddlewareContext(
            message=CallToolRequestParams(name=name, arguments=arguments),
            source="client",
            type="request",
            method="tools/call",
            fastmcp_context=ctx,
        )

        async def body(_: Any) -> Any:
            record = current_call()
            if record is not None:  # the run's log line says it ran as a task
                record.extra["task"] = "run"
            return await fn(*args, **kwargs)

        return await guards.on_call_tool(context, body)

    return run
