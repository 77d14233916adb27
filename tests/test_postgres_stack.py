"""PostgreSQL through the whole stack: the `query` tool over a real MCP client, a real server.

The demo schema (a slice of the DuckDB demo data) is loaded into schema `demo` by the admin
role; wellhead connects as the least-privilege reader with `search_path=demo`. Missing DSNs
skip locally and fail under CI=true.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
import yaml

from tests.helpers import client_for, error_of, service_env, walk
from wellhead.config import parse_settings
from wellhead.sql.encoding import to_json_value

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]
CORPUS = yaml.safe_load((Path(__file__).parent / "corpora" / "postgres.yaml").read_text())
SLICES = {
    "customers": "SELECT * FROM customers ORDER BY customer_id LIMIT 2000",
    "products": "SELECT * FROM products ORDER BY product_id",
    "orders": "SELECT * FROM orders ORDER BY order_id LIMIT 5000",
    "order_items": "SELECT * FROM order_items WHERE order_id <= 5000",
}
PG_TYPES = {"VARCHAR": "text", "DOUBLE": "double precision", "TIMESTAMP": "timestamp"}


def dsn(variable: str) -> str:
    return service_env(variable, "PostgreSQL", ".ci/postgres.sh")


def pg_settings(search_path: str, **limits: Any):  # type: ignore[no-untyped-def]
    reader = dsn("WELLHEAD_TEST_PG_DSN")
    separator = "&" if "?" in reader else "?"
    return parse_settings(
        {
            "sources": {
                "pg": {
                    "kind": "postgres",
                    "dsn": f"{reader}{separator}search_path={search_path}",
                    "schemas": [search_path],
                }
            },
            "limits": limits,
            "cursor": {"secret": "pg-stack-secret-0123456789abcdef"},
        }
    )


@pytest.fixture(scope="module")
def pg_demo(engine):  # type: ignore[no-untyped-def]
    """Load the demo slice into schema `demo` (once per module), grant the reader, drop after.

    Dropped afterwards so the source tests, which list the fixture schemas, see none of it.
    """
    admin = dsn("WELLHEAD_TEST_PG_ADMIN_DSN")

    async def load() -> None:
        con = await asyncpg.connect(admin)
        try:
            async with con.transaction():
                await con.execute("DROP SCHEMA IF EXISTS demo CASCADE; CREATE SCHEMA demo")
                for table, sql in SLICES.items():
                    cursor = engine.execute(sql)
                    names = [d[0] for d in cursor.description]
                    types = [_pg_type(str(d[1])) for d in cursor.description]
                    columns = ", ".join(f'"{n}" {t}' for n, t in zip(names, types, strict=True))
                    await con.execute(f"CREATE TABLE demo.{table} ({columns})")
                    rows = [tuple(_pg_value(v) for v in row) for row in cursor.fetchall()]
                    await con.copy_records_to_table(table, records=rows, schema_name="demo")
                await con.execute(
                    "GRANT USAGE ON SCHEMA demo TO wellhead_ro; "
                    "GRANT SELECT ON ALL TABLES IN SCHEMA demo TO wellhead_ro; ANALYZE"
                )
        finally:
            await con.close()

    async def drop() -> None:
        con = await asyncpg.connect(admin)
        try:
            await con.execute("DROP SCHEMA IF EXISTS demo CASCADE")
        finally:
            await con.close()

    anyio.run(load)
    yield "demo"
    anyio.run(drop)


def _pg_type(duckdb_type: str) -> str:
    upper = duckdb_type.upper()
    if upper.startswith("DECIMAL"):
        return upper.replace("DECIMAL", "numeric")
    for name, pg in PG_TYPES.items():
        if upper.startswith(name):
            return pg
    return upper.lower()


def _pg_value(value: Any) -> Any:
    return value


async def test_every_attack_is_refused_through_the_tool(pg_demo):
    assert len(CORPUS["attacks"]) >= 60
    failures = []
    async with client_for(pg_settings(pg_demo)) as client:
        for case in CORPUS["attacks"]:
            result = await client.call_tool("query", {"sql": case["sql"]}, raise_on_error=False)
            if not result.is_error:
                failures.append(f"ANSWERED: {case['sql']!r}")
                continue
            payload = error_of(result)
            if case["reason"].lower() not in payload["message"].lower():
                failures.append(f"{case['sql']!r}: {payload['message']!r}")
    assert not failures, "\n".join(failures)


async def test_every_legitimate_query_is_answered_through_the_tool(pg_demo):
    legit = [c if isinstance(c, dict) else {"sql": c} for c in CORPUS["legit"]]
    assert len(legit) >= 30
    failures = []
    async with client_for(pg_settings(pg_demo)) as client:
        for case in legit:
            arguments: dict[str, Any] = {"sql": case["sql"], "max_rows": 50}
            if case.get("params"):
                arguments["params"] = case["params"]
            result = await client.call_tool("query", arguments, raise_on_error=False)
            if result.is_error:
                failures.append(f"{case['sql']!r}: {result.content[0].text}")
    assert not failures, "\n".join(failures)


async def test_walking_a_million_rows_is_exact(pg_demo):
    admin = await asyncpg.connect(dsn("WELLHEAD_TEST_PG_ADMIN_DSN"))
    try:
        expected = await admin.fetchrow("SELECT count(*) AS n, sum(id) AS s FROM public.orders")
    finally:
        await admin.close()
    assert expected["n"] >= 1_000_000
    settings = pg_settings("public", max_rows_per_page=100_000, max_result_budget_bytes=2_097_152)
    async with client_for(settings) as client:
        rows, pages = await walk(
            client, "SELECT id FROM orders", max_rows=100_000, budget_bytes=2_097_152
        )
    ids = [r[0] for r in rows]
    assert len(ids) == expected["n"]
    assert len(set(ids)) == len(ids)  # none repeated
    assert sum(ids) == expected["s"]  # none lost
    assert pages >= 10


async def test_timeout_cancels_the_backend(pg_demo):
    marker = f"wh_{uuid.uuid4().hex[:8]}"
    async with client_for(pg_settings(pg_demo, query_timeout_s=1.0)) as client:
        result = await client.call_tool(
            "query", {"sql": f"SELECT pg_sleep(30), '{marker}' AS marker"}, raise_on_error=False
        )
        assert error_of(result)["error"] == "timeout"
        again = await client.call_tool("query", {"sql": "SELECT count(*) FROM customers"})
    assert again.structured_content["rows"] == [[2000]]
    admin = await asyncpg.connect(dsn("WELLHEAD_TEST_PG_ADMIN_DSN"))
    try:
        lingering = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 "
            "AND pid <> pg_backend_pid()",
            f"%{marker}%",
        )
    finally:
        await admin.close()
    assert lingering == 0


async def test_describe_and_list_through_the_tool(pg_demo):
    async with client_for(pg_settings(pg_demo)) as client:
        listed = (await client.call_tool("list_tables", {})).structured_content
        described = (
            await client.call_tool("describe_table", {"table": "demo.orders"})
        ).structured_content
    assert {"demo.customers", "demo.orders"} <= {row[0] for row in listed["tables"]}
    assert [c[0] for c in described["columns"]][:2] == ["order_id", "customer_id"]
    assert described["sample_rows"]
    assert to_json_value(described["sample_rows"][0][0]) is not None
