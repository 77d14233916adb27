"""`wellhead serve --workers N`: N processes on one socket, sharing state through Redis.

Two real workers serve calls (their pids differ), a cursor issued by one continues on the
other, and SIGTERM to the parent drains both. Settings that cannot work across processes
are refused before anything starts. Redis comes from .ci/redis.sh (skipped locally without
it, a failure under CI=true).
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastmcp import Client

from tests.helpers import service_env
from tests.server_process import REPO, ServerProcess
from wellhead.config import parse_settings
from wellhead.errors import ConfigError
from wellhead.serve import check_workers

pytestmark = pytest.mark.anyio

SECRET = "workers-test-secret-0123456789abcdef"


def tiny_db(directory: Path) -> Path:
    db = directory / "tiny.sqlite"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE t (x INTEGER)")
        connection.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(1, 101)])
    return db


def write_config(directory: Path, redis_url: str | None) -> Path:
    state = f"state:\n  backend: redis\n  redis_url: {redis_url}\n" if redis_url else ""
    config = directory / "wellhead.yaml"
    config.write_text(
        f"sources:\n  tiny:\n    kind: sqlite\n    path: {tiny_db(directory)}\n"
        f"cursor:\n  secret: {SECRET}\n{state}"
        "plugins: [tests.plugins.worker_pid]\n"
        "server:\n  shutdown_grace_s: 10\n"
    )
    return config


def settings(**server: object) -> object:
    return {"sources": {"t": {"kind": "sqlite", "path": "x.sqlite"}}, "server": server}


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        (settings(workers=2, transport="http", stateless=True), "state.backend"),
        (settings(workers=2, transport="http", stateless=True), "cursor.secret"),
        (settings(workers=2, transport="http"), "server.stateless"),
        (settings(workers=2, transport="sse", stateless=True), "server.transport"),
        (settings(workers=2, transport="stdio"), "server.transport"),
    ],
)
def test_settings_that_break_across_workers_are_refused(raw: dict, named: str) -> None:
    with pytest.raises(ConfigError) as refused:
        check_workers(parse_settings(raw))
    assert named in str(refused.value)


def test_one_worker_and_a_complete_setup_are_accepted() -> None:
    check_workers(parse_settings(settings(workers=1)))
    complete = settings(workers=3, transport="http", stateless=True)
    complete["cursor"] = {"secret": SECRET}
    complete["state"] = {"backend": "redis", "redis_url": "redis://127.0.0.1:1/0"}
    check_workers(parse_settings(complete))


def test_cli_refuses_workers_on_memory_state_with_a_clear_message(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "wellhead", "serve", "--config", str(write_config(tmp_path, None))]
        + ["--transport", "http", "--stateless", "--workers", "2", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 2
    assert "server.workers is 2" in done.stderr
    assert "state.backend: redis" in done.stderr


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[ServerProcess]:
    url = service_env("WELLHEAD_TEST_REDIS_URL", "Redis", ".ci/redis.sh")
    server = ServerProcess(write_config(tmp_path, url), "--workers", "2", "--stateless")
    try:
        server.wait_for_log(
            lambda _: server.log_text().count("Application startup complete") >= 2, timeout=60
        )
        yield server
    finally:
        server.stop()


async def call(server: ServerProcess, tool: str, arguments: dict) -> object:
    """One call on a fresh connection (a kept-alive one would stay on its worker)."""
    async with Client(server.mcp_url) as client:
        return await client.call_tool(tool, arguments)


async def raw_call(server: ServerProcess, tool: str, arguments: dict) -> dict:
    """A stateless 2026-07-28 tools/call as one plain POST: its JSON-RPC result.

    For the drain test: the MCP client's own teardown would talk to a server that is, by
    then, rightly gone."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": tool,
            "arguments": arguments,
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }
    headers = {
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": tool,
    }
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(server.mcp_url, json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["result"]


async def pid_while_other_blocked(server: ServerProcess) -> tuple[int, int]:
    """(pid of a worker whose loop is held, pid of the worker that served meanwhile)."""
    blocked = asyncio.ensure_future(call(server, "worker_pid", {"block_s": 1.5}))
    await asyncio.sleep(0.5)
    other = await call(server, "worker_pid", {})
    return (await blocked).structured_content["result"], other.structured_content["result"]


async def test_two_workers_serve_and_a_cursor_continues_on_the_other(
    workers: ServerProcess,
) -> None:
    first, second = await pid_while_other_blocked(workers)
    assert first != second, "both calls were served by one process"
    assert workers.process.pid not in (first, second)  # the parent only supervises

    # Page one on some worker; hold that worker, so the next page must go to the other.
    sql = "SELECT x FROM t ORDER BY x"
    for _ in range(10):
        blocker = asyncio.ensure_future(call(workers, "worker_pid", {"block_s": 1.5}))
        await asyncio.sleep(0.5)
        page = (await call(workers, "query", {"sql": sql, "max_rows": 10})).structured_content
        held = (await blocker).structured_content["result"]
        # `page` came from the worker that was not held; hold that one for the next page.
        blocker = asyncio.ensure_future(call(workers, "worker_pid", {"block_s": 1.5}))
        await asyncio.sleep(0.5)
        following = await call(workers, "query", {"cursor": page["next_cursor"], "max_rows": 10})
        if (await blocker).structured_content["result"] != held:
            break  # the second page was served by `held`, the first page's other worker
    else:
        pytest.fail("could not steer the two pages to different workers")
    assert following.structured_content["offset"] == 10
    assert following.structured_content["rows"][0] == [11]


async def test_sigterm_drains_both_workers(workers: ServerProcess) -> None:
    in_flight = [
        asyncio.ensure_future(raw_call(workers, "worker_pid", {"block_s": 2.0})),
    ]
    await asyncio.sleep(0.5)
    in_flight.append(asyncio.ensure_future(raw_call(workers, "worker_pid", {"block_s": 2.0})))
    await asyncio.sleep(0.5)
    workers.terminate()
    results = await asyncio.gather(*in_flight)
    assert not any(result["isError"] for result in results)
    pids = {result["structuredContent"]["result"] for result in results}
    assert len(pids) == 2, "the two in-flight calls were not on two workers"
    started = time.monotonic()
    assert workers.process.wait(timeout=30) == 0
    assert time.monotonic() - started < 30
    text = workers.log_text()
    assert text.count("draining: no new connections") == 2
    assert "all workers stopped" in text
