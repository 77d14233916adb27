"""Transport mismatch on stdio: say so, instead of dropping unreadable input in silence.

The MCP SDK's stdio reader turns a line that is not JSON-RPC into an exception it logs at
DEBUG and then ignores, so an HTTP client pointed at a stdio server (or a shell user typing
into it) sees nothing at all. This filter watches for those records and logs one clear
error naming the likely cause and the fix.
"""

from __future__ import annotations

import logging
import re

DISPATCHER_LOGGER = "mcp.shared.jsonrpc_dispatcher"
_HTTP_REQUEST = re.compile(r"\b(GET|POST|PUT|DELETE|PATCH|OPTIONS|HEAD) /\S* HTTP/\d")
log = logging.getLogger("wellhead.transport")


class StdioMismatchFilter(logging.Filter):
    """Turns the SDK's silent 'transport yielded exception' into one actionable error."""

    def __init__(self, show_debug: bool = False) -> None:
        super().__init__()
        self.reported = False
        self.show_debug = show_debug

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("transport yielded exception"):
            # The logger was opened to DEBUG only for the record above.
            return self.show_debug or record.levelno > logging.DEBUG
        if not self.reported:
            self.reported = True
            detail = record.getMessage()
            if _HTTP_REQUEST.search(detail):
                log.error(
                    "received an HTTP request on stdin, but this server speaks MCP over stdio. "
                    "For HTTP clients start it with: wellhead serve --transport http --port 8000",
                    extra={"transport": "stdio", "mismatch": "http_on_stdio"},
                )
            else:
                log.error(
                    "stdin carried a line that is not a JSON-RPC message; over stdio wellhead "
                    "expects one JSON-RPC message per line from an MCP client",
                    extra={"transport": "stdio", "mismatch": "not_json_rpc"},
                )
        return False


def watch_stdio_input(show_debug: bool = False) -> None:
    """Install the filter (the SDK logs the record at DEBUG, so let that logger create it)."""
    logger = logging.getLogger(DISPATCHER_LOGGER)
    logger.setLevel(logging.DEBUG)
    logger.addFilter(StdioMismatchFilter(show_debug))
