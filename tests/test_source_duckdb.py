"""DuckDB source: engine-level read-only, real cancellation, discovery.

Every fixture is built here in tmp_path; nothing depends on the demo dataset.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import anyio
import duckdb
import pytest

from wellhead.errors import (
    ConfigError,
    InvalidRequest,
    QueryFailed,
    QueryTimeout,
    SourceUnavailable,
    UnsafeSQL,
    WellheadError,
)
from wellhead.sources.duckdb import DuckDBSource

HEAVY = "SELECT count(*) FROM range(10_000_000_000) t(i) WHERE i % 7 = 3"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Parquet, CSV, TSV and JSONL files written by DuckDB itself, plus a secret file."""
    d = tmp_path_factory.mktemp("lake")
    con = duckdb.connect()
    con.execute(
        f"COPY (SELECT range AS id, 'c' || range AS name FROM range(100)) "
        f"TO '{d}/customers.parquet'"
    )
    for part in (1, 2):
        con.execute(
            f"COPY (SELECT {part} AS part, range AS n FROM range(5)) TO '{d}/events_{part}.parquet'"
        )
    con.execute(f"COPY (SELECT range AS id, range * 2 AS v FROM range(10)) TO '{d}/nums.csv'")
    con.execute(
        f"COPY (SELECT range AS id FROM range(4)) TO '{d}/tabbed.tsv' (DELIMITER '\t', HEADER)"
    )
    con.execute(f"COPY (SELECT range AS id, 'x' AS tag FROM range(3)) TO '{d}/logs.jsonl'")
    con.close()
    (d / "secret.csv").write_text("password\nhunter2\n")
    return d


def _lake_source(lake: Path) -> DuckDBSource:
    return DuckDBSource(
        "lake",
        path=None,
        views={
            "customers": str(lake / "customers.parquet"),
            "events": str(lake / "events_*.parquet"),
            "nums": str(lake / "nums.csv"),
            "tabbed": str(lake / "tabbed.tsv"),
            "logs": str(lake / "logs.jsonl"),
        },
        threads=2,
        memory_limit="1GB",
    )


@pytest.fixture(scope="module")
async def views_source(lake: Path):
    """Shared on purpose: every test also checks the source survives the ones before it."""
    src = _lake_source(lake)
    await src.start()
    yield src
    await src.close()


@pytest.fixture
async def own_source(lake: Path):
    src = _lake_source(lake)
    await src.start()
    yield src
    await src.close()


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    path = tmp_path / "shop.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        """
        CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR NOT NULL, city VARCHAR);
        COMMENT ON TABLE customers IS 'people who buy';
        COMMENT ON COLUMN customers.city IS 'where they live';
        CREATE TABLE orders (
            id INTEGER PRIMARY KEY,
            customer_id INTEGER REFERENCES customers (id),
            amount DECIMAL(10, 2)
        );
        INSERT INTO customers SELECT range, 'n' || range, NULL FROM range(50);
        INSERT INTO orders SELECT range, range % 50, range / 10 FROM range(500);
        CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 40;
        CREATE SCHEMA archive;
        CREATE TABLE archive.old_orders (id INTEGER);
        """
    )
    con.close()
    return path


@pytest.fixture
async def file_source(db_file: Path):
    src = DuckDBSource("shop", path=str(db_file))
    await src.start()
    yield src
    await src.close()


# -- views over files ------------------------------------------------------------


@pytest.mark.anyio
async def test_views_read_every_format(views_source: DuckDBSource) -> None:
    batch = await views_source.fetch(
        "SELECT count(*), sum(id) FROM customers", (), max_rows=10, timeout=10
    )
    assert batch.rows == [(100, 4950)]
    assert [c.type for c in batch.columns] == ["BIGINT", "HUGEINT"]
    events = await views_source.fetch(
        "SELECT part, count(*) FROM events GROUP BY part ORDER BY part", (), max_rows=10, timeout=10
    )
    assert events.rows == [(1, 5), (2, 5)]
    nums = await views_source.fetch("SELECT sum(v) FROM nums", (), max_rows=1, timeout=10)
    assert nums.rows == [(90,)]
    tabbed = await views_source.fetch("SELECT count(*) FROM tabbed", (), max_rows=1, timeout=10)
    assert tabbed.rows == [(4,)]
    logs = await views_source.fetch(
        "SELECT id, tag FROM logs ORDER BY id", (), max_rows=9, timeout=10
    )
    assert logs.rows == [(0, "x"), (1, "x"), (2, "x")]


@pytest.mark.anyio
async def test_views_listed_and_described(views_source: DuckDBSource) -> None:
    tables = await views_source.list_tables()
    assert [t.name for t in tables] == ["customers", "events", "logs", "nums", "tabbed"]
    assert {t.kind for t in tables} == {"view"}
    desc = await views_source.describe_table("customers", sample_rows=3)
    assert [(c.name, c.type) for c in desc.columns] == [("id", "BIGINT"), ("name", "VARCHAR")]
    assert desc.sample_rows == [[0, "c0"], [1, "c1"], [2, "c2"]]
    assert (await views_source.describe_table("CUSTOMERS", sample_rows=0)).sample_rows == []


# Each of these is sent straight to the engine: the SQL-safety layer is not involved.
ENGINE_REFUSES = [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM read_blob('/etc/hostname')",
    "SELECT getenv('HOME')",
    "SELECT * FROM read_csv('{lake}/secret.csv')",
    "SELECT * FROM read_csv('{lake}/../lake/secret.csv')",
    "SELECT * FROM read_parquet('https://example.com/x.parquet')",
    "COPY (SELECT 1 AS x) TO '{lake}/written.csv'",
    "EXPORT DATABASE '{lake}/exported'",
    "ATTACH '{lake}/other.duckdb' AS other",
    "ATTACH ':memory:' AS scratch",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET threads = 1",
    "RESET memory_limit",
    "PRAGMA threads = 1",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "CREATE TABLE t (a INTEGER)",
    "CREATE VIEW v2 AS SELECT 1",
    "CREATE SEQUENCE seq",
    "CREATE MACRO m(a) AS a",
    "CREATE SECRET (TYPE s3, KEY_ID 'a', SECRET 'b')",
]


@pytest.mark.anyio
@pytest.mark.parametrize("template", ENGINE_REFUSES)
async def test_engine_refuses_without_statement_gate(
    views_source: DuckDBSource, lake: Path, template: str
) -> None:
    """Layer 2 proper: DuckDB's own settings refuse these even past our statement check."""
    sql = template.format(lake=lake)
    with pytest.raises(WellheadError):
        await views_source._run(sql, (), max_rows=10, timeout=10, check=False)
    assert not (lake / "written.csv").exists()
    assert not (lake / "exported").exists()
    assert not (lake / "other.duckdb").exists()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "template", [*ENGINE_REFUSES, "COPY (SELECT 1 AS id) TO '{lake}/nums.csv' (USE_TMP_FILE false)"]
)
async def test_fetch_refuses(views_source: DuckDBSource, lake: Path, template: str) -> None:
    before = _digest(lake / "nums.csv")
    with pytest.raises((UnsafeSQL, QueryFailed)):
        await views_source.fetch(template.format(lake=lake), (), max_rows=10, timeout=10)
    assert _digest(lake / "nums.csv") == before
    # The views still read after every refusal.
    batch = await views_source.fetch("SELECT count(*) FROM nums", (), max_rows=1, timeout=10)
    assert batch.rows == [(10,)]


@pytest.mark.anyio
async def test_statement_gate_names_the_statement(views_source: DuckDBSource) -> None:
    with pytest.raises(UnsafeSQL, match="COPY"):
        await views_source.fetch("COPY nums TO '/tmp/x.csv'", (), max_rows=1, timeout=5)
    with pytest.raises(UnsafeSQL, match="2 statements"):
        await views_source.fetch("SELECT 1; SELECT 2", (), max_rows=1, timeout=5)
    with pytest.raises(UnsafeSQL, match="IN list"):
        await views_source.fetch("PIVOT nums ON id USING sum(v)", (), max_rows=1, timeout=5)
    with pytest.raises(UnsafeSQL, match="EXPLAIN"):
        await views_source.fetch(
            "EXPLAIN (FORMAT json) COPY nums TO '/tmp/x.csv'", (), max_rows=1, timeout=5
        )
    with pytest.raises(UnsafeSQL, match="EXPLAIN"):
        await views_source.fetch(
            "/* hi */ EXPLAIN ANALYZE COPY nums TO '/tmp/x.csv'", (), max_rows=1, timeout=5
        )


@pytest.mark.anyio
@pytest.mark.parametrize(
    "sql",
    [
        "WITH a AS (SELECT id FROM nums) SELECT max(id) FROM a",
        "EXPLAIN SELECT * FROM nums",
        "-- why\nEXPLAIN ANALYZE SELECT count(*) FROM nums",
        "EXPLAIN (ANALYZE, FORMAT json) SELECT * FROM nums",
        "PIVOT nums ON id IN (1, 2) USING sum(v)",
        "FROM nums SELECT id LIMIT 1",
        "DESCRIBE nums",
        "SUMMARIZE nums",
        "VALUES (1), (2)",
        "SELECT id, row_number() OVER (ORDER BY v DESC) FROM nums QUALIFY v > 10",
    ],
)
async def test_reads_allowed(views_source: DuckDBSource, sql: str) -> None:
    batch = await views_source.fetch(sql, (), max_rows=100, timeout=10)
    assert batch.columns


# -- execution -------------------------------------------------------------------


@pytest.mark.anyio
async def test_max_rows_and_more(views_source: DuckDBSource) -> None:
    batch = await views_source.fetch("SELECT id FROM nums ORDER BY id", (), max_rows=3, timeout=10)
    assert batch.rows == [(0,), (1,), (2,)] and batch.more
    batch = await views_source.fetch("SELECT id FROM nums", (), max_rows=10, timeout=10)
    assert len(batch.rows) == 10 and not batch.more
    batch = await views_source.fetch("SELECT id FROM nums", (), max_rows=0, timeout=10)
    assert batch.rows == [] and batch.more


@pytest.mark.anyio
async def test_never_fetches_the_whole_result(views_source: DuckDBSource) -> None:
    # A trillion rows: only a streaming fetch of 6 rows can answer inside the deadline.
    batch = await views_source.fetch(
        "SELECT * FROM range(1_000_000_000_000)", (), max_rows=5, timeout=20
    )
    assert batch.rows == [(0,), (1,), (2,), (3,), (4,)] and batch.more


@pytest.mark.anyio
async def test_dollar_params(views_source: DuckDBSource) -> None:
    assert views_source.placeholder_style == "dollar"
    batch = await views_source.fetch(
        "SELECT name FROM customers WHERE id = $1 OR name = $2 ORDER BY id",
        (7, "c9"),
        max_rows=10,
        timeout=10,
    )
    assert batch.rows == [("c7",), ("c9",)]


@pytest.mark.anyio
async def test_engine_error_is_query_failed(views_source: DuckDBSource) -> None:
    with pytest.raises(QueryFailed, match="no_such_column"):
        await views_source.fetch("SELECT no_such_column FROM nums", (), max_rows=1, timeout=10)


@pytest.mark.anyio
async def test_timeout_interrupts_and_source_stays_usable(views_source: DuckDBSource) -> None:
    with pytest.raises(QueryTimeout, match="0.3 s limit"):
        await views_source.fetch(HEAVY, (), max_rows=1, timeout=0.3)
    batch = await views_source.fetch("SELECT 42", (), max_rows=1, timeout=10)
    assert batch.rows == [(42,)]


@pytest.mark.anyio
async def test_cancellation_interrupts_and_propagates(views_source: DuckDBSource) -> None:
    with anyio.move_on_after(0.3) as scope:
        await views_source.fetch(HEAVY, (), max_rows=1, timeout=60)
    assert scope.cancelled_caught
    batch = await views_source.fetch("SELECT 7", (), max_rows=1, timeout=10)
    assert batch.rows == [(7,)]


@pytest.mark.anyio
async def test_concurrent_fetch_does_not_wait(views_source: DuckDBSource) -> None:
    order: list[str] = []

    async def slow() -> None:
        try:
            await views_source.fetch(HEAVY, (), max_rows=1, timeout=60)
        except anyio.get_cancelled_exc_class():
            order.append("slow cancelled")
            raise

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow)
        await anyio.sleep(0.1)
        batch = await views_source.fetch("SELECT count(*) FROM nums", (), max_rows=1, timeout=30)
        order.append("fast done")
        assert batch.rows == [(10,)]
        tg.cancel_scope.cancel()
    assert order == ["fast done", "slow cancelled"]


@pytest.mark.anyio
async def test_ping_and_close(own_source: DuckDBSource) -> None:
    await own_source.ping()
    await own_source.close()
    await own_source.close()
    with pytest.raises(SourceUnavailable):
        await own_source.ping()


# -- configuration -----------------------------------------------------------------


@pytest.mark.anyio
async def test_bad_views_fail_at_start(lake: Path) -> None:
    with pytest.raises(ConfigError, match="no file matches"):
        await DuckDBSource("x", path=None, views={"v": str(lake / "none_*.parquet")}).start()
    with pytest.raises(ConfigError, match="letters, digits"):
        await DuckDBSource("x", path=None, views={"v; drop": str(lake / "nums.csv")}).start()
    with pytest.raises(ConfigError, match="parquet"):
        await DuckDBSource("x", path=None, views={"v": str(lake / "*")}).start()
    with pytest.raises(ConfigError, match="not both"):
        DuckDBSource("x", path=str(lake / "a.duckdb"), views={"v": str(lake / "nums.csv")})
    with pytest.raises(SourceUnavailable, match="not found"):
        await DuckDBSource("x", path=str(lake / "missing.duckdb")).start()
    bad = DuckDBSource("x", path=None, views={"v": str(lake / "nums.csv")}, memory_limit="lots")
    with pytest.raises(ConfigError, match="Memory"):
        await bad.start()
    assert bad._tmpdir is None  # the half-built catalog was removed


# -- a .duckdb file ------------------------------------------------------------------


@pytest.mark.anyio
async def test_file_database_is_read_only(file_source: DuckDBSource, db_file: Path) -> None:
    before = _digest(db_file)
    for sql in (
        "CREATE TABLE t (a INTEGER)",
        "INSERT INTO orders VALUES (1000, 1, 1.0)",
        "DELETE FROM orders",
        "SET threads = 1",
        "SELECT * FROM read_csv('/etc/passwd')",
        f"ATTACH '{db_file.parent}/x.duckdb' AS x",
    ):
        with pytest.raises(WellheadError):
            await file_source._run(sql, (), max_rows=1, timeout=10, check=False)
    await file_source.close()
    assert _digest(db_file) == before
    assert not (db_file.parent / "x.duckdb").exists()


@pytest.mark.anyio
async def test_file_database_discovery(file_source: DuckDBSource) -> None:
    tables = {t.name: t for t in await file_source.list_tables()}
    assert list(tables) == ["archive.old_orders", "big_orders", "customers", "orders"]
    assert tables["customers"].kind == "table" and tables["big_orders"].kind == "view"
    assert tables["customers"].comment == "people who buy"
    assert tables["orders"].row_estimate == 500

    desc = await file_source.describe_table("orders", sample_rows=2)
    cols = {c.name: c for c in desc.columns}
    assert cols["id"].primary_key and not cols["id"].nullable
    assert cols["amount"].type == "DECIMAL(10,2)" and cols["amount"].nullable
    assert desc.foreign_keys[0].columns == ["customer_id"]
    assert desc.foreign_keys[0].references_table == "customers"
    assert desc.foreign_keys[0].references_columns == ["id"]
    assert len(desc.sample_rows) == 2

    customers = await file_source.describe_table("main.customers", sample_rows=1)
    assert {c.name: c.comment for c in customers.columns}["city"] == "where they live"
    assert not {c.name: c for c in customers.columns}["name"].nullable
    assert (await file_source.describe_table("archive.old_orders", 1)).columns[0].name == "id"


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["nope", 'orders"; DROP TABLE orders; --', "old_orders", ""])
async def test_unknown_table(file_source: DuckDBSource, name: str) -> None:
    with pytest.raises(InvalidRequest, match="call list_tables"):
        await file_source.describe_table(name, sample_rows=1)


def test_tmp_catalog_removed(lake: Path) -> None:
    src = DuckDBSource("x", path=None, views={"nums": str(lake / "nums.csv")})
    anyio.run(src.start)
    tmp = src._tmpdir
    assert tmp is not None and os.path.isdir(tmp)
    anyio.run(src.close)
    assert not os.path.exists(tmp)


@pytest.mark.anyio
async def test_close_interrupts_queries_in_flight(own_source: DuckDBSource) -> None:
    errors: list[Exception] = []

    async def slow() -> None:
        try:
            await own_source.fetch(HEAVY, (), max_rows=1, timeout=60)
        except SourceUnavailable as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow)
        await anyio.sleep(0.2)
        await own_source.close()
    assert [str(e) for e in errors] == ["source 'lake' was closed"]


@pytest.mark.anyio
async def test_pool_stats(views_source: DuckDBSource) -> None:
    assert views_source.pool_stats() == (16, 0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: views_source.fetch(HEAVY, (), max_rows=1, timeout=60))
        await _until(lambda: views_source.pool_stats()[1] == 1)
        tg.cancel_scope.cancel()
    assert views_source.pool_stats() == (16, 0)


async def _until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) for a worker thread to reach a state; no timing is asserted."""
    for _ in range(1000):
        if condition():
            return
        await anyio.sleep(0.01)
    raise AssertionError("condition never became true")
