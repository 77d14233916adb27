"""PostgresSource against a real server (started by `.ci/postgres.sh start`).

DSNs come from WELLHEAD_TEST_PG_DSN (least-privilege reader), WELLHEAD_TEST_PG_ADMIN_DSN
(superuser, fixtures and pg_stat_activity checks) and WELLHEAD_TEST_PG_WRITER_DSN (can INSERT).
Missing DSNs skip locally and fail under CI=true: PostgreSQL tests never skip silently in CI.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import psutil
import pytest

from tests.helpers import service_env
from wellhead.errors import (
    ConfigError,
    InvalidRequest,
    PoolExhausted,
    QueryFailed,
    QueryTimeout,
    SourceUnavailable,
    WellheadError,
)
from wellhead.sources.postgres import PostgresSource, redact_dsn

LOGGER = "wellhead.sources.postgres"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _dsn(var: str) -> str:
    return service_env(var, "PostgreSQL", ".ci/postgres.sh")


@pytest.fixture
def ro_dsn() -> str:
    return _dsn("WELLHEAD_TEST_PG_DSN")


@pytest.fixture
def admin_dsn() -> str:
    return _dsn("WELLHEAD_TEST_PG_ADMIN_DSN")


@pytest.fixture
def writer_dsn() -> str:
    return _dsn("WELLHEAD_TEST_PG_WRITER_DSN")


@pytest.fixture
async def source(ro_dsn: str) -> AsyncIterator[PostgresSource]:
    src = PostgresSource("pg", dsn=ro_dsn, pool_max=4)
    await src.start()
    try:
        yield src
    finally:
        await src.close()


@pytest.fixture
async def admin(admin_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(admin_dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def _active(admin: asyncpg.Connection, marker: str) -> int:
    """Backends currently running a statement that contains `marker`."""
    return int(
        await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()",
            f"%{marker}%",
        )
    )


async def _wait_active(admin: asyncpg.Connection, marker: str, want: bool) -> bool:
    for _ in range(100):
        if (await _active(admin, marker) > 0) == want:
            return True
        await asyncio.sleep(0.02)
    return False


def _password(dsn: str) -> str:
    return dsn.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]


# --------------------------------------------------------------------------- no server needed


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://u:s3cret@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgres://u:p%40ss/w@rd@h/db?sslmode=require", "postgres://u:***@h/db?sslmode=require"),
        ("postgresql://u@h/db?password=s3cret&sslmode=disable", None),
        ("host=h user=u password=s3cret dbname=db", "host=h user=u password=*** dbname=db"),
        ("host=h password='s3 cret' dbname=db", "host=h password=*** dbname=db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
    ],
)
def test_redact_dsn_hides_passwords(dsn: str, expected: str | None) -> None:
    out = redact_dsn(dsn)
    assert "s3cret" not in out and "s3 cret" not in out and "w@rd" not in out
    if expected is not None:
        assert out == expected
    assert redact_dsn(out) == out


def test_bad_pool_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="pool_min"):
        PostgresSource("pg", dsn="postgresql://x@h/db", pool_min=5, pool_max=2)
    with pytest.raises(ConfigError, match="acquire_timeout"):
        PostgresSource("pg", dsn="postgresql://x@h/db", acquire_timeout=0)
    assert "s3cret" not in repr(PostgresSource("pg", dsn="postgresql://x:s3cret@h/db"))


# --------------------------------------------------------------------------- start-up


@pytest.mark.anyio
async def test_unreachable_server_is_source_unavailable_without_password() -> None:
    src = PostgresSource("pg", dsn="postgresql://u:s3cret@127.0.0.1:1/db", acquire_timeout=1)
    with pytest.raises(SourceUnavailable) as info:
        await src.start()
    assert "s3cret" not in info.value.public_message
    assert "***" in info.value.public_message


@pytest.mark.anyio
async def test_wrong_password_is_config_error_without_password(ro_dsn: str) -> None:
    bad = ro_dsn.replace(_password(ro_dsn), "Wr0ngPassw0rd")
    with pytest.raises(ConfigError) as info:
        await PostgresSource("pg", dsn=bad).start()
    assert "Wr0ngPassw0rd" not in info.value.public_message
    assert "password authentication failed" in info.value.public_message


@pytest.mark.anyio
async def test_privilege_check_refuses_a_role_that_can_insert(writer_dsn: str) -> None:
    src = PostgresSource("pg", dsn=writer_dsn)
    with pytest.raises(ConfigError) as info:
        await src.start()
    msg = info.value.public_message
    assert "INSERT/UPDATE/DELETE/TRUNCATE public.orders" in msg
    assert "REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public" in msg
    assert "GRANT SELECT ON ALL TABLES IN SCHEMA" in msg
    assert "allow_privileged_role" in msg
    assert _password(writer_dsn) not in msg
    with pytest.raises(SourceUnavailable, match="not started"):
        await src.fetch("SELECT 1", [], max_rows=1, timeout=1)


@pytest.mark.anyio
async def test_privilege_check_refuses_a_superuser(admin_dsn: str) -> None:
    with pytest.raises(ConfigError) as info:
        await PostgresSource("pg", dsn=admin_dsn, schemas=["sales"]).start()
    msg = info.value.public_message
    assert "is a superuser" in msg
    assert "owns sales." in msg
    assert "NOSUPERUSER" in msg
    assert _password(admin_dsn) not in msg


@pytest.mark.anyio
async def test_allow_privileged_role_warns_loudly(
    writer_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    src = PostgresSource("pg", dsn=writer_dsn, allow_privileged_role=True)
    await src.start()
    try:
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings and "PRIVILEGED ROLE" in warnings[0].getMessage()
        assert "public.orders" in warnings[0].getMessage()
        # Even then the engine refuses the write the role is allowed to do.
        with pytest.raises(QueryFailed, match="tried to write"):
            await src.fetch(
                "INSERT INTO public.orders VALUES (0, 1, 'x', 1, now())",
                [],
                max_rows=1,
                timeout=5,
            )
    finally:
        await src.close()
    assert all(_password(writer_dsn) not in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_reader_role_starts_and_exposes_its_schemas(source: PostgresSource) -> None:
    assert source.schemas == ["archive", "many", "public", "sales"]
    await source.ping()


@pytest.mark.anyio
async def test_unknown_configured_schema_names_the_grant(ro_dsn: str) -> None:
    with pytest.raises(ConfigError, match="GRANT USAGE ON SCHEMA nope TO wellhead_ro"):
        await PostgresSource("pg", dsn=ro_dsn, schemas=["public", "nope"]).start()


# --------------------------------------------------------------------------- read-only holds

# Sent straight to fetch(), past any SQL checking: the engine and the role refuse each one.
ENGINE_REFUSES = [
    "INSERT INTO public.orders VALUES (0, 1, 'x', 1, now())",
    "UPDATE public.orders SET status = 'x' WHERE id = 1",
    "DELETE FROM public.orders WHERE id = 1",
    "MERGE INTO public.orders o USING (SELECT 1 AS id) s ON o.id = s.id WHEN MATCHED THEN DELETE",
    "WITH d AS (DELETE FROM public.orders RETURNING *) SELECT count(*) FROM d",
    "TRUNCATE public.orders",
    "CREATE TABLE public.pwned (a int)",
    "CREATE TEMP TABLE pwned (a int)",
    "DROP TABLE public.orders",
    "ALTER TABLE public.orders ADD COLUMN pwned int",
    "COMMENT ON TABLE public.orders IS 'pwned'",
    "GRANT SELECT ON public.secrets TO wellhead_ro",
    "REFRESH MATERIALIZED VIEW public.status_counts",
    "COMMIT; DROP TABLE public.orders",
    "COMMIT",
    "ROLLBACK",
    "END",
    "SET TRANSACTION READ WRITE",
    "SELECT set_config('transaction_read_only', 'off', true)",
    "DO $$ BEGIN SET TRANSACTION READ WRITE; DELETE FROM public.orders; END $$",
    "DO $$ BEGIN DELETE FROM public.orders; END $$",
    "SELECT nextval('public.counter_seq')",
    "SELECT setval('public.counter_seq', 42)",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT pg_read_binary_file('/etc/passwd')",
    "SELECT pg_ls_dir('.')",
    "SELECT pg_stat_file('postgresql.conf')",
    "SELECT lo_import('/etc/passwd')",
    "SELECT lo_export(1, '/tmp/wellhead-pwned')",
    "COPY public.orders TO '/tmp/wellhead-pwned.csv'",
    "COPY (SELECT 1) TO PROGRAM 'id'",
    "COPY public.orders FROM STDIN",
    "SELECT * FROM public.orders FOR UPDATE",
    "LOCK TABLE public.orders",
    "SELECT * FROM public.secrets",
    "SET ROLE wellhead_writer",
    "SET SESSION AUTHORIZATION wellhead_admin",
    "CREATE EXTENSION dblink",
    "LOAD 'auto_explain'",
    "VACUUM public.orders",
    "DISCARD ALL",
]


@pytest.mark.anyio
async def test_engine_refuses_writes_and_escapes(
    source: PostgresSource, admin: asyncpg.Connection
) -> None:
    accepted = []
    for sql in ENGINE_REFUSES:
        try:
            await source.fetch(sql, [], max_rows=5, timeout=5)
        except WellheadError as exc:
            assert isinstance(exc, QueryFailed | InvalidRequest), (sql, exc)
        else:
            accepted.append(sql)
    assert accepted == []
    assert await admin.fetchval("SELECT count(*) FROM public.orders") == 1_000_000
    assert await admin.fetchval("SELECT to_regclass('public.pwned')") is None
    assert await admin.fetchval("SELECT last_value FROM public.counter_seq") == 1
    assert await admin.fetchval("SELECT pg_stat_file('/tmp/wellhead-pwned.csv', true)") is None


@pytest.mark.anyio
async def test_read_only_violation_says_the_statement_tried_to_write(
    source: PostgresSource,
) -> None:
    with pytest.raises(QueryFailed, match="tried to write.*read-only transaction"):
        await source.fetch("DELETE FROM public.orders WHERE id = 1", [], max_rows=1, timeout=5)
    with pytest.raises(QueryFailed, match="tried to end wellhead's read-only transaction"):
        await source.fetch("COMMIT", [], max_rows=1, timeout=5)


@pytest.mark.anyio
async def test_a_superuser_allowed_by_flag_still_cannot_write(admin_dsn: str) -> None:
    src = PostgresSource("pg", dsn=admin_dsn, allow_privileged_role=True, schemas=["sales"])
    await src.start()
    try:
        for sql in [
            "INSERT INTO public.orders VALUES (0, 1, 'x', 1, now())",
            "SELECT nextval('public.counter_seq')",
            "SELECT set_config('transaction_read_only', 'off', true)",
            "DO $$ BEGIN PERFORM set_config('transaction_read_only', 'off', true); "
            "DELETE FROM public.orders; END $$",
            "CREATE TABLE public.pwned (a int)",
        ]:
            with pytest.raises(QueryFailed):
                await src.fetch(sql, [], max_rows=1, timeout=5)
    finally:
        await src.close()


@pytest.mark.anyio
async def test_killed_connection_is_unavailable_then_pool_recovers(
    source: PostgresSource,
) -> None:
    with pytest.raises(SourceUnavailable):
        await source.fetch(
            "SELECT pg_terminate_backend(pg_backend_pid())", [], max_rows=1, timeout=5
        )
    batch = await source.fetch("SELECT 42", [], max_rows=1, timeout=5)
    assert batch.rows == [(42,)]


# --------------------------------------------------------------------------- deadlines, cancel


@pytest.mark.anyio
async def test_timeout_cancels_the_backend_query(
    source: PostgresSource, admin: asyncpg.Connection
) -> None:
    marker = f"wh-timeout-{uuid.uuid4().hex}"
    with pytest.raises(QueryTimeout, match="cancelled on the server"):
        await source.fetch(f"SELECT pg_sleep(30) /* {marker} */", [], max_rows=1, timeout=0.5)
    assert await _wait_active(admin, marker, want=False)
    assert await _active(admin, marker) == 0


@pytest.mark.anyio
async def test_statement_timeout_cannot_be_switched_off_by_the_query(
    source: PostgresSource, admin: asyncpg.Connection
) -> None:
    marker = f"wh-guc-{uuid.uuid4().hex}"
    sql = f"SELECT set_config('statement_timeout', '0', true), pg_sleep(30) /* {marker} */"
    with pytest.raises(QueryTimeout):
        await source.fetch(sql, [], max_rows=1, timeout=0.5)
    assert await _wait_active(admin, marker, want=False)


@pytest.mark.anyio
async def test_configured_statement_timeout_caps_the_deadline(
    ro_dsn: str, admin: asyncpg.Connection
) -> None:
    src = PostgresSource("pg", dsn=ro_dsn, statement_timeout_ms=300)
    await src.start()
    try:
        with pytest.raises(QueryTimeout, match="0.3 s"):
            await src.fetch("SELECT pg_sleep(30)", [], max_rows=1, timeout=30)
    finally:
        await src.close()


@pytest.mark.anyio
async def test_cancelling_the_task_cancels_the_backend_query(
    source: PostgresSource, admin: asyncpg.Connection
) -> None:
    marker = f"wh-cancel-{uuid.uuid4().hex}"
    task = asyncio.create_task(
        source.fetch(f"SELECT pg_sleep(30) /* {marker} */", [], max_rows=1, timeout=60)
    )
    assert await _wait_active(admin, marker, want=True), "query never started"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The engine is interrupted before the cancellation propagates: nothing lingers.
    assert await _active(admin, marker) == 0
    assert (await source.fetch("SELECT 1", [], max_rows=1, timeout=5)).rows == [(1,)]


@pytest.mark.anyio
async def test_pool_exhausted_is_a_clear_error_not_a_hang(
    ro_dsn: str, admin: asyncpg.Connection
) -> None:
    src = PostgresSource("pg", dsn=ro_dsn, pool_min=1, pool_max=1, acquire_timeout=0.3)
    await src.start()
    marker = f"wh-busy-{uuid.uuid4().hex}"
    slow = asyncio.create_task(
        src.fetch(f"SELECT pg_sleep(30) /* {marker} */", [], max_rows=1, timeout=60)
    )
    try:
        assert await _wait_active(admin, marker, want=True)
        async with asyncio.timeout(10):
            with pytest.raises(PoolExhausted, match="all 1 connections .* busy for 0.3 s"):
                await src.fetch("SELECT 1", [], max_rows=1, timeout=5)
            with pytest.raises(PoolExhausted):
                await src.describe_table("public.orders", 1)
    finally:
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        await src.close()
    assert await _active(admin, marker) == 0


@pytest.mark.anyio
async def test_concurrent_calls_share_the_pool_without_cross_talk(source: PostgresSource) -> None:
    async def one(i: int) -> object:
        batch = await source.fetch(
            "SELECT $1::int AS n, pg_sleep(0.01)", [i], max_rows=1, timeout=10
        )
        return batch.rows[0][0]

    results = await asyncio.gather(*(one(i) for i in range(40)))
    assert results == list(range(40))


# --------------------------------------------------------------------------- pool reset


_STATE_SQL = """
SELECT pg_backend_pid() AS pid,
       current_setting('work_mem') AS work_mem,
       current_setting('search_path') AS search_path,
       coalesce(current_setting('wellhead.poison', true), '') AS poison,
       current_setting('default_transaction_read_only') AS ro_default,
       to_regclass('pg_temp.poison') IS NOT NULL AS temp_table,
       (SELECT count(*) FROM pg_prepared_statements WHERE name = 'poison_stmt') AS prepared,
       (SELECT count(*) FROM pg_cursors WHERE name = 'poison_cursor') AS cursors,
       (SELECT count(*) FROM pg_locks
         WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS advisory_locks,
       (SELECT count(*) FROM pg_listening_channels()) AS listening,
       current_user AS role
"""


@pytest.mark.anyio
async def test_pooled_connection_is_reset_before_reuse(ro_dsn: str) -> None:
    src = PostgresSource("pg", dsn=ro_dsn, pool_min=1, pool_max=1)
    await src.start()
    try:
        clean = await src.fetch(_STATE_SQL, [], max_rows=1, timeout=5)
        names = [c.name for c in clean.columns]
        before = dict(zip(names, clean.rows[0], strict=True))
        assert before["ro_default"] == "on"

        # Poison the session directly, the way a careless plugin or a bypass would.
        assert src._pool is not None
        async with src._pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == before["pid"]
            await conn.execute("SET default_transaction_read_only = off")
            await conn.execute("SET work_mem = '7MB'")
            await conn.execute("SET search_path = sales")
            await conn.execute("SET wellhead.poison = 'leaked'")
            await conn.execute("CREATE TEMP TABLE poison (a int)")
            await conn.execute("PREPARE poison_stmt AS SELECT 1")
            await conn.execute("SELECT pg_advisory_lock(4242)")
            await conn.execute("LISTEN poison_channel")
            await conn.execute("BEGIN; DECLARE poison_cursor CURSOR WITH HOLD FOR SELECT 1; COMMIT")

        # And through fetch itself: session-level effects a read-only statement can still have.
        await src.fetch("SELECT pg_advisory_lock(4343)", [], max_rows=1, timeout=5)
        await src.fetch("SELECT set_config('work_mem', '9MB', false)", [], max_rows=1, timeout=5)
        await src.fetch("PREPARE poison_stmt AS SELECT 2", [], max_rows=1, timeout=5)
        await src.fetch("LISTEN poison_channel", [], max_rows=1, timeout=5)

        after = await src.fetch(_STATE_SQL, [], max_rows=1, timeout=5)
        state = dict(zip(names, after.rows[0], strict=True))
        assert state["pid"] == before["pid"], "pool_max=1 must reuse the same backend"
        assert state == before
    finally:
        await src.close()


# --------------------------------------------------------------------------- discovery


@pytest.mark.anyio
async def test_list_tables_from_the_catalogs(source: PostgresSource) -> None:
    started = time.perf_counter()
    tables = await source.list_tables()
    elapsed = time.perf_counter() - started
    print(f"list_tables: {len(tables)} tables in {elapsed * 1000:.0f} ms")
    by_name = {t.name: t for t in tables}
    assert [t.name for t in tables] == sorted(t.name for t in tables)
    assert sum(1 for n in by_name if n.startswith("many.t")) == 5000
    assert by_name["many.t0100"].comment == "table number 100"
    orders = by_name["public.orders"]
    assert orders.kind == "table"
    assert orders.row_estimate is not None and 900_000 < orders.row_estimate < 1_100_000
    assert orders.comment == "One row per order (1,000,000 synthetic rows)."
    assert by_name["public.customer_totals"].kind == "view"
    assert by_name["public.status_counts"].kind == "materialized view"
    assert by_name["public.events"].kind == "table"
    assert by_name["public.events"].row_estimate == 10_000
    assert by_name['public."Mixed Case"'].kind == "table"
    assert "public.events_2024" not in by_name, "partitions are listed through their parent"
    assert "public.secrets" not in by_name, "a table the role cannot SELECT is not listed"
    assert "public.counter_seq" not in by_name
    assert elapsed < 30, "one catalog query, not one per table"


@pytest.mark.anyio
async def test_describe_table_columns_keys_comments_samples(source: PostgresSource) -> None:
    d = await source.describe_table("sales.order_items", 3)
    assert d.table.name == "sales.order_items"
    assert d.table.comment == "Order lines."
    cols = {c.name: c for c in d.columns}
    assert [c.name for c in d.columns] == ["order_id", "line", "customer_id", "sku", "quantity"]
    assert cols["order_id"].primary_key and cols["line"].primary_key
    assert not cols["sku"].primary_key and not cols["sku"].nullable
    assert cols["order_id"].type == "bigint"
    fks = {
        (tuple(f.columns), f.references_table, tuple(f.references_columns)) for f in d.foreign_keys
    }
    assert fks == {
        (("customer_id",), "sales.customers", ("id",)),
        (("sku",), "sales.products", ("sku",)),
    }
    assert len(d.sample_rows) == 3 and len(d.sample_rows[0]) == 5

    c = await source.describe_table("customers", 0)  # unique across exposed schemas
    assert c.table.name == "sales.customers" and c.sample_rows == []
    email = next(col for col in c.columns if col.name == "email")
    assert email.nullable and email.comment == "Contact address; may be null."
    assert next(col for col in c.columns if col.name == "country").type == "character(2)"

    o = await source.describe_table("orders", 1)  # found through search_path
    assert o.table.name == "public.orders"
    assert next(col for col in o.columns if col.name == "amount").type == "numeric(12,2)"

    m = await source.describe_table('"Mixed Case"', 5)
    assert m.table.name == 'public."Mixed Case"'
    assert m.columns[0].name == "Weird Column" and m.columns[0].primary_key
    assert sorted(m.sample_rows) == [[1, "one"], [2, "two"]]

    v = await source.describe_table("public.status_counts", 10)
    assert v.table.kind == "materialized view" and len(v.sample_rows) == 4


@pytest.mark.anyio
async def test_describe_table_rejects_unknown_hidden_and_ambiguous(source: PostgresSource) -> None:
    with pytest.raises(InvalidRequest, match="unknown table"):
        await source.describe_table("nope", 1)
    with pytest.raises(InvalidRequest, match="unknown table"):
        await source.describe_table("public.secrets", 1)
    with pytest.raises(InvalidRequest, match="unknown table"):
        await source.describe_table("pg_catalog.pg_authid", 1)
    with pytest.raises(InvalidRequest, match="archive.products, sales.products"):
        await source.describe_table("products", 1)
    with pytest.raises(InvalidRequest):
        await source.describe_table("a.b.c.d", 1)
    with pytest.raises(InvalidRequest):
        await source.describe_table("orders; DROP TABLE orders", 1)


# --------------------------------------------------------------------------- rows and values


@pytest.mark.anyio
async def test_big_result_fetches_only_max_rows_plus_one(source: PostgresSource) -> None:
    gc.collect()
    rss_before = psutil.Process().memory_info().rss
    batch = await source.fetch("SELECT * FROM public.orders", [], max_rows=1000, timeout=30)
    rss_growth = psutil.Process().memory_info().rss - rss_before
    assert len(batch.rows) == 1000 and batch.more is True
    assert [c.name for c in batch.columns][:3] == ["id", "customer_id", "status"]
    # A fetchall of 1M decoded rows would need hundreds of MB.
    assert rss_growth < 80 * 1024 * 1024, f"RSS grew by {rss_growth / 2**20:.0f} MiB"


@pytest.mark.anyio
async def test_more_flag_is_exact_at_the_boundary(source: PostgresSource) -> None:
    sql = "SELECT sku FROM sales.products ORDER BY sku"
    exact = await source.fetch(sql, [], max_rows=50, timeout=5)
    assert len(exact.rows) == 50 and exact.more is False
    short = await source.fetch(sql, [], max_rows=49, timeout=5)
    assert len(short.rows) == 49 and short.more is True
    assert short.rows == exact.rows[:49]
    zero = await source.fetch(sql, [], max_rows=0, timeout=5)
    assert zero.rows == [] and zero.more is True


@pytest.mark.anyio
async def test_dollar_params_with_json_style_values(source: PostgresSource) -> None:
    assert source.placeholder_style == "dollar" and source.dialect == "postgres"
    batch = await source.fetch(
        "SELECT count(*) FROM public.orders WHERE created_at < $1 AND status = $2 AND amount >= $3",
        ["2024-01-01T01:00:00+00:00", "paid", 0],
        max_rows=1,
        timeout=5,
    )
    assert batch.rows == [(15,)]
    with pytest.raises(InvalidRequest, match=r"\$1 must be a timestamptz"):
        await source.fetch(
            "SELECT 1 FROM public.orders WHERE created_at < $1",
            ["yesterday-ish"],
            max_rows=1,
            timeout=5,
        )
    with pytest.raises(InvalidRequest, match="takes 2 parameter"):
        await source.fetch("SELECT $1::int + $2::int", [1], max_rows=1, timeout=5)


@pytest.mark.anyio
async def test_values_come_back_as_the_driver_returns_them(source: PostgresSource) -> None:
    batch = await source.fetch(
        "SELECT * FROM public.type_zoo ORDER BY id", [], max_rows=5, timeout=5
    )
    types = {c.name: c.type for c in batch.columns}
    assert types["nums"] == "int4[]" and types["doc"] == "jsonb" and types["uid"] == "uuid"
    row = dict(zip([c.name for c in batch.columns], batch.rows[0], strict=True))
    assert isinstance(row["uid"], uuid.UUID)
    assert str(row["price"]) == "12.50"
    assert row["nums"] == [1, 2, 3]
    assert row["doc"] == '{"a": [1, 2], "b": {"c": true}}'
    assert tuple(row["pair"]) == ("EUR", row["pair"][1]) and str(row["pair"][1]) == "9.99"
    assert batch.rows[1][1:] == (None,) * 9


@pytest.mark.anyio
async def test_engine_errors_are_query_failed_with_the_server_message(
    source: PostgresSource,
) -> None:
    with pytest.raises(QueryFailed, match='column "nope" does not exist'):
        await source.fetch("SELECT nope FROM public.orders", [], max_rows=1, timeout=5)
    with pytest.raises(QueryFailed, match="syntax error"):
        await source.fetch("SELEC 1", [], max_rows=1, timeout=5)
    # The connection is healthy afterwards.
    assert (await source.fetch("SELECT 2", [], max_rows=1, timeout=5)).rows == [(2,)]


@pytest.mark.anyio
async def test_close_is_idempotent_and_ends_service(ro_dsn: str) -> None:
    src = PostgresSource("pg", dsn=ro_dsn)
    await src.start()
    await src.close()
    await src.close()
    with pytest.raises(SourceUnavailable):
        await src.ping()


# --------------------------------------------------------------------------- the documented recipe


def _recipe_statements() -> list[str]:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "postgres.md").read_text()
    block = doc.split("<!-- recipe:start", 1)[1].split("<!-- recipe:end -->", 1)[0]
    sql = block.split("```sql", 1)[1].split("```", 1)[0]
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


@pytest.mark.anyio
async def test_documented_least_privilege_recipe_works_as_written(
    ro_dsn: str, admin: asyncpg.Connection
) -> None:
    statements = _recipe_statements()
    assert any(s.startswith("CREATE ROLE wellhead_reader") for s in statements)
    db = await admin.fetchval("SELECT current_database()")
    reset = "DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'wellhead_reader') THEN "
    reset += "DROP OWNED BY wellhead_reader; DROP ROLE wellhead_reader; END IF; END $$"
    await admin.execute(reset)
    try:
        for statement in statements:
            await admin.execute(statement.replace("DATABASE analytics", f"DATABASE {db}"))
        host = ro_dsn.split("@", 1)[1]
        src = PostgresSource("pg", dsn=f"postgresql://wellhead_reader:change-me@{host}")
        await src.start()  # the privilege check accepts the recipe's role
        try:
            assert src.schemas == ["public"]
            names = {t.name for t in await src.list_tables()}
            assert "public.orders" in names and "public.secrets" in names
            batch = await src.fetch(
                "SELECT current_setting('default_transaction_read_only'), "
                "current_setting('statement_timeout')",
                [],
                max_rows=1,
                timeout=5,
            )
            assert batch.rows[0][0] == "on"
            with pytest.raises(QueryFailed, match="tried to write"):
                await src.fetch("DELETE FROM public.orders", [], max_rows=1, timeout=5)
        finally:
            await src.close()
    finally:
        await admin.execute(reset)
