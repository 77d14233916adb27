"""stdio and legacy SSE with real clients; a wrong transport gets a clear message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastmcp import Client
from fastmcp.client.transports import SSETransport, StdioTransport

from tests.test_http import ServerProcess

pytestmark = pytest.mark.anyio


def write_config(tmp_path: Path, demo_db: Path) -> Path:
    config = tmp_path / "wellhead.yaml"
    config.write_text(f"sources:\n  demo:\n    kind: duckdb\n    path: {demo_db}\n")
    return config


async def test_stdio_with_a_real_client(tmp_path: Path, demo_db: Path):
    transport = StdioTransport(
        command=sys.executable,
        args=["-m", "wellhead", "serve", "--config", str(write_config(tmp_path, demo_db))],
        env={**os.environ, "FASTMCP_CHECK_FOR_UPDATES": "off"},
    )
    async with Client(transport) as client:
        result = await client.call_tool("query", {"sql": "SELECT count(*) FROM products"})
    assert result.structured_content["rows"][0][0] > 0


def test_an_http_request_on_stdio_is_named(tmp_path: Path, demo_db: Path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "wellhead",
            "serve",
            "--config",
            str(write_config(tmp_path, demo_db)),
        ],
        input=b"POST /mcp HTTP/1.1\r\nHost: localhost\r\n\r\n",
        capture_output=True,
        timeout=120,
    )
    stderr = run.stderr.decode()
    assert "received an HTTP request on stdin" in stderr
    assert "--transport http" in stderr
    assert run.stdout == b""  # nothing that is not JSON-RPC ever goes to stdout


async def test_legacy_sse_with_a_real_client(tmp_path: Path, demo_db: Path):
    server = ServerProcess(write_config(tmp_path, demo_db), "--transport", "sse")
    try:
        async with Client(SSETransport(f"{server.url}/sse")) as client:
            result = await client.call_tool("query", {"sql": "SELECT 2 AS two"})
        assert result.structured_content["rows"] == [[2]]
    finally:
        server.stop()
