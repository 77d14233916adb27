"""export_query: whole results as files, read back through resources/read and signed URLs.

Logic runs against an in-memory `fastmcp.Client` on the generated demo DuckDB file and a
SQLite copy; ownership and download links over real HTTP (a `wellhead serve` subprocess,
two static tokens); PostgreSQL against the real server .ci/run starts.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import yaml
from fastmcp import Client

from tests.helpers import error_of, service_env
from tests.server_process import ServerProcess
from wellhead.app import build_runtime, build_server
from wellhead.config import parse_settings

pytestmark = pytest.mark.anyio
SECRET = "test-secret-test-secret-0123456789"
NULLS_APART = pa_csv.ConvertOptions(strings_can_be_null=True, quoted_strings_can_be_null=False)
"""An unquoted empty field is NULL, a quoted one ("") the empty string."""
ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef-x"


def _settings(sources: dict[str, Any], tmp_path: Path, **exports: Any) -> Any:
    return parse_settings(
        {
            "sources": sources,
            "cursor": {"secret": SECRET},
            "exports": {"directory": str(tmp_path / "exports"), **exports},
        }
    )


def _duckdb(demo_db: Path) -> dict[str, Any]:
    return {"demo": {"kind": "duckdb", "path": str(demo_db)}}


async def _read_all(client: Client, uri: str) -> bytes:
    """Every part of an export through resources/read, joined."""
    data = b""
    part = 0
    while True:
        contents = await client.read_resource(f"{uri}?part={part}" if part else uri)
        data += base64.b64decode(contents[0].blob)
        meta = contents[0].meta or {}
        if "next_uri" not in meta:
            assert meta["parts"] == part + 1
            return data
        part += 1


def _files(tmp_path: Path) -> list[str]:
    directory = tmp_path / "exports"
    return sorted(os.listdir(directory)) if directory.exists() else []


async def test_parquet_export_holds_exactly_the_rows_and_reads_back_in_chunks(
    demo_db: Path, engine: Any, tmp_path: Path
) -> None:
    sql = "SELECT * FROM orders WHERE customer_id < :c ORDER BY order_id"
    settings = _settings(_duckdb(demo_db), tmp_path, chunk_bytes=64 * 1024)
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("export_query", {"sql": sql, "params": {"c": 300}})
        info = result.structured_content
        expected = engine.execute(sql.replace(":c", "300")).fetchall()
        assert info["row_count"] == len(expected) > 5_000
        assert info["mime_type"] == "application/vnd.apache.parquet"
        assert info["parts"] > 1  # small chunks: several resources/read calls
        assert info["download_url"] is None  # no HTTP request in memory: no URL to give
        link = result.content[1]
        assert link.type == "resource_link" and str(link.uri) == info["uri"]
        assert link.size == info["size_bytes"] and link.mime_type == info["mime_type"]
        data = await _read_all(client, info["uri"])
    assert len(data) == info["size_bytes"]
    table = pq.read_table(io.BytesIO(data))
    assert table.column_names == [c for c, _ in info["columns"]]
    assert [tuple(r.values()) for r in table.to_pylist()] == expected


async def test_csv_and_jsonl_exports(demo_db: Path, engine: Any, tmp_path: Path) -> None:
    sql = "SELECT order_id, status, total, ordered_at FROM orders ORDER BY order_id LIMIT 5000"
    expected = engine.execute(sql).fetchall()
    async with Client(build_server(_settings(_duckdb(demo_db), tmp_path))) as client:
        csv = await client.call_tool("export_query", {"sql": sql, "format": "csv"})
        assert csv.structured_content["mime_type"] == "text/csv"
        table = pa_csv.read_csv(io.BytesIO(await _read_all(client, csv.structured_content["uri"])))
        assert table.num_rows == 5000
        assert table.column("order_id").to_pylist() == [r[0] for r in expected]
        assert table.column("status").to_pylist() == [r[1] for r in expected]
        jsonl = await client.call_tool("export_query", {"sql": sql, "format": "jsonl"})
        lines = (await _read_all(client, jsonl.structured_content["uri"])).decode().splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 5000
    assert rows[0] == {
        "order_id": expected[0][0],
        "status": expected[0][1],
        "total": float(expected[0][2]),
        "ordered_at": expected[0][3].isoformat(),
    }


async def test_unsafe_sql_is_refused_and_leaves_no_file(demo_db: Path, tmp_path: Path) -> None:
    async with Client(build_server(_settings(_duckdb(demo_db), tmp_path))) as client:
        for sql in (
            f"COPY orders TO '{tmp_path}/stolen.csv'",
            "SELECT * FROM read_csv('/etc/passwd')",
            "DELETE FROM orders",
            "SELECT 1; SELECT 2",
        ):
            result = await client.call_tool("export_query", {"sql": sql}, raise_on_error=False)
            assert error_of(result)["error"] == "unsafe_sql", sql
        bad = await client.call_tool(
            "export_query", {"sql": "SELECT 1", "format": "xlsx"}, raise_on_error=False
        )
        assert error_of(bad)["error"] == "invalid_arguments"
    assert _files(tmp_path) == []
    assert not (tmp_path / "stolen.csv").exists()


async def test_size_cap_stops_the_export_and_discards_the_file(
    demo_db: Path, tmp_path: Path
) -> None:
    settings = _settings(_duckdb(demo_db), tmp_path, max_export_bytes=100_000)
    async with Client(build_server(settings)) as client:
        result = await client.call_tool(
            "export_query", {"sql": "SELECT * FROM orders", "format": "csv"}, raise_on_error=False
        )
        error = error_of(result)
    assert error["error"] == "budget_exceeded"
    assert "exports.max_export_bytes" in error["message"]
    assert _files(tmp_path) == []


async def test_deadline_interrupts_the_engine(demo_db: Path, tmp_path: Path) -> None:
    settings = _settings(_duckdb(demo_db), tmp_path, timeout_s=0.5)
    runtime = build_runtime(settings)
    slow = (
        "SELECT count(*) FROM orders a, orders b "
        "WHERE a.order_id % 1000 = b.order_id % 1000 AND a.total > b.total"
    )
    async with Client(build_server(settings, runtime)) as client:
        started = time.monotonic()
        result = await client.call_tool("export_query", {"sql": slow}, raise_on_error=False)
        assert error_of(result)["error"] == "timeout"
        assert time.monotonic() - started < 5
        assert runtime.sources["demo"].pool_stats()[1] == 0  # nothing runs in DuckDB any more
    assert _files(tmp_path) == []


async def test_store_bounds_evict_oldest_and_expire(demo_db: Path, tmp_path: Path) -> None:
    sql = "SELECT * FROM orders ORDER BY order_id LIMIT 20000"
    settings = _settings(_duckdb(demo_db), tmp_path, max_owner_bytes=500_000, ttl_s=2)
    async with Client(build_server(settings)) as client:
        first = (await client.call_tool("export_query", {"sql": sql})).structured_content
        assert 250_000 < first["size_bytes"] < 500_000
        second = (await client.call_tool("export_query", {"sql": sql})).structured_content
        with pytest.raises(Exception, match="export not found"):
            await client.read_resource(first["uri"])  # evicted: two do not fit the owner's bound
        assert len(await _read_all(client, second["uri"])) == second["size_bytes"]
        await anyio.sleep(2.2)
        with pytest.raises(Exception, match="export not found"):
            await client.read_resource(second["uri"])  # expired


async def test_sqlite_export(demo_sqlite: Path, tmp_path: Path) -> None:
    import sqlite3

    sql = "SELECT order_id, customer_id, status, total FROM orders ORDER BY order_id"
    sources = {"lite": {"kind": "sqlite", "path": str(demo_sqlite)}}
    async with Client(build_server(_settings(sources, tmp_path))) as client:
        result = await client.call_tool("export_query", {"sql": sql})
        data = await _read_all(client, result.structured_content["uri"])
    with sqlite3.connect(demo_sqlite) as conn:
        expected = conn.execute(sql).fetchall()
    table = pq.read_table(io.BytesIO(data))
    assert result.structured_content["row_count"] == len(expected) == table.num_rows
    assert [tuple(r.values()) for r in table.to_pylist()] == expected


@pytest.mark.postgres
async def test_postgres_export_types_and_rows(tmp_path: Path) -> None:
    import asyncpg

    dsn = service_env("WELLHEAD_TEST_PG_DSN", "PostgreSQL", ".ci/postgres.sh")
    sources = {"pg": {"kind": "postgres", "dsn": dsn}}
    async with Client(build_server(_settings(sources, tmp_path))) as client:
        zoo = await client.call_tool(
            "export_query", {"sql": "SELECT id, uid, price, at, span, doc, blob FROM type_zoo"}
        )
        zoo_bytes = await _read_all(client, zoo.structured_content["uri"])
        orders = await client.call_tool(
            "export_query",
            {"sql": "SELECT * FROM orders WHERE id <= :n ORDER BY id", "params": {"n": 70_000}},
        )
        data = await _read_all(client, orders.structured_content["uri"])
        inline = await client.call_tool(  # no parameters: COPY's CSV, converted by Arrow
            "export_query", {"sql": "SELECT * FROM orders WHERE id <= 70000 ORDER BY id"}
        )
        inline_data = await _read_all(client, inline.structured_content["uri"])
        # CSV: PostgreSQL's own COPY output without parameters, the row path with them.
        csv_sql = "SELECT id, status, amount, note FROM orders WHERE id <= {} ORDER BY id"
        copied = await client.call_tool(
            "export_query", {"sql": csv_sql.format(100_000), "format": "csv"}
        )
        streamed = await client.call_tool(
            "export_query",
            {"sql": csv_sql.format(":n"), "params": {"n": 100_000}, "format": "csv"},
        )
        csv_tables = [
            pa_csv.read_csv(
                io.BytesIO(await _read_all(client, r.structured_content["uri"])),
                convert_options=NULLS_APART,
            )
            for r in (copied, streamed)
        ]
    for result, csv_table in zip((copied, streamed), csv_tables, strict=True):
        assert result.structured_content["row_count"] == csv_table.num_rows == 100_000
        assert csv_table.column("id").to_pylist() == list(range(1, 100_001))
        assert csv_table.column("note").null_count == 90_000  # NULL stays NULL, not ''
    assert csv_tables[0].column("amount").to_pylist() == csv_tables[1].column("amount").to_pylist()
    first = pq.read_table(io.BytesIO(zoo_bytes)).to_pylist()[0]
    assert first["id"] == 1 and first["uid"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert first["price"] == "12.50"  # numeric keeps its digits, as text
    assert first["at"].isoformat() == "2024-05-01T12:00:00+00:00"
    assert first["span"] == "P1DT2H"  # months, days and time kept apart (ISO 8601)
    assert json.loads(first["doc"]) == {"a": [1, 2], "b": {"c": True}}
    assert first["blob"] == bytes.fromhex("deadbeef")
    table = pq.read_table(io.BytesIO(data))
    conn = await asyncpg.connect(dsn)
    try:
        expected = await conn.fetch("SELECT * FROM orders WHERE id <= 70000 ORDER BY id")
    finally:
        await conn.close()
    assert table.num_rows == len(expected) == 70_000  # more than one 65,536-row batch
    assert table.column(0).to_pylist() == [r[0] for r in expected]
    assert pq.read_table(io.BytesIO(inline_data)).equals(table)  # both paths: the same file


# --------------------------------------------------------------------------- over HTTP


def _http_config(tmp_path: Path, demo_db: Path) -> Path:
    config = tmp_path / "wellhead.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "sources": _duckdb(demo_db),
                "cursor": {"secret": SECRET},
                "exports": {"directory": str(tmp_path / "exports"), "chunk_bytes": 32768},
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


async def test_exports_belong_to_their_caller_over_http(tmp_path: Path, demo_db: Path) -> None:
    server = ServerProcess(_http_config(tmp_path, demo_db))
    sql = "SELECT * FROM orders ORDER BY order_id LIMIT 3000"
    try:
        async with Client(server.mcp_url, auth=ALICE) as alice:
            made = await alice.call_tool("export_query", {"sql": sql, "format": "csv"})
            info = made.structured_content
            mine = await _read_all(alice, info["uri"])
        async with Client(server.mcp_url, auth=BOB) as bob:
            with pytest.raises(Exception, match="export not found"):
                await bob.read_resource(info["uri"])
            theirs = await bob.call_tool("export_query", {"sql": "SELECT 1 AS one"})
        async with Client(server.mcp_url, auth=ALICE) as alice:
            with pytest.raises(Exception, match="export not found"):
                await alice.read_resource(theirs.structured_content["uri"])

        url = info["download_url"]
        assert url.startswith(f"{server.url}/exports/")
        async with httpx.AsyncClient() as http:
            got = await http.get(url)  # a capability: no token needed, only the signature
            assert got.status_code == 200, got.text
            assert got.headers["content-type"].startswith("text/csv")
            assert got.content == mine and len(mine) == info["size_bytes"]
            tampered = url.replace("expires=", "expires=9")
            assert (await http.get(tampered)).status_code == 404
            forged = url[:-4] + ("0000" if not url.endswith("0000") else "1111")
            assert (await http.get(forged)).status_code == 404
            their_id = theirs.structured_content["uri"].rsplit("/", 1)[1]
            other = url.replace(info["uri"].rsplit("/", 1)[1], their_id)
            assert (await http.get(other)).status_code == 404  # a valid sig names one export
        line = server.wait_for_log(
            lambda e: e.get("event") == "tool_call" and e.get("tool_name") == "export_query"
        )
        assert line["outcome"] == "ok" and line["client_id"] == "alice"
        calls = server.metric("wellhead_tool_calls_total", tool="export_query", outcome="ok")
        assert calls == 2
    finally:
        server.stop()


async def test_workers_share_one_export_store(tmp_path: Path, demo_db: Path) -> None:
    """`--workers 2`: an export made by one worker is served by every one of them."""
    redis_url = service_env("WELLHEAD_TEST_REDIS_URL", "Redis", ".ci/redis.sh")
    config = tmp_path / "wellhead.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "sources": _duckdb(demo_db),
                "cursor": {"secret": SECRET},
                "state": {"backend": "redis", "redis_url": redis_url},
                "plugins": ["tests.plugins.worker_pid"],
            }
        )
    )
    server = ServerProcess(config, "--workers", "2", "--stateless")
    try:
        server.wait_for_log(
            lambda _: server.log_text().count("Application startup complete") >= 2, timeout=60
        )
        async with Client(server.mcp_url) as client:
            made = await client.call_tool("export_query", {"sql": "SELECT * FROM customers"})
        info = made.structured_content
        pids = set()
        async with httpx.AsyncClient() as http:
            for _ in range(16):  # fresh connections: the workers take turns accepting them
                async with Client(server.mcp_url) as client:
                    served = await client.call_tool("worker_pid", {})
                    pids.add(served.structured_content["result"])
                    assert len(await _read_all(client, info["uri"])) == info["size_bytes"]
                got = await http.get(info["download_url"], headers={"Connection": "close"})
                assert got.status_code == 200 and len(got.content) == info["size_bytes"]
                if len(pids) == 2:
                    break
        assert len(pids) == 2, "every call landed on one worker; the test proved nothing"
    finally:
        server.stop()
