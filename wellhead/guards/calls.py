"""The outermost tool guard: every call ends as a result, a log line and (if on) metrics.

Any exception becomes an `isError` tool result carrying a stable error id that also appears
in the log line, so an operator can find the traceback an agent reported. Wellhead's own
errors and `ToolError`s raised on purpose keep their message; anything else is masked.
The process never dies of a tool.

Everything a caller chooses is bounded here, for every tool, plugins included: an error text
fits `MAX_ERROR_BYTES` (well inside the smallest output budget, 1024 bytes), cut with an
explicit marker; the log line names the tool as asked but cut, and its arguments are cut
(`max_logged_argument_bytes`); metrics and the in-flight registry only ever see registered
tool names, so invented names (`_unknown`) cannot grow them.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from fastmcp.exceptions import NotFoundError, ToolError, ValidationError
from fastmcp.server.dependencies import get_access_token
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.server.sessions import InvalidSession, SessionAuthError
from fastmcp.tools import ToolResult
from mcp.types import CallToolRequestParams, TextContent
from pydantic import ValidationError as PydanticValidationError

from wellhead.errors import QueryCancelled, QueryTimeout, WellheadError
from wellhead.guards.catalog import ToolCatalog
from wellhead.guards.connection import NO_CONNECTION, connection_facts
from wellhead.observe.bounds import (
    MAX_LOGGED_ARGUMENT_BYTES,
    bound_arguments,
    cut_middle,
    cut_text,
)
from wellhead.observe.logs import emit_event
from wellhead.observe.tracing import current_trace_id
from wellhead.sql import encoding

log = logging.getLogger("wellhead.calls")

UNKNOWN_TOOL = "_unknown"
"""The metric label and registry key of a call naming no tool its caller can see."""

MAX_ERROR_BYTES = 900
"""The most an error result's text takes (UTF-8, JSON included): under any output budget."""

MAX_LOGGED_TOOL_NAME = 128
"""A requested tool name longer than this is cut in log lines and audit events."""

CallObserver = Callable[["CallRecord"], Awaitable[None] | None]
"""Called once per finished call; may be async (an audit hand-off that applies back-pressure)."""


@dataclass
class CallRecord:
    """What one tool call did; the log line, the audit event and metrics are views of it.

    `tool_name` is the registered tool's name, or `_unknown` when the caller sees no tool of
    the name it sent: safe as a metric label or map key. `requested_name` is the name sent,
    cut to `MAX_LOGGED_TOOL_NAME` characters with a marker: it is what logs show.
    """

    tool_name: str
    invocation_id: str
    request_id: str | None
    session_id: str | None
    client_id: str | None
    transport: str | None
    arguments: dict[str, Any]
    request_bytes: int
    connection_id: str | None = None
    client_name: str | None = None
    client_version: str | None = None
    started: float = field(default_factory=time.perf_counter)
    execution_time_ms: float = 0.0
    response_bytes: int = 0
    rows: int | None = None
    truncated: bool | None = None
    outcome: str = "ok"
    error_id: str | None = None
    error_kind: str | None = None
    trace_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    requested_name: str = ""


class ToolFailure(Exception):
    """Raised by inner guards to end a call with a specific outcome and public message."""

    def __init__(
        self, outcome: str, kind: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.kind = kind
        self.public_message = message
        self.details = details  # extra fields of the error's JSON (retry_after_s): short, safe


class CallGuard(Middleware):
    def __init__(
        self,
        *,
        mask_error_details: bool = True,
        observers: list[CallObserver] | None = None,
        log_arguments: Callable[[dict[str, Any]], Any] | None = None,
        inflight: Any = None,
        catalog: ToolCatalog | None = None,
        max_logged_argument_bytes: int = MAX_LOGGED_ARGUMENT_BYTES,
    ) -> None:
        self.mask_error_details = mask_error_details
        self.observers = observers or []
        self.log_arguments = log_arguments
        self.inflight = inflight
        self.catalog = catalog or ToolCatalog()
        self.max_logged_argument_bytes = max_logged_argument_bytes

    async def on_call_tool(
        self,
        context: MiddlewareContext[CallToolRequestParams],
        call_next: CallNext[CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        record = _new_record(context)
        if context.fastmcp_context is not None:
            facts = await self.catalog.facts(context)
            record.tool_name = facts.name if facts is not None else UNKNOWN_TOOL
        if self.inflight is not None:
            self.inflight.enter(record.tool_name, record.invocation_id)
        token = _current_call.set(record)
        try:
            result = await call_next(context)
        except BaseException as exc:  # noqa: BLE001 - the guard's whole job
            record.response_bytes = 0  # whatever an inner guard measured was not sent
            if not isinstance(exc, Exception):
                record.outcome = "cancelled"
                await self._finish(record, None)
                raise
            result = self._error_result(record, exc)
        else:
            if not isinstance(result, ToolResult):  # a task handle: the task logs its own run
                record.extra["task"] = "created"
            elif result.is_error:
                if record.outcome == "ok":
                    record.outcome = "tool_error"
                result = _bounded_error(result)
            if isinstance(result, ToolResult):
                _measure(record, result)
        finally:
            _current_call.reset(token)
        await self._finish(record, result)
        return result

    def _error_result(self, record: CallRecord, exc: Exception) -> ToolResult:
        record.error_id = os.urandom(6).hex()
        outcome, kind, message, internal = _classify(exc, self.mask_error_details)
        record.outcome, record.error_kind = outcome, kind
        if internal:
            log.error(
                "tool %s failed with an internal error",
                record.tool_name,
                exc_info=exc.__cause__ or exc,
                extra={"error_id": record.error_id, "tool_name": record.tool_name},
            )
        text = error_text(kind, message, record.error_id, _failure_details(exc))
        return ToolResult(content=[TextContent(type="text", text=text)], is_error=True)

    async def _finish(self, record: CallRecord, result: ToolResult | None) -> None:
        if self.inflight is not None:
            self.inflight.exit(record.invocation_id)
        record.execution_time_ms = round((time.perf_counter() - record.started) * 1000, 3)
        if isinstance(result, ToolResult) and not record.response_bytes:
            # Unless the budget guard already measured the result it let through.
            record.response_bytes = _result_bytes(result)
        record.trace_id = current_trace_id()
        fields = call_event(record)
        if self.log_arguments is not None:
            fields["arguments"] = bound_arguments(
                self.log_arguments(record.arguments), self.max_logged_argument_bytes
            )
        fields.update(record.extra)
        level = logging.INFO if record.outcome in ("ok", "tool_error") else logging.WARNING
        emit_event(log, level, "tool_call", fields)
        for observer in self.observers:
            try:
                outcome = observer(record)
                if outcome is not None and inspect.isawaitable(outcome):
                    await outcome
            except Exception:  # an observer must never break a call
                log.exception("call observer %r failed", observer)


def call_event(record: CallRecord) -> dict[str, Any]:
    """The `tool_call` event: the log line's fields, and the audit event's."""
    return {
        "event": "tool_call",
        "tool_name": record.requested_name or record.tool_name,
        "invocation_id": record.invocation_id,
        "request_id": record.request_id,
        "session_id": record.session_id,
        "connection_id": record.connection_id,
        "client_id": record.client_id,
        "client_name": record.client_name,
        "client_version": record.client_version,
        "transport": record.transport,
        "execution_time_ms": record.execution_time_ms,
        "request_bytes": record.request_bytes,
        "response_bytes": record.response_bytes,
        "rows": record.rows,
        "truncated": record.truncated,
        "outcome": record.outcome,
        "error_id": record.error_id,
        "error_kind": record.error_kind,
        "trace_id": record.trace_id,
    }


def _new_record(context: MiddlewareContext[CallToolRequestParams]) -> CallRecord:
    message = context.message
    arguments = dict(message.arguments or {})
    ctx = context.fastmcp_context
    request_id = transport = None
    principal = _principal(ctx)
    facts = NO_CONNECTION
    if ctx is not None:
        request_id, transport = _context_ids(ctx)
        facts = connection_facts(ctx, transport, principal)
    name = message.name
    return CallRecord(
        tool_name=name,
        requested_name=cut_text(name, MAX_LOGGED_TOOL_NAME) if len(name) > 32 else name,
        invocation_id=os.urandom(16).hex(),  # as random as uuid4, a fifth of the cost
        request_id=request_id,
        session_id=facts.session_id,
        client_id=principal,
        transport=transport,
        arguments=arguments,
        request_bytes=encoding.encoded_size(arguments),
        connection_id=facts.connection_id,
        client_name=facts.client_name,
        client_version=facts.client_version,
    )


def _context_ids(ctx: Any) -> tuple[str | None, str | None]:
    """(request_id, transport); each is optional, by transport. The session id, when the
    protocol has one, comes with the connection's facts (`guards.connection`)."""
    request_id = transport = None
    try:
        request = ctx.request_context
        if request is not None:
            request_id = str(request.request_id)
    except Exception:  # noqa: BLE001 - context fields are optional by transport
        pass
    try:
        transport = ctx.transport
    except Exception:  # noqa: BLE001
        pass
    return request_id, str(transport) if transport is not None else None


def _principal(ctx: Any) -> str | None:
    """The authenticated principal when there is one, else the client's own id."""
    try:
        token = get_access_token()
        if token is not None:
            return str(token.client_id)
    except Exception:  # noqa: BLE001 - no auth context
        pass
    if ctx is None:
        return None
    try:
        client_id = ctx.client_id
    except Exception:  # noqa: BLE001 - not every transport names its client
        return None
    return str(client_id) if client_id is not None else None


def _measure(record: CallRecord, result: ToolResult) -> None:
    structured = result.structured_content or {}
    if isinstance(structured.get("rows"), list):
        record.rows = len(structured["rows"])
    elif isinstance(structured.get("row_count"), int):  # rows not in the result (an export)
        record.rows = structured["row_count"]
    if "truncated" in structured:
        record.truncated = bool(structured["truncated"])
    overflow = (result.meta or {}).get("wellhead", {})
    if overflow.get("truncated"):
        record.truncated = True


def result_sizes(result: ToolResult) -> tuple[int, int]:
    """UTF-8 bytes of (the text blocks, the structured content as JSON) of a result."""
    text = sum(len(block.text.encode()) for block in result.content if hasattr(block, "text"))
    structured = (
        encoding.encoded_size(result.structured_content)
        if result.structured_content is not None
        else 0
    )
    return text, structured


def _result_bytes(result: ToolResult) -> int:
    return sum(result_sizes(result))


def error_text(
    kind: str, message: str, error_id: str | None, details: dict[str, Any] | None = None
) -> str:
    """The JSON text of an error result, at most `MAX_ERROR_BYTES` UTF-8 bytes.

    The message is cut in the middle when it must be (its start says what failed, its end
    what to do), with a marker saying how much went: echoes of a caller's input (a megabyte
    of SQL, a 4 KB tool name) end up cut, never sent back whole.
    """
    kind = cut_text(kind, 64)
    payload = {"error": kind, "message": message, "error_id": error_id, **(details or {})}
    text = encoding.dumps(payload)
    limit = MAX_ERROR_BYTES - (len(text.encode()) - len(encoding.dumps(message).encode()))
    room = limit - 2  # the message's quotes
    while len(text.encode()) > MAX_ERROR_BYTES and room > 0:
        payload["message"] = cut_middle(message, room)
        text = encoding.dumps(payload)
        room = room * 9 // 10  # JSON escapes made it longer than its UTF-8 bytes: shrink
    return text


def _bounded_error(result: ToolResult) -> ToolResult:
    """An error result a tool returned itself (not raised), its text cut to the error bound."""
    texts = [block.text for block in result.content if isinstance(block, TextContent)]
    joined = "\n".join(texts)
    if len(joined) * 4 <= MAX_ERROR_BYTES or len(joined.encode()) <= MAX_ERROR_BYTES:
        return result
    others = [block for block in result.content if not isinstance(block, TextContent)]
    text = cut_middle(joined, MAX_ERROR_BYTES)
    return ToolResult(
        content=[TextContent(type="text", text=text), *others],
        structured_content=result.structured_content,
        meta=result.meta,
        is_error=True,
    )


_current_call: ContextVar[CallRecord | None] = ContextVar("wellhead_current_call", default=None)


def current_call() -> CallRecord | None:
    """The record of the tool call running in this context, for inner guards to add to."""
    return _current_call.get()


def _argument_problems(exc: Exception) -> str:
    """One short line per bad argument: which one, what was expected, what came."""
    source = exc.__cause__ if isinstance(exc.__cause__, PydanticValidationError) else exc
    if not isinstance(source, PydanticValidationError):
        return str(exc) or "invalid arguments"
    problems = []
    errors = source.errors()
    for error in errors[:_MAX_ARGUMENT_PROBLEMS]:
        where = cut_text(".".join(str(p) for p in error["loc"]) or "arguments", 80)
        message = error["msg"]
        if error["type"] == "unexpected_keyword_argument":
            message = "unknown argument; see the tool's input schema"
        elif error["type"] == "missing_argument":
            message = "required argument is missing"
        got = error.get("input")
        shown = (
            f" (got {cut_text(repr(got), 80)})"
            if got is not None and error["type"] != "missing_argument"
            else ""
        )
        problems.append(f"{where}: {cut_text(message, 200)}{shown}")
    if len(errors) > _MAX_ARGUMENT_PROBLEMS:
        problems.append(f"and {len(errors) - _MAX_ARGUMENT_PROBLEMS} more problems")
    return "invalid arguments: " + "; ".join(problems)


_MAX_ARGUMENT_PROBLEMS = 5


def _failure_details(exc: Exception) -> dict[str, Any] | None:
    """The extra error fields of a `ToolFailure`, raised as such or as a ToolError's cause."""
    for candidate in (exc, exc.__cause__):
        if isinstance(candidate, ToolFailure):
            return candidate.details
    return None


def _classify(exc: Exception, mask: bool) -> tuple[str, str, str, bool]:
    """(outcome, error kind, public message, is_internal) for an exception."""
    cause = exc
    if isinstance(exc, ToolError) and isinstance(exc.__cause__, Exception):
        cause = exc.__cause__
    if isinstance(cause, ToolFailure):
        return cause.outcome, cause.kind, cause.public_message, False
    if isinstance(cause, QueryTimeout):
        return "timeout", cause.kind, cause.public_message, False
    if isinstance(cause, QueryCancelled):
        return "cancelled", cause.kind, cause.public_message, False
    if isinstance(cause, WellheadError):
        return "tool_error", cause.kind, cause.public_message, False
    if isinstance(cause, InvalidSession | SessionAuthError):
        # The caller's mistake (a stale or unminted session id, no credentials), worded
        # by FastMCP for the caller and revealing nothing: say it, do not mask it.
        advice = "; call create_session for a new id" if isinstance(cause, InvalidSession) else ""
        return "tool_error", "invalid_session", f"{cause}{advice}", False
    if isinstance(cause, NotFoundError):
        return "tool_error", "unknown_tool", f"{cause}; call tools/list to see the tools", False
    if isinstance(exc, ValidationError) or type(cause).__name__ == "ValidationError":
        return "tool_error", "invalid_arguments", _argument_problems(exc), False
    if isinstance(exc, ToolError) and exc.__cause__ is None:
        return "tool_error", "tool_error", str(exc), False
    message = "internal error; the operator can find details in the server log by error_id"
    if not mask:
        message = f"internal error: {type(cause).__name__}: {cause}"
    return "internal_error", "internal_error", message, True
