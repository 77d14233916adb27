"""Cost guard: a statement the engine plans as hopeless is refused before it runs.

Real engines: PostgreSQL (`EXPLAIN (FORMAT JSON)` over the fixtures' 1,000,000-row
`public.orders`), DuckDB (the demo's 1,000,000 orders) and a SQLite file with 1,000,000 rows.
Each gets a cartesian join that is refused with its estimate and a hint, and a legitimate
aggregate over the whole big table that is answered.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client

from tests.helpers import service_env
from wellhead.app import build_runtime, build_server
from wellhead.config import Settings

pytestmark = pytest.mark.anyio

HINT = "join on keys (JOIN ... ON a.id = b.a_id)"


def refusal(result: Any) -> str:
    assert result.is_error, result.structured_content
    payload = json.loads(result.content[0].text)
    assert payload["error"] == "cost_exceeded", payload
    assert HINT in payload["message"]
    return str(payload["message"])


def served(settings: dict[str, Any]) -> tuple[Client, Any]:
    config = Settings.model_validate(settings)
    runtime = build_runtime(config)
    return Client(build_server(config, runtime)), runtime.executor.cost_guard


def pg_settings(**extra: Any) -> dict[str, Any]:
    dsn = service_env("WELLHEAD_TEST_PG_DSN", "PostgreSQL", ".ci/postgres.sh")
    source = {"kind": "postgres", "dsn": dsn, "temp_file_limit": None}
    return {"sources": {"pg": source}, **extra}


async def test_postgres_refuses_a_cartesian_join_and_answers_a_big_aggregate():
    client, guard = served(pg_settings())
    async with client:
        cartesian = await client.call_tool(
            "query",
            {"sql": "SELECT count(*) FROM orders a CROSS JOIN orders b"},
            raise_on_error=False,
        )
        started = time.monotonic()
        with_param = await client.call_tool(
            "query",
            {
                "sql": "SELECT count(*) FROM orders a, orders b WHERE a.status = :s",
                "params": {"s": "paid"},
            },
            raise_on_error=False,
        )
        refused_in = time.monotonic() - started
        aggregate = "SELECT status, count(*) AS n, sum(amount) AS total FROM orders GROUP BY 1"
        big = await client.call_tool("query", {"sql": aggregate})
        filtered = await client.call_tool(
            "query",
            {"sql": "SELECT count(*) FROM orders WHERE status = :s", "params": {"s": "paid"}},
        )
        # LIMIT stops a streamed cross join early: PostgreSQL's cost says so, it is allowed.
        limited = await client.call_tool(
            "query", {"sql": "SELECT a.id, b.id FROM orders a, orders b LIMIT 5"}
        )
        # EXPLAIN ANALYZE runs its statement: the statement is estimated; EXPLAIN runs nothing.
        analyzed = await client.call_tool(
            "query",
            {"sql": "EXPLAIN (ANALYZE, COSTS) SELECT count(*) FROM orders a CROSS JOIN orders b"},
            raise_on_error=False,
        )
        explained = await client.call_tool(
            "query", {"sql": "EXPLAIN SELECT count(*) FROM orders a CROSS JOIN orders b"}
        )
    message = refusal(cartesian)
    assert "PostgreSQL estimates a total cost of" in message
    assert "cost_guard.max_postgres_cost" in message and "Nested Loop" in message
    refusal(with_param)  # parameters reach the EXPLAIN as bound values
    assert refused_in < 2.0  # refused from the plan, not after running
    assert sum(row[1] for row in big.structured_content["rows"]) == 1_000_000
    assert filtered.structured_content["rows"] == [[250_000]]
    assert limited.structured_content["row_count"] == 5
    assert "Nested Loop" in refusal(analyzed)
    assert "Nested Loop" in json.dumps(explained.structured_content["rows"])
    assert guard.estimates == 5  # the EXPLAIN ANALYZE target was the first statement: cached


async def test_the_estimate_is_cached_per_statement_and_pages_do_not_ask_again():
    client, guard = served(pg_settings())
    sql = "SELECT id, status FROM orders WHERE customer_id = :c ORDER BY id"
    async with client:
        first = await client.call_tool("query", {"sql": sql, "params": {"c": 3}, "max_rows": 50})
        assert guard.estimates == 1
        cursor = first.structured_content["next_cursor"]
        await client.call_tool("query", {"cursor": cursor})
        assert guard.estimates == 1  # a later page was allowed with the first
        await client.call_tool("query", {"sql": sql, "params": {"c": 3}, "max_rows": 50})
        assert guard.estimates == 1  # same statement, same values: the cached estimate
        await client.call_tool("query", {"sql": sql, "params": {"c": 4}, "max_rows": 50})
        assert guard.estimates == 2  # other values may plan differently: asked again


async def test_the_ceiling_is_configurable_and_sql_tools_are_unguarded_by_default():
    tools = {
        "pairs": {
            "description": "Pairs of orders (a cartesian product; only the first page is cheap).",
            "sql": "SELECT a.id AS a, b.id AS b FROM orders a, orders b",
            "max_rows": 3,
        },
        "guarded_pairs": {
            "description": "The same, with the guard switched on for this tool.",
            "sql": "SELECT a.id AS a, b.id AS b FROM orders a, orders b",
            "cost_guard": True,
        },
    }
    limits = {"count_timeout_s": 0}
    client, _ = served(pg_settings(tools=tools, limits=limits))
    async with client:
        unguarded = await client.call_tool("pairs", {})
        guarded = await client.call_tool("guarded_pairs", {}, raise_on_error=False)
        free = await client.call_tool(
            "query", {"sql": tools["pairs"]["sql"], "max_rows": 3}, raise_on_error=False
        )
    assert unguarded.structured_content["row_count"] == 3
    refusal(guarded)
    refusal(free)

    strict = {"cost_guard": {"max_postgres_cost": 1_000}}
    client, _ = served(pg_settings(**strict))
    async with client:
        aggregate = await client.call_tool(
            "query", {"sql": "SELECT count(*) FROM orders"}, raise_on_error=False
        )
        small = await client.call_tool("query", {"sql": "SELECT * FROM orders WHERE id = 5"})
    assert "(ceiling 1,000, cost_guard.max_postgres_cost)" in refusal(aggregate)
    assert small.structured_content["row_count"] == 1

    client, _ = served(pg_settings(cost_guard={"free_sql": False, "max_postgres_cost": 1_000}))
    async with client:
        off = await client.call_tool("query", {"sql": "SELECT count(*) FROM orders"})
    assert off.structured_content["rows"] == [[1_000_000]]


async def test_duckdb_refuses_a_cross_product_and_answers_joins_and_aggregates(demo_db: Path):
    client, guard = served({"sources": {"demo": {"kind": "duckdb", "path": str(demo_db)}}})
    async with client:
        cartesian = await client.call_tool(
            "query",
            {"sql": "SELECT count(*) FROM orders a CROSS JOIN orders b"},
            raise_on_error=False,
        )
        analyzed = await client.call_tool(
            "query",
            {"sql": "EXPLAIN ANALYZE SELECT count(*) FROM orders a, orders b"},
            raise_on_error=False,
        )
        aggregate = await client.call_tool(
            "query", {"sql": "SELECT status, count(*) FROM orders GROUP BY status ORDER BY 1"}
        )
        joined = await client.call_tool(
            "query",
            {
                "sql": "SELECT count(*) FROM orders o JOIN customers c USING (customer_id) "
                "WHERE o.order_id <= :n",
                "params": {"n": 500_000},
            },
        )
    message = refusal(cartesian)
    assert "DuckDB estimates 1,000,000,000,000 rows" in message and "CROSS_PRODUCT" in message
    assert "CROSS_PRODUCT" in refusal(analyzed)
    assert sum(row[1] for row in aggregate.structured_content["rows"]) == 1_000_000
    assert joined.structured_content["rows"] == [[500_000]]
    assert guard.estimates == 4


@pytest.fixture(scope="module")
def sqlite_big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cost") / "big.sqlite"
    con = sqlite3.connect(path)
    con.executescript(
        """
        CREATE TABLE big (id INTEGER PRIMARY KEY, k INTEGER NOT NULL);
        WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 1000000)
        INSERT INTO big SELECT i, i % 7 FROM r;
        CREATE TABLE small (id INTEGER PRIMARY KEY);
        INSERT INTO small VALUES (1), (2), (3);
        """
    )
    con.commit()
    con.close()
    return path


async def test_sqlite_refuses_only_full_cross_joins_of_large_tables(sqlite_big: Path):
    client, _ = served({"sources": {"lite": {"kind": "sqlite", "path": str(sqlite_big)}}})
    async with client:
        cartesian = await client.call_tool(
            "query", {"sql": "SELECT count(*) FROM big a, big b"}, raise_on_error=False
        )
        cross = await client.call_tool(
            "query",
            {"sql": "SELECT count(*) FROM big a CROSS JOIN small s CROSS JOIN big b"},
            raise_on_error=False,
        )
        aggregate = await client.call_tool(
            "query", {"sql": "SELECT k, count(*) FROM big GROUP BY k ORDER BY k"}
        )
        small = await client.call_tool("query", {"sql": "SELECT count(*) FROM big, small"})
        keyed = await client.call_tool(
            "query", {"sql": "SELECT count(*) FROM big a JOIN small s ON s.id = a.id"}
        )
    message = refusal(cartesian)
    assert "SQLite estimates 1,000,000,000,000 rows" in message and "big × big" in message
    assert "3,000,000,000,000 rows" in refusal(cross)
    assert sum(row[1] for row in aggregate.structured_content["rows"]) == 1_000_000
    assert small.structured_content["rows"] == [[3_000_000]]  # 3 million: under the ceiling
    assert keyed.structured_content["rows"] == [[3]]
