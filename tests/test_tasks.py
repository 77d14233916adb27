"""`query` and `export_query` as MCP tasks: task id at once, status with progress, cancel
(the engine stops), result, and across replicas through a real Redis.

In memory with Docket's memory backend for the logic; PostgreSQL's own pg_stat_activity
for "nothing left running"; two `wellhead serve` processes sharing a real Redis and an
export directory for the cross-replica claims (task made on one, polled on the other).
"""

from __future__ import annotations

import base64
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from fastmcp import Client
from fastmcp_tasks import ToolTask, call_tool_task

from tests.helpers import service_env
from tests.server_process import ServerProcess
from wellhead.app import build_runtime, build_server
from wellhead.config import parse_settings

pytestmark = pytest.mark.anyio
SECRET = "test-secret-test-secret-0123456789"
ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef-x"
SLOW = (
    "SELECT count(*) FROM orders a, orders b "
    "WHERE a.order_id % 500 = b.order_id % 500 AND a.total > b.total"
)
"""Seconds of DuckDB work on the demo data (a big self-join), one row of result."""


def _settings(sources: dict[str, Any], tmp_path: Path) -> Any:
    return parse_settings(
        {
            "sources": sources,
            "cursor": {"secret": SECRET},
            "exports": {"directory": str(tmp_path / "exports")},
            "tasks": {"enabled": True, "backend": "memory"},
        }
    )


async def _status_until(task: ToolTask, predicate: Any, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        status = await task.status()
        if predicate(status):
            return status
        assert time.monotonic() < deadline, f"task stuck at {status.status}"
        await anyio.sleep(0.1)


async def test_task_result_is_the_direct_result_and_plain_calls_still_work(
    demo_db: Path, tmp_path: Path
) -> None:
    settings = _settings({"demo": {"kind": "duckdb", "path": str(demo_db)}}, tmp_path)
    sql = "SELECT order_id, status FROM orders ORDER BY order_id"
    async with Client(build_server(settings)) as client:
        direct = await client.call_tool("query", {"sql": sql, "max_rows": 50})
        task = await call_tool_task(client, "query", {"sql": sql, "max_rows": 50})
        assert len(task.task_id) > 20
        tasked = await task.result()
        assert tasked.structured_content["rows"] == direct.structured_content["rows"]
        assert tasked.structured_content["total_rows"] == 1_000_000
        # The task's cursor continues like any other (same owner: the same caller).
        more = await client.call_tool("query", {"cursor": tasked.structured_content["next_cursor"]})
        assert more.structured_content["offset"] == 50
        # A client that just calls the tool gets the result, tasked or not, unchanged.
        plain = await client.call_tool("query", {"sql": "SELECT 42 AS answer"})
        assert plain.structured_content["rows"] == [[42]]


async def test_progress_and_cancel_stop_duckdb(demo_db: Path, tmp_path: Path) -> None:
    settings = _settings({"demo": {"kind": "duckdb", "path": str(demo_db)}}, tmp_path)
    runtime = build_runtime(settings)
    async with Client(build_server(settings, runtime)) as client:
        task = await call_tool_task(client, "query", {"sql": SLOW})
        status = await _status_until(task, lambda s: s.status_message)
        assert status.status == "working"
        assert "query running for" in status.status_message
        assert runtime.sources["demo"].pool_stats()[1] == 1  # the statement runs in DuckDB
        started = time.monotonic()
        await task.cancel()
        final = await task.wait(timeout=10)
        assert final.status == "cancelled"
        for _ in range(50):  # the engine was interrupted, not left running
            if runtime.sources["demo"].pool_stats()[1] == 0:
                break
            await anyio.sleep(0.1)
        assert runtime.sources["demo"].pool_stats()[1] == 0
        assert time.monotonic() - started < 5


async def test_export_as_a_task_returns_the_resource_link(demo_db: Path, tmp_path: Path) -> None:
    settings = _settings({"demo": {"kind": "duckdb", "path": str(demo_db)}}, tmp_path)
    async with Client(build_server(settings)) as client:
        task = await call_tool_task(
            client,
            "export_query",
            {"sql": "SELECT * FROM orders WHERE order_id <= 100000", "format": "csv"},
        )
        result = await task.result()
        info = result.structured_content
        assert info["row_count"] == 100_000
        link = result.content[1]
        assert link.type == "resource_link" and str(link.uri) == info["uri"]
        contents = await client.read_resource(info["uri"])
        head = base64.b64decode(contents[0].blob)
        assert head.startswith(b'"order_id","customer_id"')


@pytest.mark.postgres
async def test_cancel_leaves_nothing_in_pg_stat_activity(tmp_path: Path) -> None:
    import asyncpg

    dsn = service_env("WELLHEAD_TEST_PG_DSN", "PostgreSQL", ".ci/postgres.sh")
    admin_dsn = service_env("WELLHEAD_TEST_PG_ADMIN_DSN", "PostgreSQL", ".ci/postgres.sh")
    marker = f"wh_task_{uuid.uuid4().hex[:12]}"
    sql = f"SELECT pg_sleep(30), '{marker}' AS marker"
    settings = _settings({"pg": {"kind": "postgres", "dsn": dsn}}, tmp_path)
    admin = await asyncpg.connect(admin_dsn)

    async def running() -> int:
        return int(
            await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                "AND query LIKE $1 AND pid <> pg_backend_pid()",
                f"%{marker}%",
            )
        )

    try:
        async with Client(build_server(settings)) as client:
            for tool, arguments in (("query", {"sql": sql}), ("export_query", {"sql": sql})):
                task = await call_tool_task(client, tool, arguments)
                for _ in range(100):
                    if await running():
                        break
                    await anyio.sleep(0.05)
                assert await running() == 1, f"{tool}: the statement never started"
                await task.cancel()
                assert (await task.wait(timeout=10)).status == "cancelled"
                for _ in range(100):
                    if not await running():
                        break
                    await anyio.sleep(0.05)
                assert await running() == 0, f"{tool}: the statement survived the cancel"
    finally:
        await admin.close()


# --------------------------------------------------------------------------- replicas


def _replica_config(tmp_path: Path, demo_db: Path, redis_url: str) -> Path:
    config = tmp_path / "wellhead.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "sources": {"demo": {"kind": "duckdb", "path": str(demo_db)}},
                "cursor": {"secret": SECRET},
                "state": {"backend": "redis", "redis_url": redis_url},
                "exports": {"directory": str(tmp_path / "shared-exports")},
                "tasks": {
                    "enabled": True,
                    "backend": "redis",
                    "redis_url": redis_url,
                    "queue": f"wellhead-test-{uuid.uuid4().hex[:8]}",
                },
                "auth": {
                    "kind": "static",
                    "tokens": {
                        ALICE: {"client_id": "alice", "scopes": []},
                        BOB: {"client_id": "bob", "scopes": []},
                    },
                },
            }
        )
    )
    return config


async def test_tasks_across_two_replicas_through_redis(tmp_path: Path, demo_db: Path) -> None:
    redis_url = service_env("WELLHEAD_TEST_REDIS_URL", "Redis", ".ci/redis.sh")
    config = _replica_config(tmp_path, demo_db, redis_url)
    one = ServerProcess(config)
    two = ServerProcess(config)
    try:
        async with (
            Client(one.mcp_url, auth=ALICE) as on_one,
            Client(two.mcp_url, auth=ALICE) as on_two,
        ):
            # Made on one, polled and fetched on the other.
            made = await call_tool_task(on_one, "query", {"sql": "SELECT 6 * 7 AS answer"})
            there = ToolTask(on_two, "query", made.create_result)
            result = await there.result()
            assert result.structured_content["rows"] == [[42]]

            # A long one: progress seen from the other replica, cancelled from it too.
            slow = await call_tool_task(on_one, "query", {"sql": SLOW})
            remote = ToolTask(on_two, "query", slow.create_result)
            status = await _status_until(remote, lambda s: s.status_message)
            assert "query running for" in status.status_message
            await remote.cancel()
            assert (await slow.wait(timeout=10)).status == "cancelled"
            for _ in range(50):  # neither replica's DuckDB still runs it
                busy = [s.metric("wellhead_source_pool_in_use", source="demo") for s in (one, two)]
                if busy == [0, 0]:
                    break
                await anyio.sleep(0.1)
            assert busy == [0, 0]

            # An export made by a task on one is readable on the other (shared volume).
            export = await call_tool_task(
                on_one, "export_query", {"sql": "SELECT * FROM customers", "format": "csv"}
            )
            info = await ToolTask(on_two, "export_query", export.create_result).result()
            uri = info.structured_content["uri"]
            contents = await on_two.read_resource(uri)
            assert base64.b64decode(contents[0].blob).startswith(b'"customer_id"')

        # Tasks and exports belong to their caller, on every replica.
        async with Client(two.mcp_url, auth=BOB) as bob:
            with pytest.raises(Exception):  # noqa: B017 - FastMCP's not-found for another scope
                await ToolTask(bob, "query", made.create_result).status()
            with pytest.raises(Exception, match="export not found"):
                await bob.read_resource(uri)

        # The task runs were logged as calls where a worker ran them.
        logs = one.log_lines() + two.log_lines()
        runs = [e for e in logs if e.get("event") == "tool_call" and e.get("task") == "run"]
        assert {e["outcome"] for e in runs} >= {"ok", "cancelled"}
        created = [e for e in logs if e.get("task") == "created"]
        assert len(created) == 3 and all(e["client_id"] == "alice" for e in created)
    finally:
        one.stop()
        two.stop()


def test_workers_need_redis_for_tasks() -> None:
    from wellhead.errors import ConfigError
    from wellhead.serve import check_workers

    raw = {
        "sources": {"t": {"kind": "sqlite", "path": "x.sqlite"}},
        "server": {"workers": 2, "transport": "http", "stateless": True},
        "state": {"backend": "redis", "redis_url": "redis://127.0.0.1:6379/0"},
        "cursor": {"secret": SECRET},
        "tasks": {"enabled": True},
    }
    with pytest.raises(ConfigError, match="tasks.backend is 'memory'"):
        check_workers(parse_settings(raw))
    raw["tasks"] = {"enabled": True, "backend": "redis", "redis_url": "redis://127.0.0.1:6379/0"}
    check_workers(parse_settings(raw))
