"""Which worker process served a call: for `wellhead serve --workers N` tests."""

from __future__ import annotations

import os
import time

from fastmcp import FastMCP


def register(mcp: FastMCP) -> None:
    @mcp.tool
    async def worker_pid(block_s: float = 0.0) -> int:
        """This worker's process id. `block_s` holds the worker's event loop on purpose, so
        that a test can steer its next connection to another worker (a blocked loop does not
        accept)."""
        if block_s:
            time.sleep(block_s)  # noqa: ASYNC251 - blocking is the point
        return os.getpid()
