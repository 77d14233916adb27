"""`wellhead serve --transport http` as a subprocess, driven by a real MCP client over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastmcp import Client

from tests.server_process import ServerProcess

pytestmark = pytest.mark.anyio


def write_config(tmp_path: Path, demo_db: Path) -> Path:
    config = tmp_path / "wellhead.yaml"
    config.write_text(
        f"sources:\n  demo:\n    kind: duckdb\n    path: {demo_db}\n"
        "cursor:\n  secret: http-test-secret-0123456789abcdef\n"
    )
    return config


@pytest.fixture
def http_server(tmp_path: Path, demo_db: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(write_config(tmp_path, demo_db))
    yield server
    server.stop()


async def test_real_client_over_streamable_http(http_server: ServerProcess):
    async with Client(f"{http_server.url}/mcp") as client:
        names = {tool.name for tool in await client.list_tools()}
        result = await client.call_tool("query", {"sql": "SELECT count(*) FROM orders"})
        page = await client.call_tool("query", {"sql": "SELECT * FROM orders", "max_rows": 10})
        following = await client.call_tool(
            "query", {"cursor": page.structured_content["next_cursor"], "max_rows": 10}
        )
        bad = await client.call_tool("query", {"sql": "DROP TABLE orders"}, raise_on_error=False)
    assert {"list_tables", "describe_table", "query"} <= names
    assert result.structured_content["rows"] == [[1_000_000]]
    assert following.structured_content["offset"] == 10
    assert bad.is_error
    calls = [line for line in http_server.log_lines() if line.get("event") == "tool_call"]
    assert len(calls) == 4
    for line in calls:
        for key in (
            "tool_name",
            "invocation_id",
            "execution_time_ms",
            "request_bytes",
            "response_bytes",
            "outcome",
            "session_id",
            "transport",
        ):
            assert key in line, key
    error_line = calls[-1]
    assert error_line["outcome"] == "tool_error" and error_line["error_id"]
    assert error_line["error_id"] in bad.content[0].text


async def test_health_endpoints_and_transport_mismatch(http_server: ServerProcess):
    async with httpx.AsyncClient(base_url=http_server.url) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = (await http.get("/readyz")).json()
        assert ready == {"status": "ok", "sources": {"demo": "ok"}}
        # DNS-rebinding protection: a foreign Host header is refused.
        rebinding = await http.post(
            "/mcp",
            headers={"Host": "evil.example", "Content-Type": "application/json"},
            content=b"{}",
        )
        assert rebinding.status_code in (403, 421)
        # A plain GET without the SSE Accept header is told what the endpoint expects.
        wrong = await http.get("/mcp")
        assert wrong.status_code in (400, 405, 406)


async def test_stateless_http_mode(tmp_path: Path, demo_db: Path):
    server = ServerProcess(write_config(tmp_path, demo_db), "--stateless")
    try:
        async with Client(f"{server.url}/mcp") as client:
            result = await client.call_tool("query", {"sql": "SELECT 1 AS one"})
        assert result.structured_content["rows"] == [[1]]
    finally:
        server.stop()
