"""The query path under hostile and awkward input: budgets that tell the truth, PERCENT and
volatile statements paged honestly, bounded SQL and patterns, one round trip for small results,
and cursors that work only for the caller that made them (real HTTP, real tokens).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastmcp import Client

from tests.conftest import settings_for
from tests.helpers import client_for, error_of, walk
from tests.server_process import ServerProcess
from wellhead.config import LimitsConfig
from wellhead.sources.duckdb import DuckDBSource
from wellhead.sql import executor as executor_module
from wellhead.sql.executor import PageRequest, QueryExecutor
from wellhead.sql.paging import CursorCodec

pytestmark = pytest.mark.anyio
ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef-x"


# --------------------------------------------------------------------------- isolation


def _auth_config(tmp_path: Path, demo_db: Path) -> Path:
    config = tmp_path / "wellhead.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "sources": {"demo": {"kind": "duckdb", "path": str(demo_db)}},
                "auth": {
                    "kind": "static",
                    "tokens": {
                        ALICE: {"client_id": "alice", "scopes": ["data"]},
                        BOB: {"client_id": "bob", "scopes": ["data"]},
                    },
                },
                "plugins": ["tests.plugins.big_output"],
                "limits": {"result_budget_bytes": 4096},
                "tools": {
                    "orders_of_status": {
                        "description": "Orders of one status.",
                        "sql": "SELECT order_id FROM orders WHERE status = :status",
                        "parameters": {"status": {"type": "string"}},
                    }
                },
            }
        )
    )
    return config


async def test_cursors_and_stored_results_belong_to_their_caller(tmp_path: Path, demo_db: Path):
    server = ServerProcess(_auth_config(tmp_path, demo_db))
    try:
        async with Client(server.mcp_url, auth=ALICE) as alice:
            query = await alice.call_tool("query", {"sql": "SELECT order_id FROM orders"})
            again = await alice.call_tool(
                "query", {"sql": "SELECT order_id FROM orders", "max_rows": 5}
            )
            tool = await alice.call_tool("orders_of_status", {"status": "paid"})
            big = await alice.call_tool("big_text", {"size": 20_000})
            stored = big.content[0].text.rsplit("cursor=", 1)[1].split()[0]
            cursors = {
                "query": ("query", {"cursor": query.structured_content["next_cursor"]}),
                "query, sql repeated": (
                    "query",
                    {
                        "cursor": again.structured_content["next_cursor"],
                        "sql": "SELECT order_id FROM orders",
                    },
                ),
                "sql tool": (
                    "orders_of_status",
                    {"cursor": tool.structured_content["next_cursor"], "status": "paid"},
                ),
                "stored result": ("read_more", {"cursor": stored}),
            }
            own = {k: await alice.call_tool(t, a) for k, (t, a) in cursors.items()}
        async with Client(server.mcp_url, auth=BOB) as bob:
            stolen = {
                k: await bob.call_tool(t, a, raise_on_error=False) for k, (t, a) in cursors.items()
            }
            altered = dict(cursors["query"][1])
            token = altered["cursor"]
            altered["cursor"] = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
            forged = await bob.call_tool("query", altered, raise_on_error=False)
    finally:
        server.stop()
    for name, result in own.items():
        assert not result.is_error, (name, result.content)
    for name, result in stolen.items():
        error = error_of(result)
        assert "not found" in error["message"], (name, error)
        # Nothing of Alice's result reaches Bob, not even its first row.
        assert '"rows"' not in result.content[0].text and "xxxx" not in result.content[0].text
    assert "cursor" in error_of(forged)["message"]  # an altered cursor is refused too


# --------------------------------------------------------------------------- budgets


async def test_a_result_that_fits_the_budget_is_always_returned(demo_db):
    long_comment = "/* " + "x" * 53_000 + " */ "
    cases: list[tuple[str, dict[str, Any]]] = [
        (long_comment + "SELECT 7 AS seven", {"budget_bytes": 1024}),
        (
            # TPC-H Q1's shape on the demo data: four-ish rows of aggregates.
            "SELECT status, count(*) AS n, sum(total) AS revenue, avg(total) AS mean, "
            "min(ordered_at) AS first_at, max(ordered_at) AS last_at "
            "FROM orders GROUP BY status ORDER BY status",
            {"budget_bytes": 1024},
        ),
        ("SELECT 'é' || repeat('ü', 300) AS umlauts", {"budget_bytes": 1024}),
        (
            "SELECT order_id, status, total, repeat('y', 100) AS pad FROM orders "
            "ORDER BY order_id LIMIT 2000",
            {"budget_bytes": 262_144, "max_rows": 2000},
        ),
        ("SELECT customer_id FROM customers ORDER BY 1 LIMIT 3", {"budget_bytes": 1024}),
    ]
    async with client_for(settings_for(demo_db)) as client:
        for sql, args in cases:
            result = await client.call_tool("query", {"sql": sql, **args}, raise_on_error=False)
            assert not result.is_error, (sql[-80:], result.content[0].text[:300])
            page = result.structured_content
            size = len(json.dumps(page, separators=(",", ":"), ensure_ascii=False).encode())
            assert size <= args["budget_bytes"]
            assert len(result.content[0].text.encode()) <= args["budget_bytes"]
            if "LIMIT 2000" in sql:  # 129-byte rows at the largest budget: a full page
                assert page["row_count"] > 1000


async def test_budget_errors_state_the_real_budget(demo_db):
    async with client_for(settings_for(demo_db)) as client:
        wide = await client.call_tool(
            "query",
            {"sql": "SELECT repeat('w', 5000) AS wide", "budget_bytes": 1024},
            raise_on_error=False,
        )
        # Many rows and a statement whose cursor alone is larger than the budget.
        noise = "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(1_000))
        long_sql = f"/* {noise} */ SELECT order_id FROM orders"  # compresses badly
        uncursorable = await client.call_tool(
            "query", {"sql": long_sql, "budget_bytes": 1024}, raise_on_error=False
        )
    message = error_of(wide)["message"]
    assert "budget_bytes=1,024" in message and "'wide'" in message
    message = error_of(uncursorable)["message"]
    assert "cursor" in message and "budget_bytes" in message


async def test_small_budget_walks_stay_exact(demo_db):
    sql = "SELECT order_id, status FROM orders WHERE order_id <= 500"
    async with client_for(settings_for(demo_db)) as client:
        rows, pages = await walk(client, sql, budget_bytes=1024)
    assert sorted(r[0] for r in rows) == list(range(1, 501))
    assert len(rows) == 500 and pages > 5


# --------------------------------------------------------------------------- PERCENT, volatile


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT n FROM range(1000) t(n) ORDER BY n LIMIT 10%", 100),
        ("SELECT n FROM range(1000) t(n) ORDER BY n LIMIT 10 PERCENT", 100),
        ("SELECT n FROM range(1000) t(n) ORDER BY n DESC LIMIT 25%", 250),
        ("SELECT n FROM range(400) t(n) ORDER BY n LIMIT 50%", 200),
        ("SELECT * FROM (SELECT n FROM range(1000) t(n) ORDER BY n LIMIT 5%) s", 50),
    ],
)
async def test_percent_limits_keep_their_meaning(demo_db, sql, expected):
    async with client_for(settings_for(demo_db)) as client:
        rows, _ = await walk(client, sql, max_rows=30)
    assert len(rows) == expected
    assert len({r[0] for r in rows}) == expected


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT order_id FROM orders ORDER BY random()",
        "SELECT order_id, uuid() AS u FROM orders",
        "SELECT order_id, gen_random_uuid() AS u FROM orders",
        "SELECT order_id, now() AS at FROM orders",
        "SELECT order_id FROM orders USING SAMPLE 10%",
        "SELECT order_id, random() AS r FROM orders WHERE order_id < 5000",
    ],
)
async def test_volatile_statements_are_not_paged(demo_db, sql):
    async with client_for(settings_for(demo_db)) as client:
        result = await client.call_tool("query", {"sql": sql, "max_rows": 50})
    page = result.structured_content
    assert page["truncated"] is True and page["next_cursor"] is None
    assert page["row_count"] == 50
    assert "volatile" in page["note"]


async def test_a_small_volatile_result_is_complete(demo_db):
    async with client_for(settings_for(demo_db)) as client:
        result = await client.call_tool(
            "query", {"sql": "SELECT n, random() AS r FROM range(5) t(n)"}
        )
    page = result.structured_content
    assert page["row_count"] == 5 and page["truncated"] is False and page["total_rows"] == 5


# --------------------------------------------------------------------------- bounded input


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1 WHERE 1 IN (" + ", ".join(str(i) for i in range(100_000)) + ")",
        "SELECT '" + "q" * 200_000 + "'",
        "/*" + "a://b:" * 40_000 + "*/ SELECT 1",
        "SELECT " + " + ".join(["1"] * 70_000),
        "SELECT 1 -- " + "ü" * 70_000,
    ],
)
async def test_sql_over_the_size_limit_is_refused_quickly(demo_db, sql):
    async with client_for(settings_for(demo_db)) as client:
        started = time.monotonic()
        result = await client.call_tool("query", {"sql": sql}, raise_on_error=False)
        elapsed = time.monotonic() - started
    message = error_of(result)["message"]
    assert "max_sql_bytes" in message
    assert elapsed < 2.0  # refused before any parsing (a bounded figure, not a benchmark)


@pytest.mark.parametrize(
    "pattern",
    ["*" * 300, "[a-" * 200, "x" * 100_000, "?" * 257, "order" + "*?" * 200],
)
async def test_huge_table_patterns_are_refused(demo_db, pattern):
    async with client_for(settings_for(demo_db)) as client:
        result = await client.call_tool("list_tables", {"pattern": pattern}, raise_on_error=False)
        fine = await client.call_tool("list_tables", {"pattern": "order*"})
    assert "max_pattern_chars" in error_of(result)["message"]
    assert {row[0] for row in fine.structured_content["tables"]} == {"orders", "order_items"}


# --------------------------------------------------------------------------- round trips


@pytest.fixture
async def counted(demo_db, tmp_path):  # type: ignore[no-untyped-def]
    """A real DuckDB source whose statements are recorded as the engine receives them."""
    import shutil

    copy = tmp_path / "copy.duckdb"
    shutil.copy(demo_db, copy)
    source = DuckDBSource("demo", path=str(copy))
    await source.start()
    seen: list[str] = []
    real_fetch = source.fetch

    async def fetch(sql: str, params: Any, **kwargs: Any) -> Any:
        seen.append(sql)
        return await real_fetch(sql, params, **kwargs)

    source.fetch = fetch  # type: ignore[method-assign]
    executor = QueryExecutor(
        {"demo": source}, LimitsConfig(), CursorCodec(b"test-secret-test-secret-0123456789")
    )
    yield executor, seen
    await source.close()


async def test_a_complete_result_costs_one_round_trip(counted):
    executor, seen = counted
    for sql in (
        "SELECT count(*) FROM orders",
        "SELECT * FROM customers WHERE customer_id = 7",
        "SELECT status, count(*) FROM orders GROUP BY 1",
        "SELECT order_id FROM orders ORDER BY order_id LIMIT 3",
        "WITH x AS (SELECT 1 AS a) SELECT * FROM x",
    ):
        seen.clear()
        page = await executor.run(PageRequest(tool="query", source="demo", sql=sql, params={}))
        assert not page.truncated
        assert len(seen) == 1, seen


async def test_only_a_result_with_more_pays_for_order_and_count(counted):
    executor, seen = counted
    sql = "SELECT order_id, status FROM orders WHERE order_id <= 450"
    first = await executor.run(PageRequest(tool="query", source="demo", sql=sql, params={}))
    assert len(seen) == 3  # the plain look, the page in total order, the count
    assert first.total_rows == 450 and first.next_cursor
    seen.clear()
    state = executor.resume(first.next_cursor, tool="query", sql=None, source=None)
    second = await executor.run(
        PageRequest(
            tool="query",
            source="demo",
            sql=state.sql,
            params=state.params,
            offset=state.offset,
            total=state.total,
            column_types=state.column_types,
        )
    )
    assert len(seen) == 1  # a later page: one round trip, no probe
    assert second.offset == first.offset + len(first.rows)
    assert second.rows[0][0] == first.rows[-1][0] + 1


async def test_repeated_sql_is_checked_once(counted, monkeypatch):
    executor, _ = counted
    calls: list[str] = []
    real = executor_module.check_read_only

    def counting(sql: str, dialect: str) -> Any:
        calls.append(sql)
        return real(sql, dialect)

    monkeypatch.setattr(executor_module, "check_read_only", counting)
    sql = "SELECT * FROM orders WHERE customer_id = :c"
    for customer in (1, 2, 3, 4, 5):
        page = await executor.run(
            PageRequest(tool="query", source="demo", sql=sql, params={"c": customer})
        )
        assert all(row[1] == customer for row in page.rows)
    assert len(calls) == 1


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 'é' || repeat('ü', 3) AS umlauts;",
        "SELECT 'ü;' AS semicolon_in_text; -- ü",
        "SELECT '日本語' AS cjk ;",
        "SELECT '😀' AS emoji; /* ü */",
        "/* ü */ SELECT 'ß' AS eszett",
    ],
)
async def test_non_ascii_statements_with_trailing_semicolons(demo_db, sql):
    async with client_for(settings_for(demo_db)) as client:
        result = await client.call_tool("query", {"sql": sql}, raise_on_error=False)
    assert not result.is_error, result.content[0].text
    assert result.structured_content["row_count"] == 1
