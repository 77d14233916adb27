"""A stable client identity in every audit line, over real transports.

stdio: `wellhead serve` processes driven by a real MCP client over their stdin/stdout, on
the default 2026-07-28 protocol (where FastMCP mints a new session id per request). HTTP:
a `wellhead serve --transport http` process with handshake-era sessions and with
stateless-era clients that declare different names.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import duckdb
import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport
from mcp.types import Implementation

from tests.server_process import REPO, ServerProcess

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def small_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("db") / "small.duckdb"
    connection = duckdb.connect(str(path))
    connection.execute("CREATE TABLE t AS SELECT range AS n FROM range(10)")
    connection.close()
    return path


def config(tmp_path: Path, db: Path, audit: Path) -> Path:
    path = tmp_path / f"{audit.stem}.yaml"
    path.write_text(
        f"sources:\n  db:\n    kind: duckdb\n    path: {db}\n"
        "cursor:\n  secret: identity-test-secret-0123456789abcdef\n"
        f"audit:\n  path: {audit}\n"
    )
    return path


def events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def stdio_client(cfg: Path, name: str) -> Client:
    transport = StdioTransport(
        sys.executable,
        ["-m", "wellhead", "serve", "--config", str(cfg)],
        env={**os.environ, "PYTHONPATH": str(REPO), "FASTMCP_CHECK_FOR_UPDATES": "off"},
        cwd=str(REPO),
    )
    return Client(transport, client_info=Implementation(name=name, version="1.2.3"))


async def test_one_stdio_client_is_one_connection_and_two_are_two(
    tmp_path: Path, small_db: Path
) -> None:
    audits = [tmp_path / "first.jsonl", tmp_path / "second.jsonl"]

    async def run(audit: Path, name: str, calls: int) -> None:
        async with stdio_client(config(tmp_path, small_db, audit), name) as client:
            assert client.protocol_version == "2026-07-28"
            for i in range(calls):
                await client.call_tool("query", {"sql": f"SELECT {i}"})

    async with anyio.create_task_group() as group:
        group.start_soon(run, audits[0], "agent-a", 100)
        group.start_soon(run, audits[1], "agent-b", 20)
    first, second = events(audits[0]), events(audits[1])
    assert len(first) == 100 and len(second) == 20
    assert len({e["connection_id"] for e in first}) == 1  # 100 calls, one connection
    assert len({e["connection_id"] for e in second}) == 1
    assert first[0]["connection_id"] != second[0]["connection_id"]  # two clients, two
    assert all(e["session_id"] is None for e in first + second)  # the era has no session
    assert {(e["client_name"], e["client_version"]) for e in first} == {("agent-a", "1.2.3")}
    assert {e["transport"] for e in first} == {"stdio"}


async def test_http_sessions_and_stateless_clients(tmp_path: Path, small_db: Path) -> None:
    audit = tmp_path / "http.jsonl"
    server = ServerProcess(config(tmp_path, small_db, audit))
    try:

        async def calls(mode: str, name: str, n: int) -> None:
            info = Implementation(name=name, version="9")
            async with Client(server.mcp_url, mode=mode, client_info=info) as client:
                for i in range(n):
                    await client.call_tool("query", {"sql": f"SELECT {i}"})

        await calls("legacy", "legacy-agent", 3)
        await calls("legacy", "legacy-agent", 3)  # same name, a second session
        await calls("auto", "modern-a", 3)
        await calls("auto", "modern-a", 2)  # same declared identity: indistinguishable
        await calls("auto", "modern-b", 3)
        server.stop()
    finally:
        server.stop()
    lines = events(audit)
    assert len(lines) == 14
    legacy, modern_a, modern_b = lines[:6], lines[6:11], lines[11:]
    assert all(e["session_id"] for e in legacy)
    assert len({e["connection_id"] for e in legacy[:3]}) == 1
    assert legacy[0]["connection_id"] != legacy[3]["connection_id"]  # one per session
    assert all(e["session_id"] is None for e in modern_a + modern_b)
    assert len({e["connection_id"] for e in modern_a}) == 1
    assert modern_a[0]["connection_id"] != modern_b[0]["connection_id"]
    assert {e["client_name"] for e in modern_b} == {"modern-b"}
