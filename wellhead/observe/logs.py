"""JSON logs for wellhead and FastMCP alike, on stderr (stdout belongs to stdio MCP).

FastMCP installs Rich handlers on its own logger with propagation off; we replace them so
every line any component writes is one JSON object a log shipper can parse.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

from wellhead.observe.bounds import MAX_LOG_MESSAGE_BYTES, bound_value, cut_middle, cut_text
from wellhead.observe.redact import STANDARD_RECORD_ATTRS, RedactingFilter, redact_event

_RESERVED = ("fastmcp", "mcp", "uvicorn", "uvicorn.error", "uvicorn.access", "docket")

_BODY_LOGGERS = ("fastmcp", "mcp", "sse_starlette", "uvicorn", "httpx", "httpcore", "docket")
"""Libraries whose DEBUG lines print request or response bodies (SQL, rows, arguments)."""


EVENT_FIELDS = "_wh_fields"
"""A record attribute naming its `extra` fields in order, so they need not be searched for."""

_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record: message, `extra` fields, ts, level, logger, traceback.

    Written out rather than python-json-logger's formatter because it runs on every tool
    call: this is about 5x cheaper for a `tool_call` line. A record that lists its fields
    under `_wh_fields` (the call guard's) skips the search of the record for extras.
    """

    def __init__(self) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")  # (a second, its formatted date and time)

    def format(self, record: logging.LogRecord) -> str:
        attributes = record.__dict__
        if isinstance(record.msg, Mapping) and not record.args:
            data: dict[str, Any] = dict(record.msg)  # a structured message is its fields
        else:
            data = {"message": record.getMessage()}
        named = attributes.get(EVENT_FIELDS)
        if named is not None:
            for key in named:
                data[key] = attributes[key]
        else:
            for key, value in attributes.items():
                if key not in STANDARD_RECORD_ATTRS and not key.startswith("_"):
                    data[key] = value
        data["ts"] = self.formatTime(record)
        data["level"] = record.levelname
        data["logger"] = record.name
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["exc_info"] = record.exc_text
        if record.stack_info:
            data["stack_info"] = self.formatStack(record.stack_info)
        return _ENCODER.encode(data)

    def event_line(self, logger: str, level: int, message: str, fields: Mapping[str, Any]) -> str:
        """The line `format` gives a record of `message` with `fields` named, made directly."""
        created = time.time()
        data = {"message": message, **fields}
        data["ts"] = self._timestamp(created, (created - int(created)) * 1000)
        data["level"] = logging.getLevelName(level)
        data["logger"] = logger
        return _ENCODER.encode(data)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """The default `2026-11-25 13:36:29,123` (local time); the seconds part is cached."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return self._timestamp(record.created, record.msecs)

    def _timestamp(self, created: float, msecs: float) -> str:
        cached = self._second  # one tuple, swapped whole: safe when threads format at once
        if cached[0] != int(created):
            cached = (int(created), time.strftime("%Y-%m-%d %H:%M:%S", self.converter(created)))
            self._second = cached
        return f"{cached[1]},{int(msecs):03d}"


class _DropFastMCPToolErrors(logging.Filter):
    """FastMCP logs every failing tool with a traceback; the call guard logs the same failure
    once, with its error id, so FastMCP's copy is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.name.startswith("fastmcp")
            and isinstance(record.msg, str)
            and record.msg.startswith(("Error calling tool", "Invalid arguments for tool"))
        )


class _ThirdPartyDebugFilter(logging.Filter):
    """Drops DEBUG (and lower) records of every logger but wellhead's own.

    At DEBUG, fastmcp, mcp and sse_starlette log whole messages (`chunk: b'event: message
    data: {...rows...}'`), whatever `logging.arguments` says; wellhead's policy is the only
    one that may decide what of a call is logged. `logging.third_party_debug` opts back in.
    A handler filter, not logger levels: a library may set its own logger's level (fastmcp
    does, from FASTMCP_LOG_LEVEL) after we configured it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.INFO:
            return True
        name = record.name
        return name == "wellhead" or name.startswith("wellhead.")


class _BoundingFilter(logging.Filter):
    """Cuts a record's message, traceback and `extra` strings to a bound, with a marker.

    Runs after redaction (a cut must not split a secret out of its pattern's reach). An
    exception message may quote what a caller sent (a megabyte of SQL); a traceback keeps
    its end, where the failing line is.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.__dict__.get("_wh_redacted"):
            return True  # an event line: its fields were bounded where it was made
        if isinstance(record.msg, str) and len(record.msg) * 4 > MAX_LOG_MESSAGE_BYTES:
            record.msg = cut_text(record.msg, MAX_LOG_MESSAGE_BYTES)
        if record.exc_text and len(record.exc_text) * 4 > MAX_LOG_MESSAGE_BYTES:
            record.exc_text = cut_middle(
                record.exc_text, MAX_LOG_MESSAGE_BYTES, MAX_LOG_MESSAGE_BYTES // 2
            )
        for key, value in record.__dict__.items():
            if key not in STANDARD_RECORD_ATTRS and isinstance(value, str | bytes | list | dict):
                record.__dict__[key] = bound_value(value)
        return True


class JsonLineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Wellhead's own handler: JSON lines, FastMCP's duplicate tool errors dropped, secrets
    redacted, libraries' DEBUG lines dropped (unless `third_party_debug`). It can also write
    an event line made without a `LogRecord` (`emit_event`)."""

    def __init__(self, stream: Any = None, third_party_debug: bool = False) -> None:
        super().__init__(stream or sys.stderr)
        self.formatter: JsonLineFormatter = JsonLineFormatter()
        if not third_party_debug:
            self.addFilter(_ThirdPartyDebugFilter())
        self.addFilter(_DropFastMCPToolErrors())
        self.addFilter(RedactingFilter())
        self.addFilter(_BoundingFilter())
        self._own_filters = list(self.filters)

    def writes_events_directly(self, level: int) -> bool:
        """Only while configured as built: another filter or formatter must see records."""
        return (
            level >= self.level
            and self.filters == self._own_filters
            and isinstance(self.formatter, JsonLineFormatter)
        )

    def write_event(self, logger: str, level: int, message: str, fields: dict[str, Any]) -> None:
        redact_event(fields)  # what RedactingFilter does to the same event as a record
        line = self.formatter.event_line(logger, level, message, fields)
        with self.lock or contextlib.nullcontext():
            self.stream.write(line + self.terminator)
            self.flush()


def json_handler(stream: Any = None, third_party_debug: bool = False) -> logging.Handler:
    return JsonLineHandler(stream, third_party_debug)


def emit_event(logger: logging.Logger, level: int, message: str, fields: dict[str, Any]) -> None:
    """Log one structured event (the `tool_call` line): the fields become top-level keys.

    Through `logging` a line like this builds a `LogRecord` of some forty attributes, walks
    the logger tree and runs the handler's filters: inside a tool call, about a third of
    everything the call guard costs, and twice the cost of writing the line directly. When
    the only handler that would see the record is wellhead's own, as `configure_logging`
    sets it up, the same line is made and written directly. Any other listener (a user's
    handler, pytest's capture, a logger filter) gets the record through `logging` as usual,
    with the same fields.
    """
    if not logger.isEnabledFor(level) or logger.disabled:
        return
    handler = _sole_handler(logger)
    if isinstance(handler, JsonLineHandler) and handler.writes_events_directly(level):
        try:
            handler.write_event(logger.name, level, message, fields)
            return
        except Exception:  # noqa: BLE001 - let logging report the failure its usual way
            pass
    extra = {**fields, EVENT_FIELDS: tuple(fields), "_wh_redacted": True}
    logger.log(level, message, extra=extra)


def _sole_handler(logger: logging.Logger) -> logging.Handler | None:
    """The one handler a record of `logger` would reach, if exactly one and no logger filters."""
    found: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters or current.disabled:
            return None
        found.extend(current.handlers)
        if not current.propagate:
            break
        current = current.parent
    return found[0] if len(found) == 1 else None


def configure_logging(
    level: str = "INFO", stream: Any = None, third_party_debug: bool = False
) -> None:
    """Send wellhead, fastmcp, mcp and uvicorn logs through one JSON handler.

    `level` is wellhead's; libraries log at INFO or above unless `third_party_debug` (their
    DEBUG lines print request and response bodies: SQL, rows, arguments).

    The JSON lines never show a record's source line, thread or process, so logging is
    told not to collect them (the optimisations the logging HOWTO lists): finding the
    caller walks the stack on every record, a cost paid on every tool call."""
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = json_handler(stream, third_party_debug)
    numeric = logging.getLevelName(level) if isinstance(level, str) else int(level)
    numeric = numeric if isinstance(numeric, int) else logging.INFO
    libraries = numeric if third_party_debug else max(numeric, logging.INFO)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(libraries)
    for name in _RESERVED:
        logger = logging.getLogger(name)
        for existing in list(logger.handlers):
            logger.removeHandler(existing)
        logger.propagate = True
    for name in _BODY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level != logging.NOTSET and logger.level < libraries:
            logger.setLevel(libraries)
    logging.getLogger("wellhead").setLevel(level)
