"""SQL tools declared in config, through a real in-memory MCP client.

The example config (examples/sql-tools.yaml) is loaded as shipped, its source pointed at a
DuckDB file generated here; results are compared with the same statement run directly on
the engine. SQLite gets its own tools (dates as text, arrays through json_each).
"""

from __future__ import annotations

import csv
import datetime
import json
import sqlite3
from pathlib import Path
from typing import Any

import duckdb
import pytest
from fastmcp import Client
from fastmcp.server.auth import AccessToken
from fastmcp.utilities.authorization import AuthContext, run_auth_checks

from tests.helpers import service_env
from wellhead.app import build_runtime, build_server
from wellhead.config import Settings, load_settings, parse_settings
from wellhead.errors import ConfigError
from wellhead.tools.models import QueryResult, lean_schema
from wellhead.tools.sql_tools import SqlTool, validate_sql_tools

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sql-tools.yaml"
REGIONS = ["north", "south", "east", "west"]
STATUSES = ["open", "shipped", "returned"]
SECRET = "sql-tools-test-secret-0123456789"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def shop_rows() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """A deterministic little shop: 120 customers, 1,500 orders over 2023-2024."""
    customers = [
        (
            i,
            f"Customer {i:03d} {['Alpha', 'Beta', 'Gamma'][i % 3]}",
            REGIONS[i % 4],
            datetime.date(2022, 1, 1) + datetime.timedelta(days=i * 3),
        )
        for i in range(1, 121)
    ]
    orders = [
        (
            i,
            (i * 7) % 120 + 1,
            round((i * 37) % 500 + 0.25 * (i % 4), 2),
            STATUSES[i % 3],
            datetime.date(2023, 1, 1) + datetime.timedelta(days=(i * 13) % 700),
        )
        for i in range(1, 1501)
    ]
    return customers, orders


@pytest.fixture(scope="module")
def shop_duckdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("shop") / "shop.duckdb"
    customers, orders = shop_rows()
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name VARCHAR, "
        "region VARCHAR, signup_date DATE)"
    )
    con.execute(
        "CREATE TABLE orders (order_id INTEGER PRIMARY KEY, customer_id INTEGER, "
        "amount DECIMAL(10, 2), status VARCHAR, ordered_on DATE)"
    )
    for table, rows in (("customers", customers), ("orders", orders)):
        csv_path = path.parent / f"{table}.csv"  # bulk load: executemany is slow on DuckDB
        with csv_path.open("w", newline="") as handle:
            csv.writer(handle).writerows(rows)
        con.execute(f"COPY {table} FROM '{csv_path}' (HEADER false)")
    con.close()
    return path


@pytest.fixture(scope="module")
def shop_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("shop-sqlite") / "shop.sqlite"
    customers, orders = shop_rows()
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name, region, signup_date)"
    )
    con.execute(
        "CREATE TABLE orders (order_id INTEGER PRIMARY KEY, customer_id INTEGER, amount REAL, "
        "status TEXT, ordered_on TEXT)"
    )
    con.executemany(
        "INSERT INTO customers VALUES (?, ?, ?, ?)",
        [(a, b, c, d.isoformat()) for a, b, c, d in customers],
    )
    con.executemany(
        "INSERT INTO orders VALUES (?, ?, ?, ?, ?)",
        [(a, b, c, d, e.isoformat()) for a, b, c, d, e in orders],
    )
    con.commit()
    con.close()
    return path


@pytest.fixture
def example(shop_duckdb: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The shipped example config, its `${WELLHEAD_EXAMPLE_DB}` pointing at the test shop."""
    monkeypatch.setenv("WELLHEAD_EXAMPLE_DB", str(shop_duckdb))
    settings = load_settings(EXAMPLE)
    return settings.model_copy(
        update={"cursor": settings.cursor.model_copy(update={"secret": SECRET})}
    )


def with_tools(settings: Settings, **changes: Any) -> Settings:
    """The same settings with other tools/toolsets (validated again, like a loaded file)."""
    raw = settings.model_dump(mode="json", exclude_unset=True)
    raw.update(changes)
    return parse_settings(raw)


def direct(path: Path, sql: str, params: list[Any]) -> list[list[Any]]:
    """The statement run straight on DuckDB, cells made JSON-like as wellhead sends them."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = con.execute(sql, params).fetchall()
    finally:
        con.close()
    return [[_plain(v) for v in row] for row in rows]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime.date):
        return value.isoformat()
    if hasattr(value, "as_integer_ratio") and not isinstance(value, int | float):
        return float(value)
    return value


def message(result: Any) -> str:
    assert result.is_error, f"expected an error, got {result.structured_content}"
    return str(json.loads(result.content[0].text)["message"])


async def walk(client: Client, tool: str, arguments: dict[str, Any]) -> tuple[list[Any], int]:
    """Follow every cursor of a SQL tool; all rows and the number of pages."""
    page: dict[str, Any] = (await client.call_tool(tool, arguments)).structured_content or {}
    rows, pages = list(page["rows"]), 1
    while page["next_cursor"]:
        result = await client.call_tool(tool, {"cursor": page["next_cursor"]})
        page = result.structured_content or {}
        assert page["offset"] == len(rows)
        rows.extend(page["rows"])
        pages += 1
    return rows, pages


# --------------------------------------------------------------------------- schema


@pytest.mark.anyio
async def test_example_config_is_valid_and_served(example: Settings) -> None:
    assert validate_sql_tools(example) == []
    async with Client(build_server(example)) as client:
        names = {tool.name for tool in await client.list_tools()}
    assert {"top_customers", "orders_by_ids", "orders_in_range", "find_customers"} <= names
    assert {"query", "list_tables", "describe_table"} <= names


@pytest.mark.anyio
async def test_input_schema_carries_types_bounds_defaults_and_required(example: Settings) -> None:
    async with Client(build_server(example)) as client:
        tools = {tool.name: tool for tool in await client.list_tools()}
    top = tools["top_customers"]
    schema = top.input_schema
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["region"]
    props = schema["properties"]
    assert props["region"]["enum"] == REGIONS
    assert props["region"]["description"] == "Sales region."
    assert props["since"] == {
        "type": "string",
        "format": "date",
        "default": "2024-01-01",
        "description": "First order day counted (YYYY-MM-DD).",
    }
    assert props["top"]["type"] == "integer"
    assert (props["top"]["minimum"], props["top"]["maximum"], props["top"]["default"]) == (
        1,
        100,
        10,
    )
    assert "cursor" in props and "cursor" not in schema["required"]
    assert top.output_schema == lean_schema(QueryResult)
    assert top.annotations.read_only_hint is True
    assert top.annotations.destructive_hint is False
    assert set(top.meta["fastmcp"]["tags"]) == {"customers", "toolset:sales"}

    ids = tools["orders_by_ids"].input_schema["properties"]["ids"]
    assert ids["type"] == "array"
    assert ids["items"] == {"type": "integer", "minimum": 1}
    assert (ids["minItems"], ids["maxItems"]) == (1, 100)

    term = tools["find_customers"].input_schema["properties"]["term"]
    assert (term["minLength"], term["maxLength"], term["pattern"]) == (2, 40, "^[A-Za-z0-9 ]+$")

    status = tools["orders_in_range"].input_schema["properties"]["status"]
    assert status["default"] is None
    assert {"enum": STATUSES, "type": "string"} in status["anyOf"]
    assert tools["orders_in_range"].title == "Orders in a date range"


# --------------------------------------------------------------------------- calls


@pytest.mark.anyio
async def test_typed_call_returns_the_engine_rows(example: Settings, shop_duckdb: Path) -> None:
    sql = example.tools["top_customers"].sql.replace(":region", "$1")
    sql = sql.replace(":since", "$2").replace(":top", "$3")
    expected = direct(shop_duckdb, sql, ["east", datetime.date(2024, 3, 1), 7])
    assert len(expected) == 7
    async with Client(build_server(example)) as client:
        result = await client.call_tool(
            "top_customers", {"region": "east", "since": "2024-03-01", "top": 7}
        )
        default = await client.call_tool("top_customers", {"region": "east"})
    page = result.structured_content
    # Same rows; their order is checked in the test below.
    assert sorted(page["rows"]) == sorted(expected)
    assert [c[0] for c in page["columns"]] == ["customer_id", "name", "revenue", "orders"]
    assert [c[1] for c in page["columns"]] == ["INTEGER", "VARCHAR", "DECIMAL(38,2)", "BIGINT"]
    assert page["truncated"] is False and page["next_cursor"] is None
    defaults = direct(shop_duckdb, sql, ["east", datetime.date(2024, 1, 1), 10])
    assert sorted(default.structured_content["rows"]) == sorted(defaults)


@pytest.mark.anyio
async def test_parameterized_limit_keeps_the_statement_order(
    example: Settings, shop_duckdb: Path
) -> None:
    sql = example.tools["top_customers"].sql.replace(":region", "$1")
    sql = sql.replace(":since", "$2").replace(":top", "$3")
    expected = direct(shop_duckdb, sql, ["east", datetime.date(2024, 3, 1), 7])
    async with Client(build_server(example)) as client:
        result = await client.call_tool(
            "top_customers", {"region": "east", "since": "2024-03-01", "top": 7}
        )
    assert result.structured_content["rows"] == expected


@pytest.mark.anyio
async def test_array_parameter_binds_as_a_list_on_duckdb(
    example: Settings, shop_duckdb: Path
) -> None:
    ids = [5, 17, 999, 1200, 3]
    async with Client(build_server(example)) as client:
        result = await client.call_tool("orders_by_ids", {"ids": ids})
    rows = result.structured_content["rows"]
    assert sorted(row[0] for row in rows) == [3, 5, 17, 999, 1200]
    expected = direct(
        shop_duckdb,
        "SELECT order_id, customer_id, amount, status, ordered_on FROM orders "
        "WHERE order_id IN (3, 5, 17, 999, 1200) ORDER BY order_id",
        [],
    )
    assert sorted(rows) == expected


@pytest.mark.anyio
async def test_optional_null_parameter_means_all(example: Settings, shop_duckdb: Path) -> None:
    base = (
        "SELECT count(*) FROM orders "
        "WHERE ordered_on BETWEEN DATE '2023-03-01' AND DATE '2023-03-31'"
    )
    everything = direct(shop_duckdb, base, [])[0][0]
    shipped = direct(shop_duckdb, base + " AND status = 'shipped'", [])[0][0]
    assert 0 < shipped < everything
    window = {"start": "2023-03-01", "end": "2023-03-31"}
    async with Client(build_server(example)) as client:
        every = await client.call_tool("orders_in_range", window)
        only = await client.call_tool("orders_in_range", {**window, "status": "shipped"})
    assert every.structured_content["total_rows"] == everything
    assert only.structured_content["total_rows"] == shipped
    assert {row[3] for row in only.structured_content["rows"]} == {"shipped"}


@pytest.mark.anyio
async def test_bad_arguments_give_precise_errors(example: Settings) -> None:
    cases = [
        (
            "top_customers",
            {"region": "north", "top": 500},
            ["'top'", "less than or equal to 100", "500"],
        ),
        (
            "top_customers",
            {"region": "north", "top": "ten"},
            ["'top'", "valid integer", "integer from 1 to 100"],
        ),
        ("top_customers", {"region": "north", "top": 2.5}, ["'top'", "valid integer"]),
        (
            "top_customers",
            {"region": "mars"},
            ["'region'", '"mars"', 'one of "north", "south", "east", "west"'],
        ),
        ("top_customers", {"region": "north", "since": "last week"}, ["'since'", "YYYY-MM-DD"]),
        ("top_customers", {"since": "2024-01-01"}, ["missing required parameter 'region'"]),
        (
            "top_customers",
            {"region": "north", "limit": 3},
            ["unknown parameter 'limit'", "region, since, top, cursor"],
        ),
        ("orders_by_ids", {"ids": []}, ["'ids'", "at least 1 item"]),
        ("orders_by_ids", {"ids": list(range(1, 102))}, ["'ids'", "at most 100 items"]),
        ("orders_by_ids", {"ids": [1, "2"]}, ["'ids[1]'", "valid integer"]),
        ("orders_by_ids", {"ids": [0]}, ["'ids[0]'", "greater than or equal to 1"]),
        ("find_customers", {"term": "x"}, ["'term'", "at least 2 characters"]),
        ("find_customers", {"term": "x'; drop"}, ["'term'", "should match pattern"]),
        (
            "orders_in_range",
            {"start": "2024-01-01", "end": "2024-01-02", "status": "lost"},
            ["'status'", '"lost"'],
        ),
    ]
    async with Client(build_server(example)) as client:
        for tool, arguments, fragments in cases:
            result = await client.call_tool(tool, arguments, raise_on_error=False)
            text = message(result)
            assert text.startswith(f"invalid arguments for tool '{tool}'"), text
            for fragment in fragments:
                assert fragment in text, (arguments, text)


@pytest.mark.anyio
async def test_text_is_never_sql(example: Settings) -> None:
    """A value that looks like SQL is only ever a bound value."""
    async with Client(build_server(example)) as client:
        hostile = await client.call_tool("find_customers", {"term": "Alpha OR 1 1"})
        alpha = await client.call_tool("find_customers", {"term": "alpha"})
    assert hostile.structured_content["rows"] == []
    assert alpha.structured_content["total_rows"] == 40


# --------------------------------------------------------------------------- paging


@pytest.mark.anyio
async def test_cursor_walk_is_exact_and_honours_max_rows(
    example: Settings, shop_duckdb: Path
) -> None:
    expected = direct(
        shop_duckdb,
        "SELECT order_id, customer_id, amount, status, ordered_on FROM orders "
        "WHERE ordered_on BETWEEN DATE '2023-01-01' AND DATE '2023-12-31' "
        "ORDER BY ordered_on, order_id",
        [],
    )
    assert len(expected) > 300
    async with Client(build_server(example)) as client:
        first = await client.call_tool(
            "orders_in_range", {"start": "2023-01-01", "end": "2023-12-31"}
        )
        rows, pages = await walk(
            client, "orders_in_range", {"start": "2023-01-01", "end": "2023-12-31"}
        )
    page = first.structured_content
    assert page["row_count"] == 50  # the tool's max_rows
    assert page["total_rows"] == len(expected)
    assert "Pass next_cursor" in page["note"]
    assert rows == expected
    assert pages == -(-len(expected) // 50)


@pytest.mark.anyio
async def test_per_tool_budget_is_honoured(example: Settings) -> None:
    tools = dict(example.model_dump(mode="json", exclude_unset=True)["tools"])
    tools["orders_in_range"] = {**tools["orders_in_range"], "budget_bytes": 1024, "max_rows": 500}
    settings = with_tools(example, tools=tools)
    async with Client(build_server(settings)) as client:
        result = await client.call_tool(
            "orders_in_range", {"start": "2023-01-01", "end": "2023-12-31"}
        )
    page = result.structured_content
    assert 0 < page["row_count"] < 30
    assert len(json.dumps(page)) <= 1024
    assert "byte budget" in page["note"]


@pytest.mark.anyio
async def test_per_tool_budget_above_the_default_is_served_whole(example: Settings) -> None:
    tools = dict(example.model_dump(mode="json", exclude_unset=True)["tools"])
    tools["orders_in_range"] = {**tools["orders_in_range"], "budget_bytes": 65536, "max_rows": 2000}
    settings = with_tools(example, tools=tools)
    async with Client(build_server(settings)) as client:
        result = await client.call_tool(
            "orders_in_range", {"start": "2023-01-01", "end": "2024-12-31"}, raise_on_error=False
        )
    assert not result.is_error, result.content[0].text
    assert len(json.dumps(result.structured_content)) > 32768


@pytest.mark.anyio
async def test_per_tool_timeout_interrupts_the_engine(example: Settings) -> None:
    tools = {
        "slow": _tool(
            "SELECT count(*) FROM orders a, orders b, orders c "
            "WHERE a.amount + b.amount + c.amount = :n",
            timeout_s=0.5,
            parameters={"n": {"type": "number"}},
        )
    }
    settings = with_tools(example, tools=tools)
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("slow", {"n": 1.5}, raise_on_error=False)
        after = await client.call_tool("query", {"sql": "SELECT count(*) FROM orders"})
    payload = json.loads(result.content[0].text)
    assert payload["error"] == "timeout"
    assert "0.5 s" in payload["message"]
    assert after.structured_content["rows"] == [[1500]]  # the source is usable again


@pytest.mark.anyio
async def test_cursors_are_bound_to_their_tool_and_arguments(example: Settings) -> None:
    window = {"start": "2023-01-01", "end": "2023-12-31"}
    async with Client(build_server(example)) as client:
        query = await client.call_tool(
            "query", {"sql": "SELECT order_id FROM orders", "max_rows": 5}
        )
        foreign = query.structured_content["next_cursor"]
        refused = await client.call_tool(
            "orders_in_range", {"cursor": foreign}, raise_on_error=False
        )
        own = (await client.call_tool("orders_in_range", window)).structured_content["next_cursor"]
        back = await client.call_tool("query", {"cursor": own}, raise_on_error=False)
        other = await client.call_tool("find_customers", {"cursor": own}, raise_on_error=False)
        changed = await client.call_tool(
            "orders_in_range", {**window, "end": "2023-06-30", "cursor": own}, raise_on_error=False
        )
        same = await client.call_tool("orders_in_range", {**window, "cursor": own})
        mistyped = await client.call_tool(
            "orders_in_range", {"end": "soon", "cursor": own}, raise_on_error=False
        )
        tampered = await client.call_tool(
            "orders_in_range", {"cursor": own[:-3] + "AAA"}, raise_on_error=False
        )
    assert "belongs to tool 'query', not 'orders_in_range'" in message(refused)
    assert "belongs to tool 'orders_in_range', not 'query'" in message(back)
    assert "belongs to tool 'orders_in_range', not 'find_customers'" in message(other)
    assert "argument 'end' differs" in message(changed)
    assert same.structured_content["offset"] == 50
    assert "parameter 'end': Input should be a valid date" in message(mistyped)
    assert "signature" in message(tampered) or "not valid" in message(tampered)


# --------------------------------------------------------------------------- toolsets, scopes


@pytest.mark.anyio
async def test_toolsets_enable_and_disable_groups(example: Settings) -> None:
    only_sales = with_tools(example, toolsets={"enabled": ["sales"]})
    no_sales = with_tools(example, toolsets={"disabled": ["sales"]})
    async with Client(build_server(only_sales)) as client:
        sales = {tool.name for tool in await client.list_tools()}
    async with Client(build_server(no_sales)) as client:
        rest = {tool.name for tool in await client.list_tools()}
    assert {"top_customers", "orders_by_ids"} <= sales
    assert not {"orders_in_range", "find_customers"} & sales
    assert {"orders_in_range", "find_customers"} <= rest
    assert not {"top_customers", "orders_by_ids"} & rest
    assert "query" in sales and "query" in rest  # toolsets group SQL tools only


@pytest.mark.anyio
async def test_scoped_tool_needs_its_scopes(example: Settings) -> None:
    tools = dict(example.model_dump(mode="json", exclude_unset=True)["tools"])
    tools["orders_by_ids"] = {**tools["orders_by_ids"], "scopes": ["orders:read"]}
    runtime = build_runtime(with_tools(example, tools=tools))
    mcp = build_server(with_tools(example, tools=tools), runtime)
    async with Client(mcp) as client:  # no token: fail closed (auth is skipped only on stdio)
        names = {tool.name for tool in await client.list_tools()}
        hidden = await client.call_tool("orders_by_ids", {"ids": [1]}, raise_on_error=False)
    assert "orders_by_ids" not in names and "top_customers" in names
    assert hidden.is_error
    settings = with_tools(example, tools=tools)
    tool = SqlTool.build(
        "orders_by_ids",
        settings.tools["orders_by_ids"],
        runtime.executor,
        "shop",
    )
    check = tool.auth
    assert check is not None

    def token(*scopes: str) -> AccessToken:
        return AccessToken(token="t", client_id="agent", scopes=list(scopes))

    def allows(tok: AccessToken | None) -> Any:
        return run_auth_checks(check, AuthContext(token=tok, component=tool))

    assert await allows(token("orders:read", "other")) is True
    assert await allows(token("other")) is False
    assert await allows(None) is False


# --------------------------------------------------------------------------- validation


def _tool(sql: str, **extra: Any) -> dict[str, Any]:
    return {"description": "test tool", "sql": sql, **extra}


def problems_of(example: Settings, **tools: dict[str, Any]) -> list[str]:
    return validate_sql_tools(with_tools(example, tools=tools))


def test_validation_catches_unused_undeclared_and_unsafe(example: Settings) -> None:
    integer = {"type": "integer"}
    found = problems_of(
        example,
        unused=_tool("SELECT 1", parameters={"n": integer}),
        undeclared=_tool(
            "SELECT * FROM orders WHERE order_id = :id AND amount > :min",
            parameters={"id": integer},
        ),
        unsafe_file=_tool("SELECT * FROM read_csv('/etc/passwd')"),
        unsafe_write=_tool("DELETE FROM orders WHERE order_id = :id", parameters={"id": integer}),
        two=_tool("SELECT 1; SELECT 2"),
        positional=_tool("SELECT * FROM orders WHERE order_id = ?"),
        broken=_tool("SELEC order_id FROM orders"),
    )
    text = "\n".join(found)
    assert "tools.unused: sql: parameter 'n' is declared but the SQL never uses it" in text
    assert "tools.undeclared: sql: placeholder :min is not declared" in text
    assert any(p.startswith("tools.unsafe_file: sql: refused in dialect duckdb") for p in found)
    assert any(p.startswith("tools.unsafe_write: sql: refused") for p in found)
    assert any(p.startswith("tools.two: sql: refused") for p in found)
    assert any(p.startswith("tools.positional: sql:") and ":name" in p for p in found)
    assert any(p.startswith("tools.broken: sql: refused") for p in found)
    assert len(found) == 7, found


def test_validation_checks_sources_limits_names_and_toolsets(example: Settings) -> None:
    found = problems_of(
        example,
        elsewhere=_tool("SELECT 1", source="nowhere"),
        query=_tool("SELECT 1"),
        greedy=_tool("SELECT 1", max_rows=100_000, budget_bytes=10_000_000, timeout_s=3600),
    )
    text = "\n".join(found)
    assert "tools.elsewhere: source 'nowhere' is not configured (sources: shop)" in text
    assert "tools.query: 'query' is a core tool" in text
    assert "tools.greedy: max_rows 100000 exceeds limits.max_rows_per_page" in text
    assert "tools.greedy: budget_bytes 10000000 exceeds limits.max_result_budget_bytes" in text
    assert "tools.greedy: timeout_s 3600 exceeds limits.query_timeout_s" in text

    bad_sets = with_tools(example, toolsets={"enabled": ["sales", "salse"], "disabled": ["sales"]})
    found = validate_sql_tools(bad_sets)
    assert "toolsets.enabled: unknown toolset 'salse' (toolsets: ops, sales)" in found
    assert "toolsets: sales both enabled and disabled; pick one" in found


def test_server_refuses_invalid_tools(example: Settings) -> None:
    settings = with_tools(example, tools={"bad": _tool("SELECT :x")})
    with pytest.raises(ConfigError, match=r"tools\.bad: sql: placeholder :x is not declared"):
        build_server(settings)


@pytest.mark.parametrize(
    ("parameter", "fragments"),
    [
        (
            {"type": "integer", "minimum": 1, "maximum": 10, "default": 50},
            ["default 50 does not fit", "less than or equal to 10"],
        ),
        (
            {"type": "string", "minimum": 1},
            ["`minimum` applies to integer or number parameters, not string"],
        ),
        ({"type": "enum"}, ["needs `values`"]),
        ({"type": "array"}, ["needs `items`"]),
        (
            {"type": "array", "items": "date", "pattern": "x"},
            ["`pattern` applies to string parameters, not array of date"],
        ),
        ({"type": "date", "default": "2024-02-30"}, ["default '2024-02-30' does not fit"]),
        (
            {"type": "integer", "minimum": 5, "maximum": 1},
            ["`minimum` (5) is greater than `maximum` (1)"],
        ),
        ({"type": "string", "pattern": "(?=a)"}, ["`pattern` is not supported"]),
        (
            {"type": "integer", "default": 1, "required": True},
            ["drop `required: true` or the default"],
        ),
        ({"type": "integer", "maxium": 3}, ["parameters.n.maxium: unknown key"]),
        ({"type": "text"}, ["parameters.n.type", "'string'"]),
    ],
)
def test_config_errors_name_tool_parameter_and_expectation(
    parameter: dict[str, Any], fragments: list[str]
) -> None:
    raw = {
        "sources": {"s": {"kind": "duckdb"}},
        "tools": {"t": _tool("SELECT :n", parameters={"n": parameter})},
    }
    with pytest.raises(ConfigError) as caught:
        parse_settings(raw)
    text = str(caught.value)
    assert "tools.t.parameters.n" in text, text
    for fragment in fragments:
        assert fragment in text, text


def test_config_refuses_reserved_names_and_writable_hints() -> None:
    base = {"sources": {"s": {"kind": "duckdb"}}}
    with pytest.raises(ConfigError, match="'cursor' is reserved"):
        parse_settings(
            {
                **base,
                "tools": {"t": _tool("SELECT :cursor", parameters={"cursor": {"type": "integer"}})},
            }
        )
    with pytest.raises(ConfigError, match="read-only by construction"):
        parse_settings(
            {**base, "tools": {"t": _tool("SELECT 1", annotations={"readOnlyHint": False})}}
        )


# --------------------------------------------------------------------------- SQLite


@pytest.mark.anyio
async def test_sqlite_tool_binds_dates_as_text_and_pages_exactly(shop_sqlite: Path) -> None:
    settings = parse_settings(
        {
            "sources": {"lite": {"kind": "sqlite", "path": str(shop_sqlite)}},
            "cursor": {"secret": SECRET},
            "tools": {
                "orders_of": _tool(
                    "SELECT order_id, amount, ordered_on FROM orders "
                    "WHERE customer_id IN (:a, :b, :c) AND ordered_on >= :since "
                    "AND amount >= :least ORDER BY order_id",
                    max_rows=7,
                    parameters={
                        "a": {"type": "integer"},
                        "b": {"type": "integer"},
                        "c": {"type": "integer", "required": False},
                        "since": {"type": "date"},
                        "least": {"type": "number", "default": 0},
                    },
                )
            },
        }
    )
    assert validate_sql_tools(settings) == []
    con = sqlite3.connect(shop_sqlite)
    expected = [
        list(row)
        for row in con.execute(
            "SELECT order_id, amount, ordered_on FROM orders WHERE customer_id IN (3, 8, 50) "
            "AND ordered_on >= '2024-01-01' ORDER BY order_id"
        )
    ]
    con.close()
    assert len(expected) > 7
    arguments = {"a": 3, "b": 8, "c": 50, "since": "2024-01-01"}
    async with Client(build_server(settings)) as client:
        rows, pages = await walk(client, "orders_of", arguments)
        without_c = await client.call_tool("orders_of", {"a": 3, "b": 8, "since": "2024-01-01"})
    assert rows == expected
    assert pages == -(-len(expected) // 7)
    assert {r[0] for r in without_c.structured_content["rows"]} < {r[0] for r in expected}


@pytest.mark.anyio
async def test_sqlite_array_parameter_binds_as_json_for_json_each(shop_sqlite: Path) -> None:
    settings = parse_settings(
        {
            "sources": {"lite": {"kind": "sqlite", "path": str(shop_sqlite)}},
            "tools": {
                "orders_by_ids": _tool(
                    "SELECT order_id, ordered_on FROM orders "
                    "WHERE order_id IN (SELECT value FROM json_each(:ids)) ORDER BY order_id",
                    parameters={"ids": {"type": "array", "items": "integer", "max_items": 10}},
                ),
                "customers_since": _tool(
                    "SELECT customer_id FROM customers "
                    "WHERE signup_date IN (SELECT value FROM json_each(:days)) ORDER BY 1",
                    parameters={"days": {"type": "array", "items": "date", "max_items": 10}},
                ),
            },
        }
    )
    assert validate_sql_tools(settings) == []
    async with Client(build_server(settings)) as client:
        orders = await client.call_tool("orders_by_ids", {"ids": [9, 4, 1200, 99999]})
        days = await client.call_tool("customers_since", {"days": ["2022-01-04", "2022-01-10"]})
    assert [row[0] for row in orders.structured_content["rows"]] == [4, 9, 1200]
    assert days.structured_content["rows"] == [[1], [3]]  # signup_date = 2022-01-01 + 3 * id


def test_sqlite_array_outside_json_each_is_refused(shop_sqlite: Path) -> None:
    settings = parse_settings(
        {
            "sources": {"lite": {"kind": "sqlite", "path": str(shop_sqlite)}},
            "tools": {
                "wrong": _tool(
                    "SELECT * FROM orders WHERE order_id IN (:ids)",
                    parameters={"ids": {"type": "array", "items": "integer"}},
                )
            },
        }
    )
    (problem,) = validate_sql_tools(settings)
    assert "array parameter :ids must be used as json_each(:ids) on SQLite" in problem


# --------------------------------------------------------------------------- PostgreSQL


def _pg_dsn() -> str:
    return service_env("WELLHEAD_TEST_PG_DSN", "PostgreSQL", ".ci/postgres.sh")


@pytest.mark.anyio
async def test_postgres_tool_binds_arrays_and_dates() -> None:
    dsn = _pg_dsn()
    settings = parse_settings(
        {
            "sources": {"pg": {"kind": "postgres", "dsn": dsn, "pool": {"min_size": 0}}},
            "cursor": {"secret": SECRET},
            "tools": {
                "orders_by_ids": _tool(
                    "SELECT id, status, amount FROM public.orders "
                    "WHERE id = ANY(:ids) AND created_at >= CAST(:since AS date) "
                    "AND status = :status ORDER BY id",
                    max_rows=2,
                    parameters={
                        "ids": {"type": "array", "items": "integer", "max_items": 50},
                        "since": {"type": "date"},
                        "status": {"type": "enum", "values": ["new", "paid", "shipped"]},
                    },
                )
            },
        }
    )
    assert validate_sql_tools(settings) == []
    ids = [2, 4, 6, 8, 10, 12, 14, 3000]  # status cycles new/paid/shipped/cancelled by id % 4
    arguments = {"ids": ids, "since": "2024-01-01", "status": "shipped"}
    async with Client(build_server(settings)) as client:
        rows, pages = await walk(client, "orders_by_ids", arguments)
    assert [row[0] for row in rows] == [2, 6, 10, 14]
    assert {row[1] for row in rows} == {"shipped"}
    assert pages == 2
