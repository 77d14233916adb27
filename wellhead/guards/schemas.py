"""Inline `$ref`s in tool schemas once per tool, not on every tools/list.

Some clients cannot follow `$ref`, so FastMCP rewrites schemas on every listing; MCP
clients list tools before each call, which made that walk a per-call cost. Tools are
long-lived objects, so the rewritten copy is kept per tool object.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import mcp_types as mt
from fastmcp.resources.template import ResourceTemplate
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.server.middleware.dereference import _dereference_resource_template, _dereference_tool
from fastmcp.tools import Tool

T = TypeVar("T")


class DereferenceOnce(Middleware):
    def __init__(self) -> None:
        self._seen: dict[int, tuple[Any, Any]] = {}

    async def on_list_tools(
        self,
        context: MiddlewareContext[mt.ListToolsRequest],
        call_next: CallNext[mt.ListToolsRequest, Sequence[Tool]],
    ) -> Sequence[Tool]:
        return [self._once(tool, _dereference_tool) for tool in await call_next(context)]

    async def on_list_resource_templates(
        self,
        context: MiddlewareContext[mt.ListResourceTemplatesRequest],
        call_next: CallNext[mt.ListResourceTemplatesRequest, Sequence[ResourceTemplate]],
    ) -> Sequence[ResourceTemplate]:
        templates = await call_next(context)
        return [self._once(t, _dereference_resource_template) for t in templates]

    def _once(self, component: T, rewrite: Callable[[T], T]) -> T:
        cached = self._seen.get(id(component))
        if cached is not None and cached[0] is component:
            return cast(T, cached[1])
        result = rewrite(component)
        self._seen[id(component)] = (component, result)
        return result
