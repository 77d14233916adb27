"""Session isolation: 200 concurrent clients over real HTTP, each with private state, zero bleed.

One `wellhead serve --transport http` subprocess (stateful HTTP, the default) loads
`tests.plugins.stateful`. Each test runs 200 real MCP clients at once; every client writes
a unique random value, waits until all 200 have written (so all 200 values live in the
store together), then reads back and must get exactly its own.

Which mechanism proves what:

- `test_legacy_sessions_keep_private_state`: clients forced onto the handshake-era protocol
  (`Client(mode="legacy")`) get an `mcp-session-id`; the server keys `ctx.set_state` /
  `ctx.get_state` by it. Proves that per-MCP-session state (what plugins reach for first)
  is isolated between concurrent sessions, and that the `session_id` in every `tool_call`
  log line is the one the client's state is keyed by.
- `test_explicit_sessions_keep_private_state`: clients on the default 2026-07-28 protocol,
  where every request is its own connection, so `ctx.session_id` changes per request (the
  first assertion shows `ctx` state does not survive to the next call there). State that
  must outlive a request uses FastMCP's explicit sessions: `create_session` mints an
  unguessable id, tools take it as a `SessionId` argument and resolve it with
  `get_session`, which rejects ids that were never minted. Proves those buckets are
  isolated under concurrency. Without authentication the id is a bearer capability (the
  principal is the wall when auth is on), which is why an unminted id must be refused.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastmcp import Client

from tests.server_process import ServerProcess

pytestmark = pytest.mark.anyio

CLIENTS = 200
RUN_LIMIT_S = 90  # a bound on a hang, not a performance figure


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, demo_db: Path) -> Iterator[ServerProcess]:
    config = tmp_path_factory.mktemp("sessions") / "wellhead.yaml"
    config.write_text(
        f"sources:\n  demo:\n    kind: duckdb\n    path: {demo_db}\n"
        "cursor:\n  secret: sessions-test-secret-0123456789abcdef\n"
        "plugins: [tests.plugins.stateful]\n"
        "logging:\n  arguments: full\n"
    )
    process = ServerProcess(config)
    yield process
    process.stop()


def structured(result: Any) -> dict[str, Any]:
    content: dict[str, Any] | None = result.structured_content
    assert content is not None, result
    return content


async def run_clients(
    server: ServerProcess, mode: str, write: Any, read: Any
) -> list[tuple[str, Any, Any]]:
    """Run CLIENTS clients at once: each writes, all wait for each other, each reads back.

    Returns (value written, what write returned, what read returned) per client.
    """
    results: list[tuple[str, Any, Any]] = []
    written = 0
    all_written = anyio.Event()

    async def one() -> None:
        nonlocal written
        value = secrets.token_hex(16)
        async with Client(server.mcp_url, mode=mode, timeout=60) as client:
            handle = await write(client, value)
            written += 1
            if written == CLIENTS:
                all_written.set()
            await all_written.wait()
            results.append((value, handle, await read(client, handle)))

    with anyio.fail_after(RUN_LIMIT_S):
        async with anyio.create_task_group() as group:
            for _ in range(CLIENTS):
                group.start_soon(one)
    assert len(results) == CLIENTS
    return results


async def test_legacy_sessions_keep_private_state(server: ServerProcess):
    async def write(client: Client, value: str) -> str:
        assert client.protocol_version is not None
        assert not client.protocol_version.startswith("2026")  # really the legacy handshake
        return str(structured(await client.call_tool("remember", {"value": value}))["result"])

    async def read(client: Client, _: str) -> dict[str, Any]:
        return structured(await client.call_tool("recall", {}))

    results = await run_clients(server, "legacy", write, read)
    bleed = [(value, got) for value, _, got in results if got["value"] != value]
    assert not bleed, f"{len(bleed)} of {CLIENTS} sessions read another's state: {bleed[:3]}"
    session_ids = {handle for _, handle, _ in results}
    assert len(session_ids) == CLIENTS, "two clients shared an MCP session"
    assert all(got["session_id"] == handle for _, handle, got in results)

    # The log tells the same story: each remember call is logged under its client's session.
    logged = {
        line["arguments"]["value"]: line["session_id"]
        for line in server.log_lines()
        if line.get("event") == "tool_call" and line.get("tool_name") == "remember"
    }
    assert {value: handle for value, handle, _ in results}.items() <= logged.items()


async def test_explicit_sessions_keep_private_state(server: ServerProcess):
    async with Client(server.mcp_url) as client:
        assert client.protocol_version == "2026-07-28"
        # On this protocol `ctx` state is per request: it is gone by the next call.
        await client.call_tool("remember", {"value": "per-request"})
        assert (await client.call_tool("recall", {})).structured_content["value"] is None
        # An id nobody minted resolves to nothing, not to an empty bucket.
        forged = await client.call_tool(
            "recall_from",
            {"session_id": "00000000-0000-4000-8000-000000000000"},
            raise_on_error=False,
        )
        assert forged.is_error
        assert "invalid or unknown session" in json.loads(forged.content[0].text)["message"].lower()

    async def write(client: Client, value: str) -> str:
        session_id = str(structured(await client.call_tool("create_session", {}))["result"])
        await client.call_tool("remember_in", {"session_id": session_id, "value": value})
        return session_id

    async def read(client: Client, session_id: str) -> str | None:
        result = await client.call_tool("recall_from", {"session_id": session_id})
        value = structured(result)["result"]
        return None if value is None else str(value)

    results = await run_clients(server, "auto", write, read)
    bleed = [(value, got) for value, _, got in results if got != value]
    assert not bleed, f"{len(bleed)} of {CLIENTS} sessions read another's state: {bleed[:3]}"
    assert len({session_id for _, session_id, _ in results}) == CLIENTS

    async with Client(server.mcp_url) as client:
        session_id = results[0][1]
        await client.call_tool("end_session", {"session_id": session_id})
        ended = await client.call_tool(
            "recall_from", {"session_id": session_id}, raise_on_error=False
        )
    assert ended.is_error, "an ended session still resolves"
