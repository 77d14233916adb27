"""The core tools through a real MCP client (in memory): shapes, errors, budgets, cursors."""

from __future__ import annotations

import json

import pytest

from tests.conftest import settings_for
from tests.helpers import client_for, error_of, walk
from wellhead.sql.encoding import encoded_size

pytestmark = pytest.mark.anyio


async def test_three_core_tools_are_listed_with_output_schemas(demo_db):
    async with client_for(settings_for(demo_db)) as client:
        tools = {t.name: t for t in await client.list_tools()}
    assert {"list_tables", "describe_table", "query"} <= set(tools)
    for name in ("list_tables", "describe_table", "query"):
        assert tools[name].output_schema["type"] == "object"
        assert tools[name].annotations.read_only_hint is True


async def test_tool_list_costs_at_most_1500_tokens(demo_db):
    async with client_for(settings_for(demo_db)) as client:
        tools = await client.list_tools()
    core = [t for t in tools if t.name in ("list_tables", "describe_table", "query")]
    text = json.dumps(
        [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in core],
        separators=(",", ":"),
    )
    assert len(text) / 4 <= 1500, f"{len(text)} bytes = {len(text) / 4:.0f} tokens"


async def test_count_orders_matches_the_engine(demo_db, engine):
    expected = engine.execute("select count(*) from orders").fetchone()[0]
    async with client_for(settings_for(demo_db)) as client:
        result = await client.call_tool("query", {"sql": "SELECT count(*) AS n FROM orders"})
    page = result.structured_content
    assert page["rows"] == [[expected]]
    assert page["rows"] == [[1_000_000]]
    assert page["columns"][0][0] == "n"
    assert page["truncated"] is False and page["next_cursor"] is None
    assert page["total_rows"] == 1
    assert "1000000" in result.content[0].text


async def test_list_and_describe_tables(demo_db):
    async with client_for(settings_for(demo_db)) as client:
        listed = (await client.call_tool("list_tables", {})).structured_content
        names = [row[0] for row in listed["tables"]]
        assert {"customers", "products", "orders", "order_items"} <= set(names)
        filtered = (await client.call_tool("list_tables", {"pattern": "order*"})).structured_content
        assert sorted(r[0] for r in filtered["tables"]) == ["order_items", "orders"]
        described = (
            await client.call_tool("describe_table", {"table": "orders"})
        ).structured_content
    columns = {c[0]: c for c in described["columns"]}
    assert "order_id" in columns and columns["order_id"][3] is True  # primary key
    assert described["sample_rows"] and len(described["sample_rows"][0]) == len(columns)
    assert any(fk["references"].endswith("customers") for fk in described["foreign_keys"])


async def test_unknown_table_and_source_are_clear_errors(demo_db):
    async with client_for(settings_for(demo_db)) as client:
        missing = await client.call_tool("describe_table", {"table": "nope"}, raise_on_error=False)
        wrong = await client.call_tool(
            "query", {"sql": "select 1", "source": "elsewhere"}, raise_on_error=False
        )
    assert "nope" in error_of(missing)["message"]
    payload = error_of(wrong)
    assert "unknown source 'elsewhere'" in payload["message"] and "demo" in payload["message"]
    assert payload["error_id"]


async def test_params_bind_by_name(demo_db, engine):
    async with client_for(settings_for(demo_db)) as client:
        result = await client.call_tool(
            "query",
            {
                "sql": "SELECT count(*) FROM orders WHERE status = :s AND total > :t",
                "params": {"s": "delivered", "t": 100},
            },
        )
        missing = await client.call_tool(
            "query", {"sql": "SELECT :a + :b", "params": {"a": 1}}, raise_on_error=False
        )
    expected = engine.execute(
        "SELECT count(*) FROM orders WHERE status = 'delivered' AND total > 100"
    ).fetchone()[0]
    assert result.structured_content["rows"] == [[expected]]
    assert "b" in error_of(missing)["message"]


async def test_unsafe_sql_is_a_tool_error_naming_the_reason(demo_db):
    async with client_for(settings_for(demo_db)) as client:
        result = await client.call_tool(
            "query", {"sql": "SELECT * FROM read_csv('/etc/passwd')"}, raise_on_error=False
        )
    payload = error_of(result)
    assert payload["error"] == "unsafe_sql"
    assert "read_csv" in payload["message"]


async def test_every_page_fits_the_budget_and_says_so(demo_db):
    async with client_for(settings_for(demo_db)) as client:
        result = await client.call_tool(
            "query", {"sql": "SELECT * FROM orders", "budget_bytes": 4096, "max_rows": 2000}
        )
        too_much = await client.call_tool(
            "query", {"sql": "SELECT 1", "budget_bytes": 10_000_000}, raise_on_error=False
        )
        too_many = await client.call_tool(
            "query", {"sql": "SELECT 1", "max_rows": 100_000}, raise_on_error=False
        )
    page = result.structured_content
    assert encoded_size(page) <= 4096
    assert len(result.content[0].text.encode()) <= 4096
    assert page["truncated"] is True and page["next_cursor"]
    assert page["total_rows"] == 1_000_000
    assert "1,000,000" in page["note"] and "cursor" in page["note"]
    assert 0 < page["row_count"] < 2000
    assert "budget_bytes" in error_of(too_much)["message"]
    assert "max_rows" in error_of(too_many)["message"]


async def test_default_budget_caps_select_star(demo_db):
    async with client_for(settings_for(demo_db)) as client:
        result = await client.call_tool("query", {"sql": "SELECT * FROM order_items"})
    assert encoded_size(result.structured_content) <= 32 * 1024
    assert result.structured_content["truncated"] is True


async def test_tampered_or_foreign_cursor_is_refused(demo_db):
    async with client_for(settings_for(demo_db)) as client:
        first = await client.call_tool(
            "query", {"sql": "SELECT order_id FROM orders", "max_rows": 5}
        )
        cursor = first.structured_content["next_cursor"]
        forged = cursor[:-3] + ("AAA" if not cursor.endswith("AAA") else "BBB")
        tampered = await client.call_tool("query", {"cursor": forged}, raise_on_error=False)
        other = await client.call_tool(
            "query", {"cursor": cursor, "sql": "SELECT 1"}, raise_on_error=False
        )
        same = await client.call_tool(
            "query", {"cursor": cursor, "sql": "SELECT order_id FROM orders", "max_rows": 5}
        )
    assert error_of(tampered)["error"] == "invalid_cursor"
    assert "different query" in error_of(other)["message"]
    assert same.structured_content["offset"] == 5


async def test_cursor_from_another_server_secret_is_refused(demo_db, tmp_path):
    async with client_for(settings_for(demo_db)) as client:
        first = await client.call_tool(
            "query", {"sql": "SELECT order_id FROM orders", "max_rows": 5}
        )
    other = settings_for(demo_db).model_copy(
        update={"cursor": settings_for(demo_db).cursor.model_copy(update={"secret": "x" * 40})}
    )
    async with client_for(other) as client:
        result = await client.call_tool(
            "query", {"cursor": first.structured_content["next_cursor"]}, raise_on_error=False
        )
    assert "signature" in error_of(result)["message"]


async def test_small_walk_is_exact_with_ties_and_no_order(demo_db, engine):
    sql = "SELECT status, channel FROM orders WHERE order_id <= 5000"
    expected = sorted(engine.execute(sql).fetchall())
    async with client_for(settings_for(demo_db)) as client:
        rows, pages = await walk(client, sql, max_rows=333)
    assert pages > 10
    assert sorted(tuple(r) for r in rows) == expected  # duplicates abound: multiset equality


async def test_ordered_walk_keeps_the_order(demo_db):
    sql = (
        "SELECT customer_id, order_id FROM orders WHERE order_id <= 20000 ORDER BY customer_id DESC"
    )
    async with client_for(settings_for(demo_db)) as client:
        rows, _ = await walk(client, sql, max_rows=700)
    keys = [r[0] for r in rows]
    assert keys == sorted(keys, reverse=True)
    assert sorted(r[1] for r in rows) == list(range(1, 20001))


async def test_user_limit_and_offset_compose_with_pages(demo_db):
    sql = "SELECT order_id FROM orders ORDER BY order_id LIMIT 1000 OFFSET 10"
    async with client_for(settings_for(demo_db)) as client:
        rows, pages = await walk(client, sql, max_rows=300)
    assert pages == 4
    assert [r[0] for r in rows] == list(range(11, 1011))


async def test_explain_is_answered(demo_db):
    async with client_for(settings_for(demo_db)) as client:
        result = await client.call_tool("query", {"sql": "EXPLAIN SELECT count(*) FROM orders"})
    assert result.structured_content["rows"]


async def test_bad_arguments_get_short_precise_errors(demo_db):
    async with client_for(settings_for(demo_db)) as client:
        wrong_type = await client.call_tool(
            "query", {"sql": "select 1", "max_rows": "abc"}, raise_on_error=False
        )
        unknown = await client.call_tool("query", {"sqll": "select 1"}, raise_on_error=False)
        missing_table = await client.call_tool(
            "query", {"sql": "SELECT * FROM nope"}, raise_on_error=False
        )
    assert error_of(wrong_type)["message"].startswith("invalid arguments: max_rows:")
    assert "errors.pydantic.dev" not in error_of(wrong_type)["message"]
    assert "sqll: unknown argument" in error_of(unknown)["message"]
    message = error_of(missing_table)["message"]
    assert "nope" in message and "_wh_q" not in message  # paging's wrapper stays invisible


async def test_schema_resource_and_analysis_prompt(demo_db):
    async with client_for(settings_for(demo_db)) as client:
        templates = await client.list_resource_templates()
        contents = await client.read_resource("wellhead://demo/orders")
        prompts = {p.name for p in await client.list_prompts()}
        prompt = await client.get_prompt("analyze_table", {"table": "orders", "question": "trend?"})
    assert any(t.uri_template == "wellhead://{source}/{table}" for t in templates)
    schema = json.loads(contents[0].text)
    assert schema["table"] == "orders" and schema["columns"][0][0] == "order_id"
    assert "analyze_table" in prompts
    text = prompt.messages[0].content.text
    assert "orders" in text and "trend?" in text and "describe_table" in text
