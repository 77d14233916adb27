"""MySQLSource against a real MariaDB server (started by `.ci/mariadb.sh start`).

DSNs come from WELLHEAD_TEST_MYSQL_DSN (least-privilege reader), WELLHEAD_TEST_MYSQL_ADMIN_DSN
(all privileges: processlist checks, scratch objects), WELLHEAD_TEST_MYSQL_WRITER_DSN (can
INSERT/UPDATE) and WELLHEAD_TEST_MYSQL_FILE_DSN (has FILE and PROCESS). Missing DSNs skip
locally and fail under CI=true.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncmy
import pytest
import yaml

from tests.helpers import client_for, error_of, service_env, walk
from wellhead.config import parse_settings
from wellhead.errors import ConfigError, PoolExhausted, QueryFailed, QueryTimeout
from wellhead.sources._mysql import parse_dsn
from wellhead.sources.mysql import MySQLSource

pytestmark = [pytest.mark.anyio, pytest.mark.mysql]
ROOT = Path(__file__).resolve().parents[1]
CORPUS = yaml.safe_load((ROOT / "tests" / "corpora" / "mysql.yaml").read_text())


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _dsn(var: str) -> str:
    return service_env(var, "MariaDB", ".ci/mariadb.sh")


@pytest.fixture
def ro_dsn() -> str:
    return _dsn("WELLHEAD_TEST_MYSQL_DSN")


@pytest.fixture
def admin_dsn() -> str:
    return _dsn("WELLHEAD_TEST_MYSQL_ADMIN_DSN")


@pytest.fixture
async def source(ro_dsn: str) -> AsyncIterator[MySQLSource]:
    src = MySQLSource("shop", dsn=ro_dsn, pool_max=2, acquire_timeout=1.0)
    await src.start()
    try:
        yield src
    finally:
        await src.close()


class Admin:
    """A privileged connection for looking at the server from outside wellhead."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def rows(self, sql: str, args: list[Any] | None = None) -> list[tuple[Any, ...]]:
        async with self.conn.cursor() as cur:
            await cur.execute(sql, args)
            return list(await cur.fetchall())

    async def running(self, marker: str) -> list[tuple[Any, ...]]:
        """Threads whose statement mentions `marker` (other than this one)."""
        return await self.rows(
            "SELECT ID, COMMAND, STATE, INFO FROM information_schema.PROCESSLIST "
            "WHERE INFO LIKE %s AND ID <> CONNECTION_ID()",
            [f"%{marker}%"],
        )

    async def reader_threads(self) -> int:
        rows = await self.rows(
            "SELECT count(*) FROM information_schema.PROCESSLIST WHERE USER = 'wellhead_ro'"
        )
        return int(rows[0][0])


@pytest.fixture
async def admin(admin_dsn: str) -> AsyncIterator[Admin]:
    conn = await asyncmy.connect(**parse_dsn(admin_dsn, "admin").connect_kwargs())
    try:
        yield Admin(conn)
    finally:
        conn.close()


def settings(dsn: str, **limits: Any):  # type: ignore[no-untyped-def]
    return parse_settings(
        {
            "sources": {"shop": {"kind": "mysql", "dsn": dsn, "pool": {"max_size": 4}}},
            "limits": limits,
            "cursor": {"secret": "test-secret-test-secret-0123456789"},
        }
    )


# --------------------------------------------------------------------------- start-up


async def test_reader_starts_and_reports_the_server(source: MySQLSource) -> None:
    assert "MariaDB" in source.server_version
    assert source.dialect == "mariadb"
    batch = await source.fetch(
        "SELECT @@tx_read_only, @@sql_mode, @@time_zone", [], max_rows=1, timeout=5
    )
    read_only, sql_mode, zone = batch.rows[0]
    assert read_only == 1 and zone == "+00:00"
    assert "ANSI_QUOTES" not in sql_mode and "NO_BACKSLASH_ESCAPES" not in sql_mode


@pytest.mark.parametrize(
    ("var", "grants"),
    [
        ("WELLHEAD_TEST_MYSQL_WRITER_DSN", ["SELECT, INSERT, UPDATE", "INSERT, UPDATE"]),
        ("WELLHEAD_TEST_MYSQL_FILE_DSN", ["PROCESS, FILE"]),
        ("WELLHEAD_TEST_MYSQL_ADMIN_DSN", ["ALL PRIVILEGES", "GRANT OPTION"]),
    ],
)
async def test_privileged_accounts_are_refused_naming_the_grants(var: str, grants: list[str]):
    dsn = _dsn(var)
    src = MySQLSource("shop", dsn=dsn)
    with pytest.raises(ConfigError) as info:
        await src.start()
    message = info.value.public_message
    assert any(g in message for g in grants), message
    assert "GRANT SELECT, SHOW VIEW ON wellhead_test.* TO <reader>" in message
    assert "REVOKE" in message
    password = urlsplit(dsn).password or ""
    assert password and password not in message
    assert "IDENTIFIED" not in message and not re.search(r"\*[0-9A-F]{40}", message)


async def test_allow_privileged_role_starts_with_a_warning(caplog: pytest.LogCaptureFixture):
    src = MySQLSource("shop", dsn=_dsn("WELLHEAD_TEST_MYSQL_FILE_DSN"), allow_privileged_role=True)
    with caplog.at_level(logging.WARNING, logger="wellhead.sources.mysql"):
        await src.start()
    try:
        assert "PRIVILEGED ACCOUNT ALLOWED" in caplog.text
        assert "wellhead_file_pw" not in caplog.text
        batch = await src.fetch("SELECT count(*) FROM customers", [], max_rows=1, timeout=5)
        assert batch.rows == [(1000,)]
    finally:
        await src.close()


async def test_file_privilege_really_reads_files_so_refusing_it_matters(admin: Admin):
    """Why FILE is refused at start-up: with it, LOAD_FILE returns a server file's bytes
    (here a file inside the test server's secure_file_priv directory)."""
    directory = (await admin.rows("SELECT @@secure_file_priv"))[0][0]
    assert directory, "the test server restricts FILE to one directory"
    secret = Path(directory) / f"secret-{uuid.uuid4().hex[:8]}.txt"
    secret.write_text("top secret")
    src = MySQLSource("shop", dsn=_dsn("WELLHEAD_TEST_MYSQL_FILE_DSN"), allow_privileged_role=True)
    await src.start()
    try:
        batch = await src.fetch(f"SELECT LOAD_FILE('{secret}')", [], max_rows=1, timeout=5)
        assert batch.rows[0][0] == b"top secret"
    finally:
        await src.close()
        secret.unlink()


async def test_dialect_must_match_the_server(ro_dsn: str) -> None:
    src = MySQLSource("shop", dsn=ro_dsn, dialect="mysql")
    with pytest.raises(ConfigError, match="set dialect: mariadb"):
        await src.start()


async def test_wrong_password_is_a_config_error_without_the_secret(ro_dsn: str) -> None:
    bad = ro_dsn.replace("wellhead_ro_pw", "not-the-password-123")
    with pytest.raises(ConfigError) as info:
        await MySQLSource("shop", dsn=bad).start()
    assert "not-the-password-123" not in info.value.public_message
    assert "***" in info.value.public_message


# --------------------------------------------------------------------------- engine layer


async def test_the_engine_refuses_writes_even_past_the_check() -> None:
    """Layer 2 alone: the writer account (allowed on purpose) sends an INSERT straight to the
    source, bypassing the SQL check; the read-only transaction refuses it."""
    src = MySQLSource(
        "shop", dsn=_dsn("WELLHEAD_TEST_MYSQL_WRITER_DSN"), allow_privileged_role=True
    )
    await src.start()
    try:
        with pytest.raises(QueryFailed, match="read-only|READ ONLY"):
            await src.fetch("INSERT INTO notes VALUES (99, 'x')", [], max_rows=1, timeout=5)
        batch = await src.fetch("SELECT count(*) FROM notes", [], max_rows=1, timeout=5)
        assert batch.rows == [(2,)]
    finally:
        await src.close()


async def test_connections_are_reset_before_reuse(ro_dsn: str, admin: Admin) -> None:
    """User variables and GET_LOCK locks (taken here past the check, as a bypass would) do
    not survive into the next call on the same connection."""
    src = MySQLSource("shop", dsn=ro_dsn, pool_min=1, pool_max=1)
    await src.start()
    lock = f"wh_{uuid.uuid4().hex[:8]}"
    try:
        first = await src.fetch(
            f"SELECT CONNECTION_ID(), @v := 42, GET_LOCK('{lock}', 0)", [], max_rows=1, timeout=5
        )
        thread, _, got = first.rows[0]
        assert got == 1
        await asyncio.sleep(0)  # the reset runs in the background; the next call waits for it
        second = await src.fetch("SELECT CONNECTION_ID(), @v", [], max_rows=1, timeout=5)
        assert second.rows[0] == (thread, None)  # same connection, variable gone
        free = await admin.rows("SELECT IS_FREE_LOCK(%s)", [lock])
        assert free[0][0] == 1  # the lock was released by the reset
        mode = await src.fetch("SELECT @@tx_read_only, @@time_zone", [], max_rows=1, timeout=5)
        assert mode.rows[0] == (1, "+00:00")  # pinned again after the reset
    finally:
        await src.close()


async def test_server_side_timeout_kills_the_query(source: MySQLSource, admin: Admin) -> None:
    marker = f"wh_{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    with pytest.raises(QueryTimeout):
        await source.fetch(f"SELECT SLEEP(20), '{marker}'", [], max_rows=1, timeout=1.0)
    assert time.monotonic() - started < 5
    # The server stopped the statement itself and sent the error; its thread may still be
    # finishing that write for a moment, then runs nothing.
    for _ in range(40):
        if not await admin.running(marker):
            break
        await asyncio.sleep(0.05)
    assert await admin.running(marker) == []
    again = await source.fetch("SELECT 1", [], max_rows=1, timeout=5)
    assert again.rows == [(1,)]


async def test_client_cancel_kills_the_server_thread(source: MySQLSource, admin: Admin) -> None:
    marker = f"wh_{uuid.uuid4().hex[:8]}"
    task = asyncio.create_task(
        source.fetch(
            f"SELECT count(*), '{marker}' FROM orders a JOIN orders b ON a.total = b.total",
            [],
            max_rows=1,
            timeout=60,
        )
    )
    for _ in range(100):
        if await admin.running(marker):
            break
        await asyncio.sleep(0.05)
    assert await admin.running(marker), "the query never started"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Cancellation returns only once the thread is gone: nothing lingers, not even briefly.
    assert await admin.running(marker) == []
    assert source.pool_stats()[1] == 0
    assert await admin.reader_threads() <= 2  # never more than the pool size


async def test_timeout_through_the_tool_leaves_nothing_running(ro_dsn: str, admin: Admin):
    marker = f"wh_{uuid.uuid4().hex[:8]}"
    sql = f"SELECT count(*), '{marker}' AS m FROM orders a JOIN orders b ON a.total = b.total"
    async with client_for(settings(ro_dsn, query_timeout_s=1.0)) as client:
        result = await client.call_tool("query", {"sql": sql}, raise_on_error=False)
        assert error_of(result)["error"] == "timeout"
        again = await client.call_tool("query", {"sql": "SELECT count(*) FROM customers"})
    assert again.structured_content["rows"] == [[1000]]
    assert await admin.running(marker) == []


async def test_pool_exhaustion_is_a_clear_error(ro_dsn: str) -> None:
    src = MySQLSource("shop", dsn=ro_dsn, pool_min=0, pool_max=1, acquire_timeout=0.3)
    await src.start()
    try:
        slow = asyncio.create_task(src.fetch("SELECT SLEEP(2)", [], max_rows=1, timeout=10))
        await asyncio.sleep(0.3)
        with pytest.raises(PoolExhausted, match="all 1 connections .* were busy"):
            await src.fetch("SELECT 1", [], max_rows=1, timeout=5)
        await slow
        assert (await src.fetch("SELECT 1", [], max_rows=1, timeout=5)).rows == [(1,)]
    finally:
        await src.close()


async def test_a_connection_killed_while_idle_is_replaced(ro_dsn: str, admin: Admin) -> None:
    """A server restart, wait_timeout or an operator's KILL ends idle pooled connections; the
    next call notices before sending its statement and runs on a fresh connection."""
    src = MySQLSource("shop", dsn=ro_dsn, pool_min=1, pool_max=1)
    await src.start()
    try:
        first = await src.fetch("SELECT CONNECTION_ID()", [], max_rows=1, timeout=5)
        (thread,) = first.rows[0]
        await asyncio.sleep(0.2)  # let the background reset finish
        await admin.rows(f"KILL CONNECTION {int(thread)}")
        second = await src.fetch(
            "SELECT CONNECTION_ID(), @@tx_read_only", [], max_rows=1, timeout=5
        )
        assert second.rows[0][0] != thread and second.rows[0][1] == 1
    finally:
        await src.close()


async def test_rows_stop_at_the_byte_budget(source: MySQLSource) -> None:
    batch = await source.fetch(
        "SELECT order_id, REPEAT('x', 1000) FROM orders ORDER BY order_id LIMIT 1001",
        [],
        max_rows=1000,
        timeout=10,
        max_bytes=20_000,
    )
    assert batch.more and 15 <= len(batch.rows) <= 40
    assert [r[0] for r in batch.rows] == list(range(1, len(batch.rows) + 1))


# --------------------------------------------------------------------------- discovery


async def test_discovery_lists_tables_views_comments_and_keys(source: MySQLSource) -> None:
    tables = {t.name: t for t in await source.list_tables()}
    assert {"customers", "orders", "paid_orders", "products"} <= set(tables)
    assert tables["paid_orders"].kind == "view"
    assert tables["customers"].comment == "One row per customer"
    assert tables["orders"].row_estimate and tables["orders"].row_estimate > 500_000
    described = await source.describe_table("orders", 2)
    assert [c.name for c in described.columns][:2] == ["order_id", "customer_id"]
    assert described.columns[0].primary_key and not described.columns[0].nullable
    fks = {fk.references_table: fk.columns for fk in described.foreign_keys}
    assert fks == {"customers": ["customer_id"], "products": ["product_id"]}
    customers = await source.describe_table("wellhead_test.customers", 0)
    assert {c.name: c.comment for c in customers.columns}["name"] == "Full name"
    assert len(described.sample_rows) == 2


async def test_discovery_on_five_thousand_tables(ro_dsn: str) -> None:
    """One catalog query lists all 5,000 (bench/bench_mysql.py prints how long it takes)."""
    src = MySQLSource("many", dsn=ro_dsn, schemas=["wellhead_many"])
    await src.start()
    try:
        tables = await src.list_tables()
        assert len(tables) == 5000
        assert tables[0].name == "wellhead_many.t0001" and tables[0].comment == "table 1"
        described = await src.describe_table("wellhead_many.t4999", 0)
        assert [c.name for c in described.columns] == ["id", "v"]
    finally:
        await src.close()


# --------------------------------------------------------------------------- the whole stack


async def test_every_attack_is_refused_through_the_tool(ro_dsn: str) -> None:
    failures = []
    async with client_for(settings(ro_dsn)) as client:
        for case in CORPUS["attacks"]:
            result = await client.call_tool("query", {"sql": case["sql"]}, raise_on_error=False)
            if not result.is_error:
                failures.append(f"ANSWERED: {case['sql']!r}")
                continue
            payload = error_of(result)
            if payload["error"] != "unsafe_sql" or case["reason"] not in payload["message"]:
                failures.append(f"{case['sql']!r}: {payload}")
    assert not failures, "\n".join(failures)


async def test_every_legitimate_query_is_answered_by_mariadb(ro_dsn: str) -> None:
    legit = [c if isinstance(c, dict) else {"sql": c} for c in CORPUS["legit"]]
    assert len(legit) >= 30
    failures = []
    async with client_for(settings(ro_dsn)) as client:
        for case in legit:
            arguments: dict[str, Any] = {"sql": case["sql"], "max_rows": 50}
            if case.get("params"):
                arguments["params"] = case["params"]
            result = await client.call_tool("query", arguments, raise_on_error=False)
            if result.is_error:
                failures.append(f"{case['sql']!r}: {result.content[0].text}")
            elif not result.structured_content["columns"]:
                failures.append(f"{case['sql']!r}: no columns")
    assert not failures, "\n".join(failures)


async def test_backslash_string_is_one_statement_on_the_server(ro_dsn: str) -> None:
    async with client_for(settings(ro_dsn)) as client:
        result = await client.call_tool(
            "query", {"sql": "SELECT 'a\\'; DELETE FROM notes; -- ' AS s"}
        )
        count = await client.call_tool("query", {"sql": "SELECT count(*) FROM notes"})
    assert result.structured_content["rows"] == [["a'; DELETE FROM notes; -- "]]
    assert count.structured_content["rows"] == [[2]]


@pytest.mark.slow
async def test_walking_a_million_rows_is_exact(ro_dsn: str, admin: Admin) -> None:
    expected = await admin.rows("SELECT count(*), sum(order_id) FROM wellhead_test.orders")
    n, total = int(expected[0][0]), int(expected[0][1])
    assert n == 1_000_000
    s = settings(ro_dsn, max_rows_per_page=100_000, max_result_budget_bytes=2_097_152)
    async with client_for(s) as client:
        rows, pages = await walk(
            client, "SELECT order_id FROM orders", max_rows=100_000, budget_bytes=2_097_152
        )
    ids = [r[0] for r in rows]
    assert len(ids) == n
    assert len(set(ids)) == n  # none repeated
    assert sum(ids) == total  # none lost
    assert pages >= 10


@pytest.mark.xfail(
    strict=True,
    reason="known gap (docs/mysql.md): paging orders by output ordinals in the column's own "
    "collation; under utf8mb4_general_ci 'a' = 'A' = 'À', so such rows can swap between pages",
)
async def test_walk_is_exact_under_a_case_insensitive_collation(ro_dsn: str) -> None:
    async with client_for(settings(ro_dsn)) as client:
        rows, _ = await walk(client, "SELECT w FROM words", max_rows=1)
    assert sorted(r[0] for r in rows) == sorted(["a", "A", "b", "B", "a", "À", "c", "C"])


async def test_parameters_are_bound_as_values(ro_dsn: str) -> None:
    async with client_for(settings(ro_dsn)) as client:
        result = await client.call_tool(
            "query",
            {
                "sql": "SELECT name FROM customers WHERE name = :n OR region = :r LIMIT 3",
                "params": {"n": "x' OR '1'='1", "r": "nowhere"},
            },
        )
    assert result.structured_content["rows"] == []


async def test_readme_recipe_runs_as_written(admin: Admin, ro_dsn: str) -> None:
    """The README's least-privilege recipe, executed statement by statement as written (with
    the test database in place of `analytics`), gives an account wellhead accepts."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(
        r"<!-- recipe:mysql:start[^>]*-->\s*```sql\n(.*?)```\s*<!-- recipe:mysql:end -->",
        readme,
        re.S,
    )
    assert block, "README must keep the MySQL recipe between recipe:mysql markers"
    sql = block.group(1).replace("analytics", "wellhead_test")
    statements = [s.strip() for s in re.sub(r"--[^\n]*", "", sql).split(";") if s.strip()]
    await admin.rows("DROP USER IF EXISTS 'wellhead_reader'@'%'")
    try:
        for statement in statements:
            await admin.rows(statement)
        endpoint = urlsplit(ro_dsn)
        dsn = f"mysql://wellhead_reader:change-me@{endpoint.hostname}:{endpoint.port}/wellhead_test"
        src = MySQLSource("shop", dsn=dsn)
        await src.start()
        try:
            batch = await src.fetch("SELECT count(*) FROM customers", [], max_rows=1, timeout=5)
            assert batch.rows == [(1000,)]
        finally:
            await src.close()
    finally:
        await admin.rows("DROP USER IF EXISTS 'wellhead_reader'@'%'")
