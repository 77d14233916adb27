"""The demo dataset: shape, keys, comments, determinism, reuse and cross-process safety.

One build per module (the `demo_db` fixture) plus one concurrent build (two processes racing on a
fresh directory) that doubles as the second build for the determinism check.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import platformdirs
import pytest

from wellhead.demo import (
    DEMO_COUNTS,
    DEMO_SCHEMA_VERSION,
    DEMO_TABLES,
    demo_database_path,
    ensure_demo_database,
)
from wellhead.demo import build as build_module
from wellhead.errors import SourceUnavailable

# Pinned facts about version DEMO_SCHEMA_VERSION of the data. If a change to the generator moves
# them, bump DEMO_SCHEMA_VERSION (so cached files of the old version are not reused) and update.
PINNED = {"order_items": 1_998_778, "orders_total_sum": "719032303.26"}


def _connect(path: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(path), read_only=True)


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> tuple:
    rows = con.execute(sql).fetchall()
    assert len(rows) == 1
    return rows[0]


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    return _one(con, sql)[0]


def _fingerprint(path: Path) -> dict[str, tuple]:
    """Row count and an order-sensitive hash of every row (rowid included) for each table."""
    con = _connect(path)
    try:
        return {
            t: _one(con, f"SELECT count(*), sum(hash(rowid, t)::HUGEINT) FROM {t} AS t")
            for t in DEMO_TABLES
        }
    finally:
        con.close()


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_demo_database(tmp_path_factory.mktemp("demo-cache"))


@pytest.fixture(scope="module")
def con(demo_db: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = _connect(demo_db)
    yield connection
    connection.close()


_RACER = textwrap.dedent(
    """
    import json, logging, os, sys, time
    from pathlib import Path

    records = []
    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())
    logging.getLogger("wellhead.demo").addHandler(Keep())
    logging.getLogger("wellhead.demo").setLevel(logging.INFO)

    from wellhead.demo import ensure_demo_database
    start_at = float(sys.argv[2])
    while time.time() < start_at:  # both racers leave the gate together
        time.sleep(0.001)
    path = ensure_demo_database(Path(sys.argv[1]))
    print(json.dumps({"path": str(path), "ino": os.stat(path).st_ino, "logs": records}))
    """
)


@pytest.fixture(scope="module")
def raced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict]]:
    """Two processes call ensure_demo_database on one empty cache dir at the same moment."""
    cache = tmp_path_factory.mktemp("demo-race")
    # A half-written file left by a crashed builder must be cleaned up, not reused.
    stale = cache / f"demo-v{DEMO_SCHEMA_VERSION}.duckdb.tmp-999999"
    stale.write_bytes(b"garbage from a crashed build")
    # Files of an older demo version are removed once the new one is in place.
    older = cache / "demo-v1.duckdb"
    older.write_bytes(b"an older version")
    (cache / "demo-v1.duckdb.lock").touch()
    start_at = str(time.time() + 2.0)
    env = {**os.environ, "WELLHEAD_CACHE_DIR": "/nonexistent-must-not-be-used"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(cache), start_at],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return cache, stale, results


def test_row_counts(con: duckdb.DuckDBPyConnection) -> None:
    counts = {t: _scalar(con, f"SELECT count(*) FROM {t}") for t in DEMO_TABLES}
    assert counts["orders"] == 1_000_000
    assert counts["customers"] == DEMO_COUNTS["customers"] == 50_000
    assert counts["products"] == DEMO_COUNTS["products"] == 2_000
    assert 1_900_000 <= counts["order_items"] <= 2_600_000
    assert set(counts) == {"customers", "products", "orders", "order_items"}


def test_tables_and_columns(con: duckdb.DuckDBPyConnection) -> None:
    cols = con.execute(
        "SELECT table_name, column_name, data_type FROM duckdb_columns() "
        "WHERE database_name = current_database() ORDER BY table_name, column_index"
    ).fetchall()
    by_table: dict[str, list[tuple[str, str]]] = {}
    for table, column, dtype in cols:
        by_table.setdefault(table, []).append((column, dtype))
    assert sorted(by_table) == sorted(DEMO_TABLES)
    assert [c for c, _ in by_table["customers"]] == [
        "customer_id", "name", "email", "country", "region", "signup_date", "segment",
    ]  # fmt: skip
    assert dict(by_table["products"])["price"] == "DECIMAL(10,2)"
    orders = dict(by_table["orders"])
    assert orders["total"] == "DECIMAL(12,2)"
    assert orders["ordered_at"] == "TIMESTAMP"
    assert set(orders) == {"order_id", "customer_id", "ordered_at", "status", "total", "channel"}
    assert [c for c, _ in by_table["order_items"]] == [
        "order_id", "line_no", "product_id", "quantity", "unit_price",
    ]  # fmt: skip


def test_primary_and_foreign_keys_declared(con: duckdb.DuckDBPyConnection) -> None:
    rows = con.execute(
        "SELECT table_name, constraint_type, constraint_column_names, "
        "referenced_table, referenced_column_names FROM duckdb_constraints() "
        "WHERE constraint_type IN ('PRIMARY KEY', 'FOREIGN KEY')"
    ).fetchall()
    keys = {(t, k, tuple(cols), ref, tuple(refcols or ())) for t, k, cols, ref, refcols in rows}
    assert keys == {
        ("customers", "PRIMARY KEY", ("customer_id",), None, ()),
        ("products", "PRIMARY KEY", ("product_id",), None, ()),
        ("orders", "PRIMARY KEY", ("order_id",), None, ()),
        ("order_items", "PRIMARY KEY", ("order_id", "line_no"), None, ()),
        ("orders", "FOREIGN KEY", ("customer_id",), "customers", ("customer_id",)),
        ("order_items", "FOREIGN KEY", ("order_id",), "orders", ("order_id",)),
    }
    # Not declared (its index would cost a quarter of the build, see build.py); documented instead.
    comment = _scalar(
        con,
        "SELECT comment FROM duckdb_columns() "
        "WHERE table_name = 'order_items' AND column_name = 'product_id'",
    )
    assert "products.product_id" in comment


def test_data_is_consistent(con: duckdb.DuckDBPyConnection) -> None:
    # No orphan lines; every order has lines and its total is exactly the sum of its lines.
    orphans = "SELECT count(*) FROM order_items LEFT JOIN orders USING (order_id)"
    assert _scalar(con, orphans + " WHERE orders.order_id IS NULL") == 0
    line_sums = "SELECT order_id, sum(quantity * unit_price) AS s FROM order_items GROUP BY 1"
    totals = f"SELECT count(*) FROM orders o LEFT JOIN ({line_sums}) l USING (order_id)"
    assert _scalar(con, totals + " WHERE l.s IS DISTINCT FROM o.total") == 0
    # Line prices are the product's list price; customers order only after signing up.
    prices = "SELECT count(*) FROM order_items i LEFT JOIN products p USING (product_id)"
    assert _scalar(con, prices + " WHERE i.unit_price IS DISTINCT FROM p.price") == 0
    signups = "SELECT count(*) FROM orders o JOIN customers c USING (customer_id)"
    assert _scalar(con, signups + " WHERE c.signup_date >= CAST(o.ordered_at AS DATE)") == 0
    statuses = {r[0] for r in con.execute("SELECT DISTINCT status FROM orders").fetchall()}
    assert statuses == {"pending", "paid", "shipped", "delivered", "cancelled", "returned"}
    span = _one(con, "SELECT min(ordered_at)::DATE, max(ordered_at)::DATE FROM orders")
    assert span == (dt.date(2022, 1, 1), dt.date(2024, 12, 31))


def test_rows_are_stored_in_key_order(con: duckdb.DuckDBPyConnection) -> None:
    # Plain scans come back in key order, and order_id order is time order.
    assert _scalar(con, "SELECT count(*) FROM orders WHERE rowid + 1 <> order_id") == 0
    ranked = "SELECT rowid AS r, row_number() OVER (ORDER BY order_id, line_no) - 1 AS k"
    assert _scalar(con, f"SELECT count(*) FROM ({ranked} FROM order_items) WHERE r <> k") == 0
    prev = "SELECT ordered_at AS t, lag(ordered_at) OVER (ORDER BY order_id) AS p FROM orders"
    assert _scalar(con, f"SELECT count(*) FROM ({prev}) WHERE p >= t") == 0


def test_comments_for_agents(con: duckdb.DuckDBPyConnection) -> None:
    tables = dict(con.execute("SELECT table_name, comment FROM duckdb_tables()").fetchall())
    for t in DEMO_TABLES:
        assert tables[t], f"table {t} has no comment"
    commented = con.execute(
        "SELECT table_name, column_name FROM duckdb_columns() WHERE comment IS NOT NULL"
    ).fetchall()
    assert {t for t, _ in commented} == set(DEMO_TABLES)
    assert ("orders", "status") in commented


def test_pinned_to_schema_version(con: duckdb.DuckDBPyConnection) -> None:
    assert DEMO_SCHEMA_VERSION == 2, "new version: re-pin PINNED for it"
    assert _scalar(con, "SELECT count(*) FROM order_items") == PINNED["order_items"]
    assert str(_scalar(con, "SELECT sum(total) FROM orders")) == PINNED["orders_total_sum"]


def test_reuse_does_not_rebuild(demo_db: Path, caplog: pytest.LogCaptureFixture) -> None:
    before = demo_db.stat()
    with caplog.at_level("INFO", logger="wellhead.demo"):
        again = ensure_demo_database(demo_db.parent)
    after = demo_db.stat()
    assert again == demo_db
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        before.st_ino,
        before.st_mtime_ns,
        before.st_size,
    )
    assert not [r for r in caplog.records if r.name == "wellhead.demo"]


def test_versioned_file_name_and_no_leftovers(demo_db: Path) -> None:
    assert demo_db.name == f"demo-v{DEMO_SCHEMA_VERSION}.duckdb"
    leftovers = {p.name for p in demo_db.parent.iterdir()} - {demo_db.name, demo_db.name + ".lock"}
    assert leftovers == set()


def test_cache_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"demo-v{DEMO_SCHEMA_VERSION}.duckdb"
    monkeypatch.delenv("WELLHEAD_CACHE_DIR", raising=False)
    assert demo_database_path() == Path(platformdirs.user_cache_dir("wellhead")) / name
    monkeypatch.setenv("WELLHEAD_CACHE_DIR", str(tmp_path / "env"))
    assert demo_database_path() == tmp_path / "env" / name
    assert demo_database_path(tmp_path / "arg") == tmp_path / "arg" / name


def test_concurrent_processes_share_one_build(raced: tuple[Path, Path, list[dict]]) -> None:
    cache, stale, results = raced
    expected = cache / f"demo-v{DEMO_SCHEMA_VERSION}.duckdb"
    assert [r["path"] for r in results] == [str(expected)] * 2
    assert results[0]["ino"] == results[1]["ino"] == expected.stat().st_ino
    built = [m for r in results for m in r["logs"] if m.startswith("built demo database")]
    assert len(built) == 1, results  # one process built; the other waited and reused it
    assert str(expected) in built[0] and " s" in built[0]
    assert not stale.exists()
    assert {p.name for p in cache.iterdir()} == {expected.name, expected.name + ".lock"}
    con = _connect(expected)
    try:
        assert _scalar(con, "SELECT count(*) FROM orders") == 1_000_000
    finally:
        con.close()


def test_two_builds_are_identical(demo_db: Path, raced: tuple[Path, Path, list[dict]]) -> None:
    cache, _, _ = raced
    other = cache / demo_db.name
    assert other != demo_db
    first, second = _fingerprint(demo_db), _fingerprint(other)
    assert first == second
    assert first["orders"][0] == 1_000_000


def test_unwritable_cache_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(SourceUnavailable) as info:
        ensure_demo_database(blocker / "cache")
    assert "WELLHEAD_CACHE_DIR" in str(info.value)
    assert str(blocker / "cache") in str(info.value)


def test_failed_build_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault injection: a build step the engine rejects, after a table was already written.
    broken = [
        build_module._Step("create", "CREATE TABLE half_done AS SELECT 1 AS x"),
        build_module._Step("boom", "SELECT * FROM no_such_table"),
    ]
    monkeypatch.setattr(build_module, "_build_steps", lambda: broken)
    with pytest.raises(SourceUnavailable, match="no_such_table"):
        ensure_demo_database(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {f"demo-v{DEMO_SCHEMA_VERSION}.duckdb.lock"}
