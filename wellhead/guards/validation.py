"""Output validation: a structured result must match the tool's declared output schema.

FastMCP does not check what a tool returns against its own schema; some clients do, and
then fail in confusing ways. Here a mismatch becomes a structured `invalid_output` error
(with the offending path in the log), so malformed data never reaches a client.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import jsonschema_rs
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools import ToolResult
from mcp.types import CallToolRequestParams

from wellhead.guards.calls import ToolFailure
from wellhead.guards.catalog import ToolCatalog

log = logging.getLogger("wellhead.validation")


class OutputGuard(Middleware):
    def __init__(self, catalog: ToolCatalog | None = None) -> None:
        self.catalog = catalog or ToolCatalog()
        self._validators: dict[str, tuple[int, Any]] = {}

    def _validator(self, name: str, schema: dict[str, Any]) -> Any:
        """A compiled validator (jsonschema-rs: a page of 100k rows checks in milliseconds)."""
        key = id(schema)
        cached = self._validators.get(name)
        if cached is None or cached[0] != key:
            try:
                cached = (key, jsonschema_rs.validator_for(schema))
            except (jsonschema_rs.ValidationError, ValueError) as exc:
                self._reject(name, "(schema)", f"the tool's own output schema is invalid: {exc}")
            self._validators[name] = cached
        return cached[1]

    async def on_call_tool(
        self,
        context: MiddlewareContext[CallToolRequestParams],
        call_next: CallNext[CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        result = await call_next(context)
        if not isinstance(result, ToolResult):  # a task handle; the task's result is checked
            return result
        if result.is_error or context.fastmcp_context is None:
            return result
        name = context.message.name
        facts = await self.catalog.facts(context)
        schema = facts.output_schema if facts else None
        if not schema:
            return result
        if result.structured_content is None:
            self._reject(name, "(result)", "the tool declares an output schema but returned none")
        validator = self._validator(name, schema)
        if not validator.is_valid(result.structured_content):
            errors = list(validator.iter_errors(result.structured_content))
            path = "/".join(str(p) for p in errors[0].instance_path) or "(root)"
            self._reject(name, path, errors[0].message[:300], count=len(errors))
        return result

    def _reject(self, tool: str, path: str, problem: str, count: int = 1) -> NoReturn:
        log.error(
            "tool %s returned data that violates its output schema at %s: %s",
            tool,
            path,
            problem,
            extra={"tool_name": tool, "schema_path": path, "violations": count},
        )
        raise ToolFailure(
            "invalid_output",
            "invalid_output",
            f"tool '{tool}' produced a result that does not match its declared output schema "
            f"(at {path}); the result was withheld. This is a server-side bug: report it.",
        )
