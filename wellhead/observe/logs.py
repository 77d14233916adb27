"""JSON logs for wellhead and FastMCP alike, on stderr (stdout belongs to stdio MCP).

FastMCP installs Rich handlers on its own logger with propagation off; we replace them so
every line any component writes is one JSON object a log shipper can parse.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

_RESERVED = ("fastmcp", "mcp", "uvicorn", "uvicorn.error", "uvicorn.access", "docket")


class _Formatter(JsonFormatter):
    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        log_data.setdefault("ts", self.formatTime(record))
        log_data["level"] = record.levelname
        log_data["logger"] = record.name


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
    handler.setFormatter(_Formatter("%(message)s", timestamp=False))
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
