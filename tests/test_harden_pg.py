"""PostgreSQL hardening against a real server: cancellation that cancels, memory bounds, speed.

Every test counts what the server itself reports (`pg_stat_activity`, by `application_name`,
which is `wellhead:<source name>`): a cancelled call must leave nothing running and the pool
must never hold more backends than `pool_max`, whichever way the call ended (a task
cancelled, an anyio cancel scope, a deadline, a client over HTTP that gave up).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import asyncpg
import pytest
from fastmcp import Client

from tests.helpers import service_env
from tests.server_process import ServerProcess
from wellhead.config import parse_settings
from wellhead.errors import ConfigError, InvalidRequest, QueryFailed, QueryTimeout
from wellhead.sources import postgres as pg_module
from wellhead.sources._pg import FIRST_CHUNK_WIDE, RESET_SQL, parse_iso_duration
from wellhead.sources.base import Interval
from wellhead.sources.postgres import PostgresSource

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]
POOL_MAX = 4


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def ro_dsn() -> str:
    return service_env("WELLHEAD_TEST_PG_DSN", "PostgreSQL", ".ci/postgres.sh")


@pytest.fixture
def admin_dsn() -> str:
    return service_env("WELLHEAD_TEST_PG_ADMIN_DSN", "PostgreSQL", ".ci/postgres.sh")


@pytest.fixture
async def admin(admin_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(admin_dsn)
    try:
        yield conn
    finally:
        await conn.close()


def _name() -> str:
    return f"h{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def source(ro_dsn: str) -> AsyncIterator[PostgresSource]:
    src = PostgresSource(_name(), dsn=ro_dsn, pool_max=POOL_MAX)
    await src.start()
    try:
        yield src
    finally:
        await src.close()


async def _backends(admin: asyncpg.Connection, app: str) -> tuple[int, int]:
    """(backends running something, backends in total) of one wellhead source."""
    row = await admin.fetchrow(
        "SELECT count(*) FILTER (WHERE state = 'active') AS active, count(*) AS total "
        "FROM pg_stat_activity WHERE application_name = $1",
        app,
    )
    assert row is not None
    return int(row["active"]), int(row["total"])


async def _running(admin: asyncpg.Connection, marker: str) -> int:
    return int(
        await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 "
            "AND pid <> pg_backend_pid()",
            f"%{marker}%",
        )
    )


class Sampler:
    """Counts the source's backends every few milliseconds while a test runs; keeps the peak."""

    def __init__(self, dsn: str, app: str) -> None:
        self.dsn, self.app, self.peak, self.samples = dsn, app, 0, 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Sampler:
        conn = await asyncpg.connect(self.dsn)

        async def run() -> None:
            try:
                while True:
                    _, total = await _backends(conn, self.app)
                    self.peak = max(self.peak, total)
                    self.samples += 1
                    await asyncio.sleep(0.005)
            finally:
                await conn.close()

        self._task = asyncio.create_task(run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


# --------------------------------------------------------------------------- cancellation


async def test_50_task_cancels_leave_nothing_running(
    source: PostgresSource, admin: asyncpg.Connection, admin_dsn: str
) -> None:
    app = f"wellhead:{source.name}"
    marker = f"wh-tc-{uuid.uuid4().hex}"
    async with Sampler(admin_dsn, app) as sampler:
        for i in range(50):
            task = asyncio.create_task(
                source.fetch(f"SELECT pg_sleep(8) /* {marker} */", [], max_rows=1, timeout=30)
            )
            await asyncio.sleep(0.001 * (1 + i % 20))  # some in acquire/BEGIN, most in the sleep
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # Cancellation is reported only once the backend stopped: no waiting here.
            assert await _running(admin, marker) == 0, f"round {i}: a pg_sleep still runs"
    active, total = await _backends(admin, app)
    assert active == 0 and total <= POOL_MAX
    assert sampler.samples > 10 and sampler.peak <= POOL_MAX, sampler.peak
    assert (await source.fetch("SELECT 7", [], max_rows=1, timeout=5)).rows == [(7,)]


async def test_50_anyio_scope_cancels_leave_nothing_running(
    source: PostgresSource, admin: asyncpg.Connection, admin_dsn: str
) -> None:
    """The case that used to leak: anyio re-delivers cancellation at every await, so the old
    clean-up was cut short, dropped the socket and left the backend sleeping."""
    app = f"wellhead:{source.name}"
    marker = f"wh-ac-{uuid.uuid4().hex}"
    async with Sampler(admin_dsn, app) as sampler:
        for i in range(50):
            with anyio.move_on_after(0.001 * (1 + i % 20)) as scope:
                await source.fetch(f"SELECT pg_sleep(8) /* {marker} */", [], max_rows=1, timeout=30)
            assert scope.cancelled_caught
            assert await _running(admin, marker) == 0, f"round {i}: a pg_sleep still runs"
    active, total = await _backends(admin, app)
    assert active == 0 and total <= POOL_MAX
    assert sampler.peak <= POOL_MAX, sampler.peak


async def test_concurrent_cancels_never_exceed_the_pool(
    source: PostgresSource, admin: asyncpg.Connection, admin_dsn: str
) -> None:
    app = f"wellhead:{source.name}"
    marker = f"wh-cc-{uuid.uuid4().hex}"

    async def one(i: int) -> None:
        with anyio.move_on_after(0.02 + 0.01 * (i % 5)):
            await source.fetch(f"SELECT pg_sleep(8) /* {marker} */", [], max_rows=1, timeout=30)

    async with Sampler(admin_dsn, app) as sampler:
        for _ in range(5):
            async with anyio.create_task_group() as group:
                for i in range(2 * POOL_MAX):  # twice the pool: half wait for a connection
                    group.start_soon(one, i)
    assert await _running(admin, marker) == 0
    assert sampler.peak <= POOL_MAX, sampler.peak


async def test_deadline_cancels_and_returns_the_connection(
    ro_dsn: str, admin: asyncpg.Connection
) -> None:
    src = PostgresSource(_name(), dsn=ro_dsn, pool_min=1, pool_max=1)
    await src.start()
    try:
        marker = f"wh-dl-{uuid.uuid4().hex}"
        pid = (await src.fetch("SELECT pg_backend_pid()", [], max_rows=1, timeout=5)).rows[0][0]
        for _ in range(5):
            with pytest.raises(QueryTimeout):
                await src.fetch(f"SELECT pg_sleep(8) /* {marker} */", [], max_rows=1, timeout=0.2)
            assert await _running(admin, marker) == 0
        # The same backend served every call: cancelled, rolled back, reset, reused.
        again = await src.fetch("SELECT pg_backend_pid()", [], max_rows=1, timeout=5)
        assert again.rows[0][0] == pid
    finally:
        await src.close()


async def test_a_backend_that_does_not_settle_is_terminated_before_its_slot_is_reused(
    ro_dsn: str,
    admin: asyncpg.Connection,
    admin_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No time at all to settle: every cancelled call takes the terminate path."""
    monkeypatch.setattr(pg_module, "_SETTLE_TIMEOUT", 0.0)
    caplog.set_level(logging.WARNING, logger="wellhead.sources.postgres")
    src = PostgresSource(_name(), dsn=ro_dsn, pool_min=0, pool_max=2)
    await src.start()
    app = f"wellhead:{src.name}"
    marker = f"wh-kill-{uuid.uuid4().hex}"
    try:
        async with Sampler(admin_dsn, app) as sampler:
            for _ in range(6):
                with anyio.move_on_after(0.05):
                    await src.fetch(
                        f"SELECT pg_sleep(8) /* {marker} */", [], max_rows=1, timeout=30
                    )
                assert await _running(admin, marker) == 0
        assert sampler.peak <= 2, sampler.peak
        assert any("terminating it" in r.getMessage() for r in caplog.records)
    finally:
        await src.close()
    assert await _backends(admin, app) == (0, 0)


# --------------------------------------------------------------------------- over real HTTP


@pytest.fixture
def pg_http_server(tmp_path: Path, ro_dsn: str) -> Iterator[tuple[ServerProcess, str]]:
    name = _name()
    config = tmp_path / "wellhead.yaml"
    config.write_text(
        f"sources:\n  {name}:\n    kind: postgres\n    dsn: {ro_dsn}\n    schemas: [public]\n"
        f"    pool: {{min_size: 1, max_size: {POOL_MAX}}}\n"
        "cursor:\n  secret: harden-pg-secret-0123456789abcdef\n"
    )
    server = ServerProcess(config)
    yield server, name
    server.stop()


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_http_client_cancellation_cancels_the_backend(
    pg_http_server: tuple[ServerProcess, str],
    admin: asyncpg.Connection,
    admin_dsn: str,
    mode: str,
) -> None:
    """A real MCP client gives up on calls (anyio scope around `call_tool`): on the handshake
    era that sends `notifications/cancelled`, on 2026-07-28 it closes the request's stream."""
    server, name = pg_http_server
    app = f"wellhead:{name}"
    marker = f"wh-http-{uuid.uuid4().hex}"
    kwargs = {"mode": mode} if mode != "auto" else {}
    async with Client(server.mcp_url, timeout=60, **kwargs) as client:
        async with Sampler(admin_dsn, app) as sampler:
            for i in range(8):
                with anyio.CancelScope() as scope:

                    async def give_up(scope: anyio.CancelScope = scope) -> None:
                        for _ in range(500):  # wait until the statement really runs
                            if await _running(admin, marker):
                                break
                            await anyio.sleep(0.01)
                        scope.cancel()

                    async with anyio.create_task_group() as group:
                        group.start_soon(give_up)
                        await client.call_tool(
                            "query", {"sql": f"SELECT pg_sleep(8), '{marker}' AS m{i}"}
                        )
                assert scope.cancelled_caught
                for _ in range(300):  # the server settles on its own time; 3 s << the 8 s sleep
                    if not await _running(admin, marker):
                        break
                    await anyio.sleep(0.01)
                assert await _running(admin, marker) == 0, f"{mode} round {i}: still running"
        after = await client.call_tool("query", {"sql": "SELECT count(*) FROM orders"})
    assert after.structured_content["rows"] == [[1_000_000]]
    assert sampler.peak <= POOL_MAX, sampler.peak
    active, total = await _backends(admin, app)
    assert active == 0 and total <= POOL_MAX


# --------------------------------------------------------------------------- memory bounds


async def test_wide_rows_stop_at_max_bytes(source: PostgresSource) -> None:
    sql = "SELECT g, repeat('x', 100000) AS blob FROM generate_series(1, 1000) g ORDER BY g"
    batch = await source.fetch(sql, [], max_rows=500, timeout=10, max_bytes=300_000)
    assert batch.more is True
    assert 1 <= len(batch.rows) <= FIRST_CHUNK_WIDE, len(batch.rows)  # not 500 rows of 100 kB
    assert [r[0] for r in batch.rows] == list(range(1, len(batch.rows) + 1))
    whole = await source.fetch(sql, [], max_rows=20, timeout=10)
    assert len(whole.rows) == 20 and whole.more is True


async def test_chunked_fetch_is_the_same_rows_in_the_same_order(source: PostgresSource) -> None:
    sql = "SELECT g, repeat('y', g % 50) AS s FROM generate_series(1, 3000) g ORDER BY g"
    plain = await source.fetch(sql, [], max_rows=2000, timeout=10)
    chunked = await source.fetch(sql, [], max_rows=2000, timeout=10, max_bytes=40_000)
    assert plain.more is True and len(plain.rows) == 2000
    assert chunked.more is True and 100 < len(chunked.rows) < 2000
    assert chunked.rows == plain.rows[: len(chunked.rows)]
    everything = await source.fetch(sql, [], max_rows=5000, timeout=10, max_bytes=10**9)
    assert len(everything.rows) == 3000 and everything.more is False
    assert (await source.fetch(sql, [], max_rows=0, timeout=10, max_bytes=10)).rows == []


async def test_a_cell_over_max_cell_bytes_is_refused_with_advice(ro_dsn: str) -> None:
    src = PostgresSource(_name(), dsn=ro_dsn, max_cell_bytes=1_000_000)
    await src.start()
    try:
        ok = await src.fetch("SELECT repeat('x', 999000) AS doc", [], max_rows=1, timeout=5)
        assert len(ok.rows[0][0]) == 999000
        with pytest.raises(InvalidRequest, match=r"'doc' in row 2 .*max_cell_bytes.*substr"):
            await src.fetch(
                "SELECT repeat('x', 2000000 * (g - 1) + 1) AS doc FROM generate_series(1, 2) g",
                [],
                max_rows=5,
                timeout=5,
            )
        assert (await src.fetch("SELECT 1", [], max_rows=1, timeout=5)).rows == [(1,)]
    finally:
        await src.close()


async def test_work_mem_is_set_per_transaction(ro_dsn: str) -> None:
    src = PostgresSource(_name(), dsn=ro_dsn, work_mem="8MB", pool_max=1)
    await src.start()
    try:
        batch = await src.fetch("SELECT current_setting('work_mem')", [], max_rows=1, timeout=5)
        assert batch.rows == [("8MB",)]
    finally:
        await src.close()
    default = PostgresSource(_name(), dsn=ro_dsn)
    await default.start()
    try:
        batch = await default.fetch("SELECT current_setting('work_mem')", [], max_rows=1, timeout=5)
        assert batch.rows == [("64MB",)]
    finally:
        await default.close()


def test_bad_memory_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="work_mem must be a PostgreSQL size"):
        PostgresSource("pg", dsn="postgresql://x@h/db", work_mem="64MB; DROP TABLE t")
    with pytest.raises(ConfigError, match="temp_file_limit"):
        PostgresSource("pg", dsn="postgresql://x@h/db", temp_file_limit="lots")
    with pytest.raises(ConfigError, match="max_cell_bytes"):
        PostgresSource("pg", dsn="postgresql://x@h/db", max_cell_bytes=10)


def test_every_config_key_reaches_the_source() -> None:
    settings = parse_settings(
        {
            "sources": {
                "pg": {
                    "kind": "postgres",
                    "dsn": "postgresql://x@h/db",
                    "work_mem": "16MB",
                    "temp_file_limit": None,
                    "max_cell_bytes": 2048,
                }
            },
            "cursor": {"secret": "harden-pg-secret-0123456789abcdef"},
        }
    )
    config = settings.sources["pg"]
    src = PostgresSource.from_config("pg", config, query_timeout_s=3)  # type: ignore[arg-type]
    assert (src._work_mem, src._temp_file_limit, src._max_cell_bytes) == ("'16MB'", None, 2048)


async def test_temp_file_limit_without_the_right_is_a_startup_warning(
    ro_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="wellhead.sources.postgres")
    src = PostgresSource(_name(), dsn=ro_dsn, pool_max=1)
    await src.start()
    try:
        warned = [r.getMessage() for r in caplog.records if "temp_file_limit" in r.getMessage()]
        assert warned and "GRANT SET ON PARAMETER temp_file_limit" in warned[0]
        assert "wellhead_ro_pw" not in warned[0]
        batch = await src.fetch(
            "SELECT current_setting('temp_file_limit')", [], max_rows=1, timeout=5
        )
        assert batch.rows == [("-1",)]  # left at the server's value, and the call works
    finally:
        await src.close()


async def test_temp_file_limit_applies_where_the_role_may_set_it(admin_dsn: str) -> None:
    src = PostgresSource(
        _name(), dsn=admin_dsn, allow_privileged_role=True, schemas=["sales"], pool_max=1
    )
    await src.start()
    try:
        batch = await src.fetch(
            "SELECT current_setting('temp_file_limit'), current_setting('work_mem')",
            [],
            max_rows=1,
            timeout=5,
        )
        assert batch.rows == [("1GB", "64MB")]
        after = await src.fetch(
            "SELECT current_setting('temp_file_limit')", [], max_rows=1, timeout=5
        )
        assert after.rows == [("1GB",)]
    finally:
        await src.close()


# --------------------------------------------------------------------------- values


async def test_intervals_keep_months_days_and_time_apart(source: PostgresSource) -> None:
    batch = await source.fetch(
        "SELECT interval '1 month', interval '30 days', interval '1 mon -2 days 03:00:00.5', "
        "ARRAY[interval '1 year']",
        [],
        max_rows=1,
        timeout=5,
    )
    a, b, c, arr = batch.rows[0]
    assert a == Interval(months=1) and b == Interval(days=30) and a != b
    assert c == Interval(months=1, days=-2, microseconds=10_800_500_000)
    assert arr == [Interval(months=12)]
    back = await source.fetch(
        "SELECT $1::interval = interval '1 mon 2 days 01:00', $1::interval",
        ["P1M2DT1H"],
        max_rows=1,
        timeout=5,
    )
    assert back.rows == [(True, Interval(months=1, days=2, microseconds=3_600_000_000))]
    with pytest.raises(InvalidRequest, match=r"\$1 must be a interval"):
        await source.fetch("SELECT $1::interval", ["a while"], max_rows=1, timeout=5)
    assert parse_iso_duration("P-1M2DT-0.5S") == Interval(-1, 2, -500_000)


# --------------------------------------------------------------------------- speed, kept safe


async def test_prepared_statements_are_reused_and_sql_prepared_ones_are_not(
    ro_dsn: str,
) -> None:
    """The reset keeps asyncpg's protocol-level statements (no Parse per call) but deallocates
    what SQL PREPARE made, and a repeated statement really is served from the cache."""
    src = PostgresSource(_name(), dsn=ro_dsn, pool_min=1, pool_max=1)
    await src.start()
    try:
        sql = "SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql AND statement = $1"
        first = await src.fetch(sql, ["x"], max_rows=1, timeout=5)
        await src.fetch("PREPARE poison_stmt AS SELECT 2", [], max_rows=1, timeout=5)
        mine = await src.fetch(
            "SELECT statement FROM pg_prepared_statements WHERE NOT from_sql",
            [],
            max_rows=50,
            timeout=5,
        )
        assert sql in {r[0] for r in mine.rows}, "the earlier statement was kept prepared"
        from_sql = await src.fetch(
            "SELECT count(*) FROM pg_prepared_statements WHERE from_sql", [], max_rows=1, timeout=5
        )
        assert from_sql.rows == [(0,)]
        assert first.rows == [(0,)]
    finally:
        await src.close()


def test_reset_covers_what_discard_all_resets_but_prepared_protocol_statements() -> None:
    for part in (
        "CLOSE ALL",
        "SET SESSION AUTHORIZATION DEFAULT",
        "RESET ALL",
        "UNLISTEN *",
        "pg_advisory_unlock_all()",
        "DISCARD TEMP",
        "DISCARD SEQUENCES",
        "DEALLOCATE",
    ):
        assert part in RESET_SQL, part
    assert "DISCARD ALL" not in RESET_SQL and "DEALLOCATE ALL" not in RESET_SQL


async def test_a_table_changing_shape_under_a_cached_statement_is_re_prepared(
    source: PostgresSource, admin: asyncpg.Connection
) -> None:
    table = f"public.reshaped_{uuid.uuid4().hex[:8]}"
    await admin.execute(f"CREATE TABLE {table} (a int); INSERT INTO {table} VALUES (1)")
    await admin.execute(f"GRANT SELECT ON {table} TO wellhead_ro")
    try:
        sql = f"SELECT * FROM {table}"
        for _ in range(POOL_MAX + 1):  # every pooled connection caches it
            assert (await source.fetch(sql, [], max_rows=5, timeout=5)).rows == [(1,)]
        await admin.execute(f"ALTER TABLE {table} ADD COLUMN b text DEFAULT 'new'")
        for _ in range(POOL_MAX + 1):
            assert (await source.fetch(sql, [], max_rows=5, timeout=5)).rows == [(1, "new")]
    finally:
        await admin.execute(f"DROP TABLE {table}")


async def test_what_a_call_sets_for_the_session_ends_with_its_transaction(admin_dsn: str) -> None:
    """The cheap end-of-call reset relies on ROLLBACK reverting session-level settings, role
    and session authorization included; a superuser (allowed by flag) tries all three."""
    src = PostgresSource(
        _name(), dsn=admin_dsn, allow_privileged_role=True, schemas=["sales"], pool_max=1
    )
    await src.start()
    try:
        before = await src.fetch(
            "SELECT pg_backend_pid(), current_user, session_user", [], max_rows=1, timeout=5
        )
        for sql in [
            "SELECT set_config('role', 'wellhead_ro', false)",
            "SELECT set_config('session_authorization', 'wellhead_ro', false)",
            "SELECT set_config('work_mem', '9MB', false), "
            "set_config('search_path', 'sales', false)",
            "SELECT pg_advisory_lock(77)",
        ]:
            await src.fetch(sql, [], max_rows=1, timeout=5)
        after = await src.fetch(
            "SELECT pg_backend_pid(), current_user, session_user", [], max_rows=1, timeout=5
        )
        assert after.rows == before.rows  # same backend, same identity
        state = await src.fetch(
            "SELECT current_setting('work_mem'), current_setting('search_path'), "
            "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
            "AND pid = pg_backend_pid())",
            [],
            max_rows=1,
            timeout=5,
        )
        assert state.rows == [("64MB", '"$user", public', 0)]
    finally:
        await src.close()


async def test_a_query_over_temp_file_limit_fails_with_advice(admin_dsn: str) -> None:
    src = PostgresSource(
        _name(),
        dsn=admin_dsn,
        allow_privileged_role=True,
        schemas=["sales"],
        work_mem="64kB",
        temp_file_limit="1MB",
        pool_max=1,
    )
    await src.start()
    try:
        with pytest.raises(QueryFailed, match="more temporary disk.*raise temp_file_limit"):
            await src.fetch(
                "SELECT g, md5(g::text) FROM generate_series(1, 500000) g ORDER BY 2",
                [],
                max_rows=5,
                timeout=20,
            )
        assert (await src.fetch("SELECT 1", [], max_rows=1, timeout=5)).rows == [(1,)]
    finally:
        await src.close()
