"""SQLite source: engine-level read-only, real cancellation, pooling, discovery.

Every fixture is built here in tmp_path; nothing depends on the demo dataset.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from wellhead.errors import (
    InvalidRequest,
    PoolExhausted,
    QueryFailed,
    QueryTimeout,
    SourceUnavailable,
    UnsafeSQL,
)
from wellhead.sources._threads import Deadline, Interruptible, run_interruptible
from wellhead.sources.sqlite import SQLiteSource

HEAVY = (
    "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 2000000000) "
    "SELECT count(*) FROM r"
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _build(path: Path, *, analyze: bool) -> Path:
    con = sqlite3.connect(path)
    con.executescript(
        """
        CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT);
        CREATE TABLE orders (
            id INTEGER PRIMARY KEY,
            customer_id INTEGER REFERENCES customers,
            amount REAL,
            note BLOB
        );
        CREATE TABLE lines (
            order_id INTEGER, line INTEGER, sku TEXT,
            PRIMARY KEY (order_id, line),
            FOREIGN KEY (order_id) REFERENCES orders (id)
        );
        CREATE INDEX orders_by_customer ON orders (customer_id);
        CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 40;
        CREATE TABLE [odd "name"] (x INTEGER);
        WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 49)
        INSERT INTO customers SELECT i, 'n' || i, NULL FROM n;
        WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 499)
        INSERT INTO orders SELECT i, i % 50, i / 10.0, x'00ff' FROM n;
        """
    )
    if analyze:
        con.execute("ANALYZE")
    con.commit()
    con.close()
    return path


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    return _build(tmp_path / "shop.sqlite", analyze=True)


@pytest.fixture
async def source(db_file: Path):
    src = SQLiteSource("shop", path=str(db_file), max_connections=3)
    await src.start()
    yield src
    await src.close()


# -- reading -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_reads_with_qmark_params(source: SQLiteSource) -> None:
    assert source.placeholder_style == "qmark" and source.dialect == "sqlite"
    batch = await source.fetch(
        "SELECT orders.id, name, amount, note FROM customers JOIN orders ON orders.customer_id = "
        "customers.id WHERE customers.id = ? AND amount < ? ORDER BY orders.id",
        (3, 10),
        max_rows=10,
        timeout=10,
    )
    assert [c.name for c in batch.columns] == ["id", "name", "amount", "note"]
    assert [c.type for c in batch.columns] == ["INTEGER", "TEXT", "REAL", "BLOB"]
    assert batch.rows[0] == (3, "n3", 0.3, b"\x00\xff") and len(batch.rows) == 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    "sql",
    [
        "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 5) "
        "SELECT sum(i) FROM r",
        "SELECT customer_id, sum(amount) OVER (PARTITION BY customer_id) FROM orders",
        "SELECT json_object('a', 1), date('2024-01-31', '+1 month'), abs(-2)",
        "SELECT name FROM sqlite_master",
        "EXPLAIN QUERY PLAN SELECT * FROM orders WHERE customer_id = 3",
        "SELECT * FROM big_orders",
        "SELECT value FROM json_each('[1, 2, 3]')",
        "SELECT key, type FROM json_tree('{\"a\": [1, 2]}')",
        "SELECT name, type FROM pragma_table_info('orders')",
        "SELECT * FROM pragma_foreign_key_list('orders')",
        "PRAGMA index_list(orders)",
    ],
)
async def test_reads_allowed(source: SQLiteSource, sql: str) -> None:
    batch = await source.fetch(sql, (), max_rows=1000, timeout=10)
    assert batch.columns and batch.rows


@pytest.mark.anyio
async def test_max_rows_and_more(source: SQLiteSource) -> None:
    batch = await source.fetch("SELECT id FROM orders ORDER BY id", (), max_rows=3, timeout=10)
    assert batch.rows == [(0,), (1,), (2,)] and batch.more
    batch = await source.fetch("SELECT id FROM customers", (), max_rows=50, timeout=10)
    assert len(batch.rows) == 50 and not batch.more
    batch = await source.fetch("SELECT id FROM customers WHERE 0", (), max_rows=5, timeout=10)
    assert batch.rows == [] and not batch.more and batch.columns[0].type == "NULL"


@pytest.mark.anyio
async def test_never_fetches_the_whole_result(source: SQLiteSource) -> None:
    # An endless recursive CTE: only a fetch that stops at max_rows + 1 can answer.
    endless = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT i FROM r"
    batch = await source.fetch(endless, (), max_rows=4, timeout=20)
    assert batch.rows == [(1,), (2,), (3,), (4,)] and batch.more


@pytest.mark.anyio
async def test_engine_error_is_query_failed(source: SQLiteSource) -> None:
    with pytest.raises(QueryFailed, match="no_such_column"):
        await source.fetch("SELECT no_such_column FROM orders", (), max_rows=1, timeout=10)
    with pytest.raises(QueryFailed, match="bindings"):
        await source.fetch("SELECT ?", (), max_rows=1, timeout=10)
    with pytest.raises(InvalidRequest, match="parameter"):
        await source.fetch("SELECT ?", (2**80,), max_rows=1, timeout=10)


# -- read-only at the engine ---------------------------------------------------------

# Sent straight to fetch(): the SQL-safety layer is not involved, SQLite itself refuses.
ENGINE_REFUSES = [
    "INSERT INTO customers (name) VALUES ('x')",
    "UPDATE customers SET name = 'x'",
    "DELETE FROM orders",
    "DROP TABLE orders",
    "CREATE TABLE t (a INTEGER)",
    "CREATE TEMP TABLE t (a INTEGER)",
    "CREATE TEMP VIEW v AS SELECT 1",
    "CREATE INDEX i ON orders (amount)",
    "ALTER TABLE orders ADD COLUMN x INTEGER",
    "WITH x AS (SELECT 1) INSERT INTO customers (name) SELECT 'y' FROM x",
    "REPLACE INTO customers VALUES (1, 'x', NULL)",
    "ATTACH DATABASE '{dir}/other.sqlite' AS other",
    "ATTACH DATABASE ':memory:' AS other",
    "DETACH DATABASE main",
    "PRAGMA query_only = OFF",
    "PRAGMA writable_schema = ON",
    "PRAGMA database_list",
    "SELECT * FROM pragma_database_list",
    "PRAGMA foreign_keys = OFF",
    "UPDATE sqlite_master SET sql = '' WHERE name = 'orders'",
    "DELETE FROM sqlite_master",
    "PRAGMA journal_mode = DELETE",
    "SELECT load_extension('/tmp/evil.so')",
    "SELECT fts3_tokenizer('simple')",
    "VACUUM INTO '{dir}/copy.sqlite'",
    "VACUUM",
    "ANALYZE",
    "REINDEX",
    "BEGIN",
    "SAVEPOINT s",
    "SELECT 1; DELETE FROM orders",
]


@pytest.mark.anyio
@pytest.mark.parametrize("template", ENGINE_REFUSES)
async def test_engine_refuses(source: SQLiteSource, db_file: Path, template: str) -> None:
    before = _digest(db_file)
    with pytest.raises(UnsafeSQL, match="SQLite engine refused"):
        await source.fetch(template.format(dir=db_file.parent), (), max_rows=5, timeout=10)
    batch = await source.fetch("SELECT count(*) FROM orders", (), max_rows=1, timeout=10)
    assert batch.rows == [(500,)]
    assert _digest(db_file) == before
    assert sorted(p.name for p in db_file.parent.iterdir()) == ["shop.sqlite"]


@pytest.mark.anyio
async def test_write_refused_even_without_authorizer(db_file: Path) -> None:
    """`mode=ro` and `query_only` each hold on their own."""
    src = SQLiteSource("shop", path=str(db_file))
    await src.start()
    conn = src._idle[0]
    conn.set_authorizer(None)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM orders")
    conn.execute("PRAGMA query_only = OFF")
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM orders")
    await src.close()


# -- deadlines, cancellation, concurrency ----------------------------------------------


@pytest.mark.anyio
async def test_timeout_interrupts_and_source_stays_usable(source: SQLiteSource) -> None:
    with pytest.raises(QueryTimeout, match="0.3 s limit"):
        await source.fetch(HEAVY, (), max_rows=1, timeout=0.3)
    for _ in range(source.max_connections + 1):  # every pooled connection answers
        batch = await source.fetch("SELECT 42", (), max_rows=1, timeout=10)
        assert batch.rows == [(42,)]


@pytest.mark.anyio
async def test_cancellation_interrupts_and_propagates(source: SQLiteSource) -> None:
    with anyio.move_on_after(0.3) as scope:
        await source.fetch(HEAVY, (), max_rows=1, timeout=60)
    assert scope.cancelled_caught
    batch = await source.fetch("SELECT 7", (), max_rows=1, timeout=10)
    assert batch.rows == [(7,)]


@pytest.mark.anyio
async def test_concurrent_fetch_does_not_wait(source: SQLiteSource) -> None:
    order: list[str] = []

    async def slow() -> None:
        try:
            await source.fetch(HEAVY, (), max_rows=1, timeout=60)
        except anyio.get_cancelled_exc_class():
            order.append("slow cancelled")
            raise

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow)
        await anyio.sleep(0.1)
        batch = await source.fetch("SELECT count(*) FROM customers", (), max_rows=1, timeout=30)
        order.append("fast done")
        assert batch.rows == [(50,)]
        tg.cancel_scope.cancel()
    assert order == ["fast done", "slow cancelled"]


@pytest.mark.anyio
async def test_pool_exhausted(db_file: Path) -> None:
    src = SQLiteSource("shop", path=str(db_file), max_connections=1)
    await src.start()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: src.fetch(HEAVY, (), max_rows=1, timeout=60))
        await anyio.sleep(0.1)
        with pytest.raises(PoolExhausted, match="busy"):
            await src.fetch("SELECT 1", (), max_rows=1, timeout=0.3)
        tg.cancel_scope.cancel()
    assert (await src.fetch("SELECT 1", (), max_rows=1, timeout=10)).rows == [(1,)]
    await src.close()


# -- discovery -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_list_tables(source: SQLiteSource) -> None:
    tables = {t.name: t for t in await source.list_tables()}
    assert list(tables) == sorted(['odd "name"', "big_orders", "customers", "lines", "orders"])
    assert tables["big_orders"].kind == "view" and tables["orders"].kind == "table"
    assert tables["orders"].row_estimate == 500
    assert tables["customers"].row_estimate == 50
    assert tables["big_orders"].row_estimate is None


@pytest.mark.anyio
async def test_list_tables_without_stats(tmp_path: Path) -> None:
    src = SQLiteSource("s", path=str(_build(tmp_path / "plain.sqlite", analyze=False)))
    await src.start()
    assert {t.row_estimate for t in await src.list_tables()} == {None}
    await src.close()


@pytest.mark.anyio
async def test_describe_table(source: SQLiteSource) -> None:
    desc = await source.describe_table("orders", sample_rows=2)
    cols = {c.name: c for c in desc.columns}
    assert list(cols) == ["id", "customer_id", "amount", "note"]
    assert cols["id"].primary_key and not cols["id"].nullable
    assert cols["amount"].type == "REAL" and cols["amount"].nullable
    [fk] = desc.foreign_keys
    assert (fk.columns, fk.references_table, fk.references_columns) == (
        ["customer_id"],
        "customers",
        ["id"],
    )
    assert desc.sample_rows == [[0, 0, 0.0, b"\x00\xff"], [1, 1, 0.1, b"\x00\xff"]]

    lines = await source.describe_table("LINES", sample_rows=0)
    assert [c.name for c in lines.columns if c.primary_key] == ["order_id", "line"]
    assert lines.foreign_keys[0].references_columns == ["id"] and lines.sample_rows == []
    assert not {c.name: c for c in (await source.describe_table("customers", 0)).columns}[
        "name"
    ].nullable
    assert (await source.describe_table('odd "name"', 0)).columns[0].name == "x"


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["nope", "orders; DROP TABLE orders", "sqlite_master", ""])
async def test_unknown_table(source: SQLiteSource, name: str) -> None:
    with pytest.raises(InvalidRequest, match="call list_tables"):
        await source.describe_table(name, sample_rows=1)


@pytest.mark.anyio
async def test_ping_start_close(source: SQLiteSource, tmp_path: Path) -> None:
    await source.ping()
    await source.close()
    await source.close()
    with pytest.raises(SourceUnavailable):
        await source.ping()
    with pytest.raises(SourceUnavailable, match="not found"):
        await SQLiteSource("x", path=str(tmp_path / "missing.sqlite")).start()
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SourceUnavailable, match="not a usable SQLite database"):
        await SQLiteSource("x", path=str(garbage)).start()


# -- the worker-thread helper both embedded sources use ------------------------------


@pytest.mark.anyio
async def test_helper_abandons_a_thread_that_ignores_interrupts() -> None:
    release = threading.Event()
    seen: list[Interruptible] = []

    def stubborn(state: Interruptible) -> str:
        seen.append(state)
        state.attach(object())
        release.wait(10)  # an engine call that the interrupt cannot stop
        return "late"

    with pytest.raises(Deadline) as info:
        await run_interruptible(stubborn, lambda handle: None, timeout=0.1, grace=0.2)
    assert not info.value.finished and seen[0].abandoned and seen[0].interrupted
    release.set()
    await anyio.to_thread.run_sync(seen[0].done.wait, 10)


@pytest.mark.anyio
async def test_helper_never_starts_a_call_that_timed_out_while_queued() -> None:
    limiter = anyio.CapacityLimiter(1)
    ran: list[bool] = []

    def call(state: Interruptible) -> None:
        ran.append(state.interrupted)

    held, done = anyio.Event(), anyio.Event()

    async def hold() -> None:
        async with limiter:  # every worker thread of this limiter is busy
            held.set()
            await done.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await held.wait()
        with pytest.raises(Deadline) as info:
            await run_interruptible(call, lambda h: None, timeout=0.1, limiter=limiter)
        done.set()
    assert info.value.finished and ran == []


@pytest.mark.anyio
async def test_close_interrupts_queries_in_flight(source: SQLiteSource) -> None:
    errors: list[Exception] = []

    async def slow() -> None:
        try:
            await source.fetch(HEAVY, (), max_rows=1, timeout=60)
        except SourceUnavailable as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(slow)
        await anyio.sleep(0.2)
        await source.close()
    assert [str(e) for e in errors] == ["source 'shop' was closed"]
    assert source._idle == []  # the interrupted connection was closed, not pooled


@pytest.mark.anyio
async def test_pool_stats(source: SQLiteSource) -> None:
    assert source.pool_stats() == (1, 0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: source.fetch(HEAVY, (), max_rows=1, timeout=60))
        await _until(lambda: source.pool_stats()[1] == 1)
        await source.fetch("SELECT 1", (), max_rows=1, timeout=10)
        assert source.pool_stats() == (2, 1)
        tg.cancel_scope.cancel()
    assert source.pool_stats() == (2, 0)
    await source.close()
    assert source.pool_stats() == (0, 0)


async def _until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) for a worker thread to reach a state; no timing is asserted."""
    for _ in range(1000):
        if condition():
            return
        await anyio.sleep(0.01)
    raise AssertionError("condition never became true")
