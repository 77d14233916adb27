"""The baseline of bench_http.py: a bare FastMCP 4.1.2 server, as a new user would write it.

    python -m bench.bare_server --engine sqlite --path orders.sqlite --port 8001
    python -m bench.bare_server --engine duckdb --path orders.duckdb --port 8001
    python -m bench.bare_server --engine postgres --dsn postgresql://... --schema bench --port 8001

Stateless streamable HTTP with JSON responses, two async tools: `query(sql)` runs the statement
with the engine's own driver (sqlite3 and duckdb in a worker thread via asyncio.to_thread, one
connection per thread; asyncpg from a pool) and returns the rows as JSON; `list_tables()` lists
the tables. No guard, no limit, no log line, no validation: what the chassis is measured against.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import decimal
import os
import sqlite3
import threading
from typing import Any

os.environ.setdefault("FASTMCP_CHECK_FOR_UPDATES", "off")

from fastmcp import FastMCP  # noqa: E402


def _plain(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, datetime.date | datetime.datetime | datetime.time):
        return value.isoformat()
    return value


def _rows(cols: list[str], rows: list[Any]) -> list[dict[str, Any]]:
    return [{c: _plain(v) for c, v in zip(cols, row, strict=True)} for row in rows]


def build(engine: str, path: str | None, dsn: str | None, schema: str) -> FastMCP:
    mcp = FastMCP("bare")
    local = threading.local()

    if engine in ("sqlite", "duckdb"):
        assert path, "--path is required for sqlite and duckdb"

        def connect() -> Any:
            conn = getattr(local, "conn", None)
            if conn is None:
                if engine == "sqlite":
                    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                else:
                    import duckdb

                    conn = duckdb.connect(path, read_only=True)
                local.conn = conn
            return conn

        def run(sql: str) -> list[dict[str, Any]]:
            cur = connect().cursor()
            cur.execute(sql)
            cols = [d[0] for d in cur.description]
            return _rows(cols, cur.fetchall())

        tables_sql = (
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            if engine == "sqlite"
            else "SELECT table_name AS name FROM information_schema.tables ORDER BY 1"
        )

        @mcp.tool
        async def query(sql: str) -> list[dict[str, Any]]:
            """Run one SQL statement and return its rows."""
            return await asyncio.to_thread(run, sql)

        @mcp.tool
        async def list_tables() -> list[dict[str, Any]]:
            """The tables of the database."""
            return await asyncio.to_thread(run, tables_sql)

    else:
        import asyncpg

        assert dsn, "--dsn is required for postgres"
        pool: dict[str, Any] = {}

        async def get_pool() -> Any:
            if "pool" not in pool:
                pool["pool"] = await asyncpg.create_pool(
                    dsn, min_size=1, max_size=10, server_settings={"search_path": schema}
                )
            return pool["pool"]

        async def run_pg(sql: str) -> list[dict[str, Any]]:
            async with (await get_pool()).acquire() as conn:
                records = await conn.fetch(sql)
            return [{k: _plain(v) for k, v in r.items()} for r in records]

        @mcp.tool
        async def query(sql: str) -> list[dict[str, Any]]:
            """Run one SQL statement and return its rows."""
            return await run_pg(sql)

        @mcp.tool
        async def list_tables() -> list[dict[str, Any]]:
            """The tables of the database."""
            return await run_pg(
                "SELECT table_schema || '.' || table_name AS name FROM information_schema.tables"
                f" WHERE table_schema = '{schema}' ORDER BY 1"
            )

    return mcp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["sqlite", "duckdb", "postgres"], default="sqlite")
    parser.add_argument("--path")
    parser.add_argument("--dsn")
    parser.add_argument("--schema", default="public")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    mcp = build(args.engine, args.path, args.dsn, args.schema)
    mcp.run(
        transport="http",
        host="127.0.0.1",
        port=args.port,
        stateless_http=True,
        json_response=True,
        show_banner=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
