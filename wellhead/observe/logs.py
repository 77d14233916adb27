"""JSON logs for wellhead and FastMCP alike, on stderr (stdout belongs to stdio MCP).

FastMCP installs Rich handlers on its own logger with propagation off; we replace them so
every line any component writes is one JSON object a log shipper can parse.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

_RESERVED = ("fastmcp", "mcp", "uvicorn", "uvicorn.error", "uvicorn.access", "docket")


# Attributes every LogRecord has; anything else came through `extra=` and becomes a field.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record: message, `extra` fields, ts, level, logger, traceback.

    Written out rather than python-json-logger's formatter because it runs on every tool
    call: this is about 5x cheaper for a `tool_call` line.
    """

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record.msg, Mapping) and not record.args:
            data: dict[str, Any] = dict(record.msg)  # a structured message is its fields
        else:
            data = {"message": record.getMessage()}
        for key, value in record.__dict__.items():
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
        return json.dumps(data, default=str, ensure_ascii=False)


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
    """Send wellhead, fastmcp, mcp and uvicorn logs through one JSON handler."""
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
