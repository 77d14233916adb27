"""Who may call over HTTP: static bearer tokens and JWTs, per-tool scopes, the principal in logs.

Real servers (`wellhead serve --transport http` subprocesses) and real clients: FastMCP's
token verifiers in front of the MCP endpoint, checked from outside.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml
from fastmcp import Client
from fastmcp.server.auth.providers.jwt import RSAKeyPair

from tests.server_process import ServerProcess

pytestmark = pytest.mark.anyio
ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef-x"


def config_with(tmp_path: Path, demo_db: Path, auth: dict) -> Path:
    config = tmp_path / "wellhead.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "sources": {"demo": {"kind": "duckdb", "path": str(demo_db)}},
                "auth": auth,
                "tools": {
                    "revenue_by_channel": {
                        "description": "Revenue per sales channel.",
                        "sql": "SELECT channel, sum(total) AS revenue FROM orders GROUP BY 1",
                        "scopes": ["finance"],
                    }
                },
            }
        )
    )
    return config


async def test_static_tokens_scopes_and_the_principal_in_logs(tmp_path: Path, demo_db: Path):
    auth = {
        "kind": "static",
        "tokens": {
            ALICE: {"client_id": "alice", "scopes": ["data"]},
            BOB: {"client_id": "bob", "scopes": ["data", "finance"]},
        },
    }
    server = ServerProcess(config_with(tmp_path, demo_db, auth))
    try:
        async with httpx.AsyncClient() as http:
            anonymous = await http.post(
                server.mcp_url,
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                headers={"Accept": "application/json, text/event-stream"},
            )
            assert anonymous.status_code == 401
            probe = await http.get(f"{server.url}/healthz")
            assert probe.status_code == 200  # probes stay open for the orchestrator
        with pytest.raises(Exception):  # noqa: B017 - any refusal to connect will do
            async with Client(server.mcp_url, auth="not-a-valid-token-at-all") as client:
                await client.list_tools()

        async with Client(server.mcp_url, auth=ALICE) as alice:
            alice_tools = {t.name for t in await alice.list_tools()}
            ok = await alice.call_tool("query", {"sql": "SELECT 1 AS one"})
            hidden = await alice.call_tool("revenue_by_channel", {}, raise_on_error=False)
        async with Client(server.mcp_url, auth=BOB) as bob:
            bob_tools = {t.name for t in await bob.list_tools()}
            revenue = await bob.call_tool("revenue_by_channel", {})
    finally:
        server.stop()
    assert ok.structured_content["rows"] == [[1]]
    assert "revenue_by_channel" not in alice_tools and "revenue_by_channel" in bob_tools
    assert hidden.is_error
    assert revenue.structured_content["row_count"] >= 1
    calls = [line for line in server.log_lines() if line.get("event") == "tool_call"]
    principals = {line["tool_name"]: line["client_id"] for line in calls if line["outcome"] == "ok"}
    assert principals == {"query": "alice", "revenue_by_channel": "bob"}
    everything = server.log_text()
    assert ALICE not in everything and BOB not in everything  # tokens are never logged


async def test_jwt_from_an_identity_provider(tmp_path: Path, demo_db: Path):
    keys = RSAKeyPair.generate()
    auth = {
        "kind": "jwt",
        "public_key": keys.public_key,
        "issuer": "https://idp.example.test",
        "audience": "wellhead",
    }
    server = ServerProcess(config_with(tmp_path, demo_db, auth))
    good = keys.create_token(
        subject="agent-7",
        issuer="https://idp.example.test",
        audience="wellhead",
        scopes=["finance"],
        additional_claims={"client_id": "agent-7"},
    )
    wrong_audience = keys.create_token(
        subject="agent-7", issuer="https://idp.example.test", audience="someone-else"
    )
    try:
        async with Client(server.mcp_url, auth=good) as client:
            result = await client.call_tool("revenue_by_channel", {})
        async with httpx.AsyncClient() as http:
            refused = await http.post(
                server.mcp_url,
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                headers={
                    "Accept": "application/json, text/event-stream",
                    "Authorization": f"Bearer {wrong_audience}",
                },
            )
    finally:
        server.stop()
    assert result.structured_content["row_count"] >= 1
    assert refused.status_code == 401
    line = next(x for x in server.log_lines() if x.get("event") == "tool_call")
    assert line["client_id"] == "agent-7"
    assert good not in server.log_text()


def test_auth_config_is_checked():
    from wellhead.config import parse_settings
    from wellhead.errors import ConfigError

    with pytest.raises(ConfigError, match="at least 16 characters"):
        parse_settings({"auth": {"kind": "static", "tokens": {"short": {"client_id": "a"}}}})
    with pytest.raises(ConfigError, match="exactly one of jwks_uri or public_key"):
        parse_settings({"auth": {"kind": "jwt", "issuer": "x"}})
