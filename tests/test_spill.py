"""The spill store and its row encoder (wellhead/spill): exact text, bounds, isolation."""

from __future__ import annotations

import datetime as dt
import decimal
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from wellhead.sources.base import Interval
from wellhead.spill.rows import encode_column, encode_rows
from wellhead.spill.store import (
    ROW_GROUP_ROWS,
    SnapshotGone,
    SnapshotStore,
    SnapshotTooBig,
)
from wellhead.sql import encoding

D = decimal.Decimal

COLUMNS: dict[str, list[Any]] = {
    "ints": [0, 1, -1, 2**53 - 1, -(2**53 - 1), 42, None],
    "big ints": [1, 2**53, -(2**53) - 5, 10**30],
    "floats": [0.0, -0.0, 1.5, 1e16, 1e-7, 100.0, 2.0**-1074, None],
    "non-finite floats": [1.0, float("nan"), float("inf"), float("-inf")],
    "strings": [
        "",
        "plain",
        'quo"te',
        "back\\slash",
        "new\nline",
        "\x00\x1f\x7f",
        "é✓😀",
        "\u2028",
        "</script>",
        None,
    ],
    "bools": [True, False, None],
    "datetimes": [
        dt.datetime(2024, 1, 2, 3, 4, 5),
        dt.datetime(2024, 1, 2, 3, 4, 5, 600),
        dt.datetime(1, 1, 1),
        dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    ],
    "dates": [dt.date(2024, 2, 29), dt.date(1, 1, 1), None],
    "times": [dt.time(0, 0), dt.time(23, 59, 59, 999999)],
    "decimals": [
        D("12.30"),
        D("0"),
        D("-0.00"),
        D("0.1"),
        D("123456789012345678.9"),
        D("0.00001"),
        D("1E+400"),
        D("NaN"),
        D("Infinity"),
        D("-Infinity"),
        None,
    ],
    "signalling decimal": [D("1.5"), D("sNaN")],
    "mixed": [1, "1", 1.0, True, None, D("2.5")],
    "other types": [
        b"\x00\xff",
        uuid.UUID(int=7),
        Interval(1, 2, 3),
        {"a": [1, D("0.5")]},
        [1, "x"],
        None,
    ],
    "all null": [None, None],
    "bool and int": [True, 1, 0, False],
}


def reference(values: list[Any]) -> list[str]:
    return [encoding.dumps(encoding.to_json_value(v)) for v in values]


@pytest.mark.parametrize("name", list(COLUMNS))
def test_column_encoding_is_the_reference_encoding(name: str) -> None:
    values = COLUMNS[name]
    assert encode_column(values) == reference(values)


def test_rows_join_to_the_json_of_each_row() -> None:
    width = max(len(v) for v in COLUMNS.values())
    columns = [v + [None] * (width - len(v)) for v in COLUMNS.values()]
    rows = list(zip(*columns, strict=True))
    expected = [encoding.dumps([encoding.to_json_value(v) for v in row]) for row in rows]
    assert encode_rows(rows, len(columns)).to_pylist() == expected
    assert encode_rows([(), ()], 0).to_pylist() == ["[]", "[]"]
    assert encode_rows([], 3).to_pylist() == []


def _snapshot(store: SnapshotStore, owner: str | None, n: int, start: int = 0) -> str:
    writer = store.writer(owner)
    for low in range(start, start + n, 1000):
        rows = [(i, f"row {i}") for i in range(low, min(low + 1000, start + n))]
        writer.add([("id", "INTEGER"), ("name", "TEXT")], encode_rows(rows, 2))
    return writer.commit().id


def test_pages_read_back_at_any_offset(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    n = ROW_GROUP_ROWS * 3 + 17
    snap = _snapshot(store, "alice", n)
    assert store.info(snap, "alice") == {
        "rows": n,
        "columns": [["id", "INTEGER"], ["name", "TEXT"]],
    }
    for offset in (0, 1, ROW_GROUP_ROWS - 1, ROW_GROUP_ROWS, 2 * ROW_GROUP_ROWS + 5, n - 3):
        texts = store.read(snap, "alice", offset, 2_000)
        last = min(offset + 2_000, n)
        assert texts == [f'[{i},"row {i}"]' for i in range(offset, last)]
    assert store.read(snap, "alice", n, 10) == []
    path = tmp_path / "alice" / f"{snap}.parquet"
    assert path.is_file() and not list((tmp_path / "alice").glob(".*part"))
    assert os.stat(tmp_path).st_mode & 0o077 == 0  # the store's directories are private


def test_another_caller_gets_not_found(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    snap = _snapshot(store, "alice", 10)
    assert len(store.read(snap, "alice", 0, 10)) == 10
    for other in ("bob", None):
        with pytest.raises(SnapshotGone):
            store.read(snap, other, 0, 10)
    for bad in ("../alice/" + snap, "", "x" * 65, "a/b"):
        with pytest.raises(SnapshotGone):
            store.read(bad, "alice", 0, 10)
    with pytest.raises(ValueError):
        store.owner_dir("../etc")


def test_expired_snapshots_are_gone_and_swept(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, ttl_s=60)
    old, fresh = _snapshot(store, "alice", 10), _snapshot(store, "alice", 10)
    past = time.time() - 120
    os.utime(tmp_path / "alice" / f"{old}.parquet", (past, past))
    with pytest.raises(SnapshotGone):
        store.read(old, "alice", 0, 10)
    assert not (tmp_path / "alice" / f"{old}.parquet").exists()
    assert len(store.read(fresh, "alice", 0, 10)) == 10


def test_oldest_snapshots_are_evicted_per_caller_and_in_total(tmp_path: Path) -> None:
    probe = SnapshotStore(tmp_path / "probe")
    size = (tmp_path / "probe" / "p" / f"{_snapshot(probe, 'p', 5_000)}.parquet").stat().st_size
    store = SnapshotStore(
        tmp_path / "store", max_bytes_per_caller=int(size * 2.5), max_bytes=int(size * 3.5)
    )
    alice = []
    for i in range(3):
        alice.append(_snapshot(store, "alice", 5_000, start=i))
        time.sleep(0.01)  # distinct mtimes: eviction goes by age
    with pytest.raises(SnapshotGone):  # alice's oldest made room for her third
        store.read(alice[0], "alice", 0, 1)
    assert store.read(alice[2], "alice", 0, 1) == ['[2,"row 2"]']
    bob = []
    for i in range(3):
        bob.append(_snapshot(store, "bob", 5_000, start=i))
        time.sleep(0.01)
    # 3.5 fit in total: bob's second made four, so the oldest of all (alice's) went; his
    # third took his own oldest (2.5 per caller)
    for gone, owner in ((alice[1], "alice"), (bob[0], "bob")):
        with pytest.raises(SnapshotGone):
            store.read(gone, owner, 0, 1)
    assert [len(store.read(s, "bob", 0, 1)) for s in bob[1:]] == [1, 1]
    assert len(store.read(alice[2], "alice", 0, 1)) == 1


def test_row_and_byte_limits_stop_a_writer(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, max_rows=1_500)
    writer = store.writer("alice")
    writer.add([("id", "INTEGER")], encode_rows([(i,) for i in range(1_000)], 1))
    with pytest.raises(SnapshotTooBig):
        writer.add([("id", "INTEGER")], encode_rows([(i,) for i in range(1_000)], 1))
    writer.abort()
    assert list(tmp_path.rglob("*")) == [tmp_path / "alice"]
    store = SnapshotStore(tmp_path, max_result_bytes=1 << 20)
    writer = store.writer("alice")
    with pytest.raises(SnapshotTooBig):
        writer.add([("s", "TEXT")], encode_rows([("x" * 1_000,)] * 2_000, 1))
    writer.abort()


# ------------------------------------------------------- DuckDB writing the JSON itself

DUCK_TABLE = """
CREATE TABLE t AS SELECT * FROM (VALUES
  (1::TINYINT, 2::INTEGER, 9007199254740991::BIGINT, true, 1.5::DOUBLE, 0.1::FLOAT,
   'plain', DATE '2024-02-29', TIMESTAMP '2024-01-02 03:04:05', 12.30::DECIMAL(12,2),
   100::DECIMAL(5,0), 0.00010::DECIMAL(10,5), 170141183460469231731687303715884105727::HUGEINT),
  (-1::TINYINT, NULL, -9007199254740992::BIGINT, false, -0.0::DOUBLE, 2.5e15::FLOAT,
   'quo"te \\ back' || chr(10) || chr(9) || chr(1) || chr(31) || chr(127) || ' é✓😀',
   DATE '0001-01-01', TIMESTAMP '0900-01-02 03:04:05.000600', 0.00::DECIMAL(12,2),
   -7::DECIMAL(5,0), -0.12340::DECIMAL(10,5), NULL),
  (NULL, 0, 10000000000000000::BIGINT, NULL, 9999999999999998.0::DOUBLE, NULL,
   '', DATE '9999-12-31', TIMESTAMP '1969-12-31 23:59:59.5', -9999999999.99::DECIMAL(12,2),
   NULL, NULL, -1::HUGEINT)
) AS v(ti, i, bi, b, d, f, s, dt, ts, dec, dec0, dec5, hi)
"""

SLOW_VALUES = [
    "SELECT 1e16::DOUBLE AS x",
    "SELECT 'nan'::DOUBLE AS x",
    "SELECT 'infinity'::DOUBLE AS x",
    "SELECT 1e-5::DOUBLE AS x",
    "SELECT 0.00001::DECIMAL(10,5) AS x",
    "SELECT TIMESTAMP 'infinity' AS x",
    "SELECT DATE '-0044-03-15' AS x",
]


@pytest.fixture
async def duck(tmp_path: Path) -> Any:
    import duckdb

    from wellhead.sources.duckdb import DuckDBSource

    path = tmp_path / "t.duckdb"
    con = duckdb.connect(str(path))
    con.execute(DUCK_TABLE)
    con.close()
    src = DuckDBSource("d", path=str(path))
    await src.start()
    yield src
    await src.close()


async def scanned(src: Any, sql: str) -> tuple[list[str], list[str]]:
    """(the row texts a scan hands over, how: 'encoded' or 'python' per chunk)."""
    texts: list[str] = []
    kinds: list[str] = []

    def sink(columns: Any, rows: Any) -> int:
        from wellhead.sources.base import EncodedRows

        if rows is None:
            texts.clear()
            kinds.append("reset")
        elif isinstance(rows, EncodedRows):
            texts.extend(rows.texts.to_pylist())
            kinds.append("encoded")
        else:
            texts.extend(encode_rows(rows, len(columns)).to_pylist())
            kinds.append("python")
        return 1

    await src.scan(sql, [], timeout=30, sink=sink)
    return texts, kinds


async def reference_rows(src: Any, sql: str) -> list[str]:
    batch = await src.fetch(sql, [], max_rows=1000, timeout=30)
    return [encoding.dumps([encoding.to_json_value(v) for v in row]) for row in batch.rows]


@pytest.mark.anyio
async def test_duckdb_writes_the_same_json_text_as_the_python_path(duck: Any) -> None:
    sql = "SELECT * FROM t"
    texts, kinds = await scanned(duck, sql)
    assert kinds == ["encoded"]
    assert texts == await reference_rows(duck, sql)


@pytest.mark.anyio
@pytest.mark.parametrize("sql", SLOW_VALUES)
async def test_values_duckdb_cannot_mirror_take_the_python_path(duck: Any, sql: str) -> None:
    texts, kinds = await scanned(duck, sql)
    assert kinds[-1] == "python" and "encoded" not in kinds
    assert texts == await reference_rows(duck, sql)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
