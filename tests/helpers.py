"""Small helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import json
from typing import Any

from fastmcp import Client

from wellhead.app import build_server
from wellhead.config import Settings


def client_for(settings: Settings) -> Client:
    """A real MCP client talking to a freshly built server in memory."""
    return Client(build_server(settings))


def error_of(result: Any) -> dict[str, Any]:
    """The structured error payload of an isError tool result."""
    assert result.is_error, f"expected an error, got {result.structured_content}"
    return json.loads(result.content[0].text)


async def walk(client: Client, sql: str, **kwargs: Any) -> tuple[list[list[Any]], int]:
    """Follow every cursor; returns all rows and the number of pages."""
    first = await client.call_tool("query", {"sql": sql, **kwargs})
    page = first.structured_content
    rows = list(page["rows"])
    pages = 1
    extra = {k: v for k, v in kwargs.items() if k in ("max_rows", "budget_bytes")}
    while page["next_cursor"]:
        result = await client.call_tool("query", {"cursor": page["next_cursor"], **extra})
        page = result.structured_content
        rows.extend(page["rows"])
        pages += 1
    return rows, pages
