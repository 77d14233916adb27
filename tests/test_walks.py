"""Walks over result snapshots (issue 12 item 1): one consistent result while writers write.

Real engines throughout: a SQLite file written by another process, and PostgreSQL written
through the writer role while the reader role walks. Each writer transaction moves one unit
of balance from a row in the first quarter of the table to a row in the last quarter and
inserts a new row with the next generation number, so a walk that holds the rows of one
consistent state has: the initial sum of balances, generations 1..g without a gap for some g,
and 1,000,000 + g rows, in id order. The control walk pages by OFFSET (snapshots off) with
the same writer and shows the check fails there: moves made after the walk passed their
source row but before it reached their target row are counted once, the sum grows.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import service_env

from wellhead.config import LimitsConfig
from wellhead.errors import CursorError
from wellhead.sources.base import Source
from wellhead.sources.postgres import PostgresSource
from wellhead.sources.sqlite import SQLiteSource
from wellhead.spill.store import SnapshotStore
from wellhead.sql.executor import NOT_FOUND, PageRequest, QueryExecutor
from wellhead.sql.paging import CursorCodec
from wellhead.sql.snapshots import Snapshots

ROWS = 1_000_000
BALANCE = 100
PAGE = {"max_rows": 2_000, "budget_bytes": 262_144}
SQL = "SELECT id, balance, gen FROM acct ORDER BY id"
SECRET = b"walks-test-cursor-secret-0123456789"

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


WRITER = textwrap.dedent(
    """
    import random, sqlite3, sys, time
    path, progress, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    gen = 0
    while True:
        a, b = random.randint(1, n // 4), random.randint(3 * n // 4, n)
        gen += 1
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE acct SET balance = balance - 1 WHERE id = ?", (a,))
        conn.execute("UPDATE acct SET balance = balance + 1 WHERE id = ?", (b,))
        conn.execute("INSERT INTO acct VALUES (?, 0, ?)", (n + gen, gen))
        conn.execute("COMMIT")
        with open(progress, "w") as fh:
            fh.write(str(gen))
        time.sleep(0.002)
    """
)


def executor(source: Source, spill: Path | None, **limits: Any) -> QueryExecutor:
    snapshots = None
    if spill is not None:
        snapshots = Snapshots(SnapshotStore(spill), spill_timeout_s=120, max_row_bytes=262_144)
    config = LimitsConfig(query_timeout_s=120, **limits)
    return QueryExecutor({source.name: source}, config, CursorCodec(SECRET), snapshots=snapshots)


async def walk(
    ex: QueryExecutor,
    source: str,
    *,
    owner: str | None = None,
    midway: Any = None,
    sql: str = SQL,
) -> tuple[list[list[Any]], int]:
    """Every page of `sql`; `midway()` is awaited once the walk is past half the rows."""
    page = await ex.run(PageRequest("query", source, sql, {}, owner=owner, **PAGE))
    rows, pages = list(page.rows), 1
    while page.next_cursor:
        if midway is not None and len(rows) > ROWS // 2:
            await midway()
            midway = None
        state = ex.resume(page.next_cursor, tool="query", sql=None, source=None, owner=owner)
        page = await ex.run(
            PageRequest(
                "query",
                state.source,
                state.sql,
                state.params,
                state.offset,
                state.total,
                owner=owner,
                column_types=state.column_types,
                snapshot=state.snapshot,
                **PAGE,
            )
        )
        rows.extend(page.rows)
        pages += 1
    return rows, pages


def consistent(rows: list[list[Any]], n: int) -> tuple[bool, str]:
    """Whether `rows` are one state of the table the writer keeps (see the module doc)."""
    ids = [r[0] for r in rows]
    gens = sorted(r[2] for r in rows if r[2])
    total = sum(r[1] for r in rows)
    detail = f"{len(rows)} rows, sum {total}, generations up to {gens[-1] if gens else 0}"
    ok = (
        ids == sorted(set(ids))
        and total == n * BALANCE
        and gens == list(range(1, len(gens) + 1))
        and len(rows) == n + len(gens)
    )
    return ok, detail


# ------------------------------------------------------------------------------ SQLite


def make_sqlite(path: Path, n: int) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(
        f"""
        PRAGMA journal_mode = WAL;
        CREATE TABLE acct (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, gen INTEGER);
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n})
        INSERT INTO acct SELECT i, {BALANCE}, NULL FROM n;
        """
    )
    conn.commit()
    conn.close()


class Writer:
    """The writer process; `progress()` is how many transactions it has committed."""

    def __init__(self, path: Path, n: int, tmp: Path) -> None:
        self.file = tmp / "progress"
        self.file.write_text("0")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(self.file), str(n)]
        )

    def progress(self) -> int:
        text = self.file.read_text()
        return int(text) if text else 0

    async def advance(self, by: int = 5) -> None:
        """Wait until the writer has committed `by` more transactions (it must be writing)."""
        start = self.progress()
        deadline = time.monotonic() + 30
        while self.progress() < start + by:
            assert self.proc.poll() is None, "the writer process died"
            assert time.monotonic() < deadline, "the writer made no progress"
            await asyncio.sleep(0.02)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


async def test_sqlite_walk_of_a_million_rows_is_one_snapshot_while_another_process_writes(
    tmp_path: Path,
) -> None:
    db = tmp_path / "acct.sqlite"
    make_sqlite(db, ROWS)
    src = SQLiteSource("lite", path=str(db))
    await src.start()
    writer = Writer(db, ROWS, tmp_path)
    try:
        await writer.advance()
        ex = executor(src, tmp_path / "spill")
        before = writer.progress()
        rows, pages = await walk(ex, "lite", midway=writer.advance)
        assert writer.progress() > before + 5  # it wrote while the walk ran, midway included
    finally:
        writer.stop()
        await src.close()
    ok, detail = consistent(rows, ROWS)
    assert ok, detail
    assert pages >= len(rows) // PAGE["max_rows"]
    assert [r[1] for r in rows[:3]] != []


async def test_sqlite_offset_walk_with_the_same_writer_is_torn(tmp_path: Path) -> None:
    """The control: without a snapshot the same check fails (so it can fail)."""
    n = 40_000
    db = tmp_path / "acct.sqlite"
    make_sqlite(db, n)
    src = SQLiteSource("lite", path=str(db))
    await src.start()
    writer = Writer(db, n, tmp_path)
    ex = executor(src, None)
    try:
        page = await ex.run(PageRequest("query", "lite", SQL, {}, **PAGE))
        rows = list(page.rows)
        while page.next_cursor:
            if n // 2 < len(rows) < n // 2 + PAGE["max_rows"] + 1:
                await writer.advance()  # moves from rows already read to rows not yet read
            state = ex.resume(page.next_cursor, tool="query", sql=None, source=None)
            page = await ex.run(
                PageRequest(
                    "query",
                    "lite",
                    SQL,
                    {},
                    state.offset,
                    state.total,
                    column_types=state.column_types,
                    **PAGE,
                )
            )
            rows.extend(page.rows)
    finally:
        writer.stop()
        await src.close()
    ok, detail = consistent(rows, n)
    assert not ok, detail
    assert sum(r[1] for r in rows) > n * BALANCE


# -------------------------------------------------------------------------- PostgreSQL


async def test_postgres_walk_of_a_million_rows_is_one_snapshot_while_the_writer_writes(
    tmp_path: Path,
) -> None:
    import asyncpg

    admin_dsn = service_env("WELLHEAD_TEST_PG_ADMIN_DSN", "PostgreSQL", ".ci/postgres.sh")
    ro_dsn = service_env("WELLHEAD_TEST_PG_DSN", "PostgreSQL", ".ci/postgres.sh")
    writer_dsn = service_env("WELLHEAD_TEST_PG_WRITER_DSN", "PostgreSQL", ".ci/postgres.sh")
    schema = f"walks_{os.getpid()}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(
        f"""
        CREATE SCHEMA {schema};
        CREATE TABLE {schema}.acct (id bigint PRIMARY KEY, balance int NOT NULL, gen int);
        INSERT INTO {schema}.acct SELECT i, {BALANCE}, NULL FROM generate_series(1, {ROWS}) i;
        GRANT USAGE ON SCHEMA {schema} TO wellhead_ro, wellhead_writer;
        GRANT SELECT ON {schema}.acct TO wellhead_ro;
        GRANT SELECT, INSERT, UPDATE ON {schema}.acct TO wellhead_writer;
        """
    )
    src = PostgresSource("pg", dsn=ro_dsn, schemas=[schema], pool_max=2)
    written = 0
    stop = asyncio.Event()

    async def write() -> None:
        nonlocal written
        conn = await asyncpg.connect(writer_dsn)
        try:
            rng = __import__("random").Random(7)
            while not stop.is_set():
                a, b = rng.randint(1, ROWS // 4), rng.randint(3 * ROWS // 4, ROWS)
                async with conn.transaction():
                    await conn.execute(
                        f"UPDATE {schema}.acct SET balance = balance - 1 WHERE id = $1", a
                    )
                    await conn.execute(
                        f"UPDATE {schema}.acct SET balance = balance + 1 WHERE id = $1", b
                    )
                    await conn.execute(
                        f"INSERT INTO {schema}.acct VALUES ($1, 0, $2)",
                        ROWS + written + 1,
                        written + 1,
                    )
                written += 1
                await asyncio.sleep(0.002)
        finally:
            await conn.close()

    async def advance() -> None:
        start = written
        deadline = time.monotonic() + 30
        while written < start + 5:
            assert time.monotonic() < deadline, "the writer made no progress"
            await asyncio.sleep(0.02)

    task = asyncio.create_task(write())
    try:
        await src.start()
        await advance()
        ex = executor(src, tmp_path / "spill")
        before = written
        rows, _ = await walk(ex, "pg", midway=advance, sql=SQL.replace("acct", f"{schema}.acct"))
        assert written > before + 5
    finally:
        stop.set()
        await task
        await src.close()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()
    ok, detail = consistent(rows, ROWS)
    assert ok, detail


# ------------------------------------------------------------------ isolation, expiry


@pytest.fixture
async def small_sqlite(tmp_path: Path) -> Any:
    db = tmp_path / "small.sqlite"
    make_sqlite(db, 10_000)
    src = SQLiteSource("lite", path=str(db))
    await src.start()
    yield src
    await src.close()


def request_from(ex: QueryExecutor, cursor: str, owner: str | None) -> PageRequest:
    state = ex.resume(cursor, tool="query", sql=None, source=None, owner=owner)
    return PageRequest(
        "query",
        state.source,
        state.sql,
        state.params,
        state.offset,
        state.total,
        owner=owner,
        column_types=state.column_types,
        snapshot=state.snapshot,
        **PAGE,
    )


async def test_a_snapshot_is_its_callers_only(small_sqlite: SQLiteSource, tmp_path: Path) -> None:
    ex = executor(small_sqlite, tmp_path / "spill")
    first = await ex.run(PageRequest("query", "lite", SQL, {}, owner="alice", **PAGE))
    cursor = first.next_cursor
    assert cursor and ex.codec.decode(cursor).snapshot
    assert first.total_rows == 10_000
    # another principal or session holding alice's cursor: not found
    for other in ("bob", None):
        with pytest.raises(CursorError) as caught:
            ex.resume(cursor, tool="query", sql=None, source=None, owner=other)
        assert caught.value.public_message == NOT_FOUND
    # and the snapshot id under another caller's name names nothing (the store checks too)
    state = ex.codec.decode(cursor)
    forged = PageRequest(
        "query",
        "lite",
        SQL,
        {},
        state.offset,
        state.total,
        owner="bob",
        column_types=state.column_types,
        snapshot=state.snapshot,
        **PAGE,
    )
    with pytest.raises(CursorError) as caught:
        await ex.run(forged)
    assert "run the query again without a cursor" in caught.value.public_message
    second = await ex.run(request_from(ex, cursor, "alice"))
    assert second.rows[0][0] == first.rows[-1][0] + 1


async def test_an_expired_snapshot_says_how_to_restart(
    small_sqlite: SQLiteSource, tmp_path: Path
) -> None:
    ex = executor(small_sqlite, tmp_path / "spill")
    first = await ex.run(PageRequest("query", "lite", SQL, {}, owner="alice", **PAGE))
    for path in (tmp_path / "spill").rglob("*.parquet"):
        path.unlink()  # evicted or expired: the same to the walker
    with pytest.raises(CursorError) as caught:
        await ex.run(request_from(ex, first.next_cursor or "", "alice"))
    message = caught.value.public_message
    assert "snapshot is gone" in message and "run the query again without a cursor" in message


async def test_a_result_too_big_to_spill_pages_by_offset_exactly(
    small_sqlite: SQLiteSource, tmp_path: Path
) -> None:
    ex = executor(small_sqlite, None)
    ex.snapshots = Snapshots(
        SnapshotStore(tmp_path / "spill", max_rows=5_000), spill_timeout_s=60, max_row_bytes=262_144
    )
    first = await ex.run(PageRequest("query", "lite", SQL, {}, **PAGE))
    assert first.next_cursor and ex.codec.decode(first.next_cursor).snapshot is None
    rows, _ = await walk(ex, "lite")
    assert [r[0] for r in rows] == list(range(1, 10_001))
    assert not list((tmp_path / "spill").rglob("*.parquet*"))  # the partial spill was removed


async def test_snapshot_pages_match_offset_pages(
    small_sqlite: SQLiteSource, tmp_path: Path
) -> None:
    """The same rows, in the same order, with the same totals, whichever way pages come."""
    sql = "SELECT id, balance * 1.5 AS b, 'x' || id AS s, NULL AS z FROM acct ORDER BY id DESC"
    snap_rows, snap_pages = await walk(executor(small_sqlite, tmp_path / "spill"), "lite", sql=sql)
    offset_rows, _ = await walk(executor(small_sqlite, None), "lite", sql=sql)
    assert snap_rows == offset_rows
    assert len(snap_rows) == 10_000 and snap_pages == 5


async def test_an_unwritable_spill_directory_pages_without_snapshots(
    small_sqlite: SQLiteSource, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the spill directory should be")
    ex = executor(small_sqlite, blocker)
    first = await ex.run(PageRequest("query", "lite", SQL, {}, **PAGE))
    assert first.next_cursor and ex.codec.decode(first.next_cursor).snapshot is None
    rows, _ = await walk(ex, "lite")
    assert [r[0] for r in rows] == list(range(1, 10_001))
