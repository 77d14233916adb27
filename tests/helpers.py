"""Small helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
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


def service_env(variable: str, service: str, script: str) -> str:
    """A test service's address from the environment: skip locally, fail under CI=true.

    Tests that need PostgreSQL or Redis never skip silently in CI, where .ci/run starts them.
    """
    value = os.environ.get(variable)
    if not value:
        message = (
            f'{variable} is not set: run `bash {script} start` and `eval "$(bash {script} env)"`'
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"{service} is required in CI: {message}")
        pytest.skip(message)
    return value
