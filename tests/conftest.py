"""Shared test setup: no network, no update checks, anyio on asyncio."""

from __future__ import annotations

import os

os.environ["FASTMCP_CHECK_FOR_UPDATES"] = "off"
os.environ["FASTMCP_SHOW_SERVER_BANNER"] = "false"
os.environ["FASTMCP_LOG_ENABLED"] = "false"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from wellhead.observe.logs import configure_logging  # noqa: E402

# As the CLI does: JSON logs instead of FastMCP's Rich handlers (whose traceback rendering
# alone blocks the event loop for a quarter of a second).
configure_logging("INFO")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The generated demo DuckDB file, built once per test session."""
    from wellhead.demo import ensure_demo_database

    cache = os.environ.get("WELLHEAD_TEST_DEMO_CACHE")
    directory = Path(cache) if cache else tmp_path_factory.mktemp("demo-cache")
    return ensure_demo_database(directory)


@pytest.fixture(scope="session")
def engine(demo_db, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A direct DuckDB connection to a copy of the demo data, to compute expected answers.

    A copy, because DuckDB refuses a second in-process connection to the same file with a
    different configuration than the server's locked, read-only one.
    """
    import shutil

    import duckdb

    copy = tmp_path_factory.mktemp("engine") / "demo-copy.duckdb"
    shutil.copy(demo_db, copy)
    connection = duckdb.connect(str(copy), read_only=True)
    yield connection
    connection.close()


def settings_for(path, **limits):  # type: ignore[no-untyped-def]
    """Settings serving one DuckDB file as source `demo`, with limit overrides."""
    from wellhead.config import parse_settings

    return parse_settings(
        {
            "sources": {"demo": {"kind": "duckdb", "path": str(path)}},
            "limits": limits,
            "cursor": {"secret": "test-secret-test-secret-0123456789"},
        }
    )


@pytest.fixture(scope="session")
def demo_sqlite(engine, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A SQLite copy of a slice of the demo data (same schema), for the SQLite engine."""
    import sqlite3

    from wellhead.sql.encoding import to_json_value

    path = tmp_path_factory.mktemp("sqlite") / "demo.sqlite"
    source = engine
    target = sqlite3.connect(path)
    slices = {
        "customers": "SELECT * FROM customers ORDER BY customer_id LIMIT 5000",
        "products": "SELECT * FROM products ORDER BY product_id",
        "orders": "SELECT * FROM orders ORDER BY order_id LIMIT 20000",
        "order_items": "SELECT * FROM order_items WHERE order_id IN "
        "(SELECT order_id FROM orders ORDER BY order_id LIMIT 20000)",
    }
    for table, sql in slices.items():
        cursor = source.execute(sql)
        names = [d[0] for d in cursor.description]
        types = [str(d[1]) for d in cursor.description]
        columns = ", ".join(
            f'"{n}" {_sqlite_type(t)}'
            + (" PRIMARY KEY" if i == 0 and table != "order_items" else "")
            for i, (n, t) in enumerate(zip(names, types, strict=True))
        )
        target.execute(f'CREATE TABLE "{table}" ({columns})')
        marks = ", ".join("?" for _ in names)
        while batch := cursor.fetchmany(5000):
            target.executemany(
                f'INSERT INTO "{table}" VALUES ({marks})',
                [[to_json_value(v) for v in row] for row in batch],
            )
    target.commit()
    target.close()
    return path


def _sqlite_type(duckdb_type: str) -> str:
    upper = duckdb_type.upper()
    if "INT" in upper:
        return "INTEGER"
    if "DECIMAL" in upper or "DOUBLE" in upper or "FLOAT" in upper:
        return "REAL"
    return "TEXT"
