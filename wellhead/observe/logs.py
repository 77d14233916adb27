"""JSON logs for wellhead and FastMCP alike, on stderr (stdout belongs to stdio MCP).

FastMCP installs Rich handlers on its own logger with propagation off; we replace them so
every line any component writes is one JSON object a log shipper can parse.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

_RESERVED = ("fastmcp", "mcp", "uvicorn", "uvicorn.error", "uvicorn.access", "docket")


# Attributes every LogRecord has; anything else came through `extra=` and becomes a field.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)


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
        self._second = -1
        self._prefix = ""

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
                if key not in _STANDARD and not key.startswith("_"):
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

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """The default `2026-11-25 13:36:29,123` (local time); the seconds part is cached."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(record.created))
            self._second = second
        return f"{self._prefix},{int(record.msecs):03d}"


class _DropFastMCPToolErrors(logging.Filter):
    """FastMCP logs every failing tool with a traceback; the call guard logs the same failure
    once, with its error id, so FastMCP's copy is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.name.startswith("fastmcp")
            and isinstance(record.msg, str)
            and record.msg.startswith(("Error calling tool", "Invalid arguments for tool"))
        )


def json_handler(stream: Any = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    handler.addFilter(_DropFastMCPToolErrors())
    _attach_redaction(handler)
    return handler


def _attach_redaction(handler: logging.Handler) -> None:
    try:
        from wellhead.observe.redact import RedactingFilter
    except ImportError:  # pragma: no cover - redact lands with the chassis
        return
    handler.addFilter(RedactingFilter())


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    """Send wellhead, fastmcp, mcp and uvicorn logs through one JSON handler.

    The JSON lines never show a record's source line, thread or process, so logging is
    told not to collect them (the optimisations the logging HOWTO lists): finding the
    caller walks the stack on every record, a cost paid on every tool call."""
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = json_handler(stream)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _RESERVED:
        logger = logging.getLogger(name)
        for existing in list(logger.handlers):
            logger.removeHandler(existing)
        logger.propagate = True
    logging.getLogger("wellhead").setLevel(level)
