"""Hardening of layer 1 (issue 9): volatile statements and percentage limits are flagged for
the paging layer, server introspection is refused, deep nesting fails with a clear error,
and the check is thread-safe. Each class has a corpus run against the real engines."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import duckdb
import pytest
import yaml
from sqlglot import exp

from tests.helpers import service_env
from wellhead.errors import InvalidRequest, UnsafeSQL
from wellhead.sql.safety import MAX_NESTING, bind_named, check_read_only

# --------------------------------------------------------------------------- volatile

VOLATILE = [
    ("duckdb", "SELECT * FROM orders ORDER BY random()"),
    ("duckdb", "SELECT uuid() AS u, order_id FROM orders"),
    ("duckdb", "SELECT gen_random_uuid() AS u"),
    ("duckdb", "SELECT now() AS t"),
    ("duckdb", "SELECT current_timestamp AS t"),
    ("duckdb", "SELECT * FROM orders USING SAMPLE 50%"),
    ("duckdb", "SELECT * FROM orders TABLESAMPLE 10%"),
    ("duckdb", "SELECT * FROM (SELECT order_id FROM orders WHERE total > random()) AS q"),
    ("duckdb", "SELECT get_current_timestamp() AS t"),
    ("postgres", "SELECT * FROM orders ORDER BY random()"),
    ("postgres", "SELECT gen_random_uuid() AS u"),
    ("postgres", "SELECT clock_timestamp() AS t"),
    ("postgres", "SELECT timeofday() AS t"),
    ("postgres", "SELECT now() AS t"),
    ("postgres", "SELECT 'now'::timestamp AS t"),
    ("postgres", "SELECT * FROM orders TABLESAMPLE SYSTEM (50)"),
    ("postgres", "WITH r AS (SELECT random() AS x) SELECT * FROM r"),
    ("sqlite", "SELECT * FROM orders ORDER BY random()"),
    ("sqlite", "SELECT randomblob(4) AS b"),
    ("sqlite", "SELECT datetime('now') AS t"),
    ("sqlite", "SELECT date() AS d"),
    ("sqlite", "SELECT strftime('%s') AS s"),
    ("sqlite", "SELECT CURRENT_TIMESTAMP AS t"),
]

STABLE = [
    ("duckdb", "SELECT * FROM orders ORDER BY order_id"),
    ("duckdb", "SELECT randomish FROM (SELECT 1 AS randomish) AS q"),
    ("duckdb", "SELECT 'random()' AS s"),
    ("postgres", "SELECT date_trunc('day', ordered_at) AS d FROM orders"),
    ("postgres", "SELECT 'nowhere' AS s"),
    ("sqlite", "SELECT date(ordered_at) AS d FROM orders"),
    ("sqlite", "SELECT unixepoch(ordered_at) AS s FROM orders"),
]


@pytest.mark.parametrize(("dialect", "sql"), VOLATILE)
def test_volatile_statements_are_flagged(dialect: str, sql: str) -> None:
    assert check_read_only(sql, dialect).volatile is True


@pytest.mark.parametrize(("dialect", "sql"), STABLE)
def test_stable_statements_are_not_flagged(dialect: str, sql: str) -> None:
    assert check_read_only(sql, dialect).volatile is False


# --------------------------------------------------------------------------- percent limits

PERCENT = [
    ("duckdb", "SELECT * FROM orders ORDER BY order_id LIMIT 10%"),
    ("duckdb", "SELECT * FROM orders ORDER BY order_id LIMIT 10 PERCENT"),
    ("duckdb", "SELECT * FROM orders LIMIT 10.5%"),
    ("duckdb", "SELECT * FROM orders ORDER BY order_id LIMIT 10% OFFSET 1"),
    ("duckdb", "(SELECT * FROM orders ORDER BY order_id LIMIT 50%)"),
    ("postgres", "SELECT * FROM orders ORDER BY order_id FETCH FIRST 10 PERCENT ROWS ONLY"),
]


@pytest.mark.parametrize(("dialect", "sql"), PERCENT)
def test_percent_limit_is_flagged(dialect: str, sql: str) -> None:
    assert check_read_only(sql, dialect).percent_limit is True


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM orders LIMIT 10",
        "SELECT * FROM (SELECT * FROM orders LIMIT 10%) AS q",  # inner: paging wraps it whole
        "SELECT order_id % 10 AS m FROM orders LIMIT 5",
    ],
)
def test_row_limits_are_not_percent(sql: str) -> None:
    assert check_read_only(sql, "duckdb").percent_limit is False


@pytest.mark.parametrize("sql", ["SELECT * FROM orders LIMIT (5 + 5)%", "SELECT 1 LIMIT (2)%"])
def test_percent_of_an_expression_is_refused(sql: str) -> None:
    # sqlglot writes it back as `LIMIT (5 + 5) PERCENT`, which DuckDB cannot parse.
    with pytest.raises(UnsafeSQL, match="percentage LIMIT must be a plain number"):
        check_read_only(sql, "duckdb")


# --------------------------------------------------------------------------- corpora on engines

CORPUS = Path(__file__).parent / "corpora" / "hardening.yaml"
_DIALECT_OF = {
    "introspection": "postgres",
    "duckdb_settings": "duckdb",
    "sqlite_internals": "sqlite",
}


def _hardening() -> dict[str, Any]:
    with open(CORPUS, encoding="utf-8") as f:
        data: dict[str, Any] = yaml.safe_load(f)
    return data


def _refused(section: str) -> list[Any]:
    cases = _hardening()[section]["refused"]
    return [pytest.param(c["sql"], c["reason"], id=f"{section}-{i}") for i, c in enumerate(cases)]


def _accepted(section: str) -> list[Any]:
    cases = _hardening()[section]["accepted"]
    return [pytest.param(sql, id=f"{section}-ok-{i}") for i, sql in enumerate(cases)]


@pytest.mark.parametrize("section", sorted(_DIALECT_OF))
def test_corpus_classes_have_enough_variants(section: str) -> None:
    data = _hardening()[section]
    assert len(data["refused"]) >= 5 and len(data["accepted"]) >= 5
    sqls = [c["sql"] for c in data["refused"]]
    assert len(sqls) == len(set(sqls))


@pytest.mark.parametrize("section", sorted(_DIALECT_OF))
def test_refused_and_accepted_by_the_check(section: str) -> None:
    dialect = _DIALECT_OF[section]
    wrong = []
    for case in _hardening()[section]["refused"]:
        try:
            check_read_only(case["sql"], dialect)
            wrong.append((case["sql"], "accepted"))
        except UnsafeSQL as err:
            if case["reason"] not in err.public_message:
                wrong.append((case["sql"], err.public_message))
    for sql in _hardening()[section]["accepted"]:
        try:
            checked = check_read_only(sql, dialect)
        except UnsafeSQL as err:
            wrong.append((sql, err.public_message))
        else:
            assert not checked.volatile or "pg_backend_pid" in sql
    assert wrong == []


def test_introspection_opt_out_lets_postgres_views_through() -> None:
    for case in _hardening()["introspection"]["refused"]:
        checked = check_read_only(case["sql"], "postgres", allow_introspection=True)
        assert checked.kind in ("select", "show", "explain")
    # DuckDB settings and paths stay refused whatever the flag says.
    with pytest.raises(UnsafeSQL, match="pg_settings"):
        check_read_only("SELECT * FROM pg_settings", "duckdb", allow_introspection=True)


def _engine_problems(run: Any, cases: list[str], syntax_error: type[BaseException]) -> list[Any]:
    """Statements the engine cannot even parse (the corpus would be testing typos)."""
    bad = []
    for sql in cases:
        try:
            run(sql)
        except syntax_error as err:
            bad.append((sql, str(err).splitlines()[0]))
        except Exception:  # permission, missing extension: the spelling itself is real
            pass
    return bad


def test_duckdb_corpus_on_duckdb(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "x.duckdb"))
    try:
        refused = [c["sql"] for c in _hardening()["duckdb_settings"]["refused"]]
        assert (
            _engine_problems(lambda s: con.execute(s).fetchall(), refused, duckdb.ParserException)
            == []
        )
        # the leak is real: without the check, the file path comes back
        rows = con.execute("SELECT path FROM duckdb_databases WHERE path IS NOT NULL").fetchall()
        assert str(tmp_path) in rows[0][0]
        for sql in _hardening()["duckdb_settings"]["accepted"]:
            con.execute(check_read_only(sql, "duckdb").sql).fetchall()
    finally:
        con.close()


def test_sqlite_corpus_on_sqlite(tmp_path: Path) -> None:
    con = sqlite3.connect(str(tmp_path / "x.sqlite"))
    try:
        con.execute("CREATE TABLE orders (order_id INTEGER)")
        refused = [c["sql"] for c in _hardening()["sqlite_internals"]["refused"]]
        problems = _engine_problems(lambda s: con.execute(s).fetchall(), refused, sqlite3.Error)
        # dbstat is compiled out of some builds ("no such table"); every other one runs
        assert [sql for sql, _ in problems if "dbstat" not in sql] == []
        for sql in _hardening()["sqlite_internals"]["accepted"]:
            con.execute(check_read_only(sql, "sqlite").sql).fetchall()
    finally:
        con.close()


@pytest.mark.postgres
def test_introspection_corpus_on_postgres() -> None:
    """As the read-only role: every refused spelling is real SQL there (several really leak
    other sessions' SQL), and every near miss runs."""
    dsn = service_env("WELLHEAD_TEST_PG_DSN", "PostgreSQL", ".ci/postgres.sh")
    asyncpg = pytest.importorskip("asyncpg")
    section = _hardening()["introspection"]

    async def run() -> tuple[list[Any], list[Any], int]:
        con = await asyncpg.connect(dsn)
        spy = await asyncpg.connect(dsn)
        syntax: list[Any] = []
        failed: list[Any] = []
        try:
            # another caller's statement with a literal, visible through pg_stat_activity
            await spy.execute("SELECT 'wellhead-secret-literal' AS s")
            leaked = await con.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%wellhead-secret-%'"
            )
            for case in section["refused"]:
                try:
                    async with con.transaction(readonly=True):
                        await con.fetch(case["sql"])
                except asyncpg.PostgresSyntaxError as err:
                    syntax.append((case["sql"], str(err)))
                except asyncpg.PostgresError:
                    pass
            for sql in section["accepted"]:
                checked = check_read_only(sql, "postgres")
                try:
                    async with con.transaction(readonly=True):
                        await con.fetch(checked.sql)
                except asyncpg.PostgresError as err:
                    failed.append((sql, str(err)))
        finally:
            await spy.close()
            await con.close()
        return syntax, failed, leaked

    syntax, failed, leaked = anyio.run(run)
    assert syntax == [] and failed == []
    assert leaked >= 1


# --------------------------------------------------------------------------- nesting

N = MAX_NESTING


def _parens(n: int) -> str:
    return "SELECT " + "(" * n + "1" + ")" * n + " AS x"


def _cases(n: int) -> str:
    s = "1"
    for _ in range(n):
        s = f"CASE WHEN order_id > 0 THEN {s} ELSE 0 END"
    return f"SELECT {s} AS x FROM orders"


def _funcs(n: int) -> str:
    return "SELECT " + "abs(" * n + "order_id" + ")" * n + " AS x FROM orders"


def _subqueries(n: int) -> str:
    s = "SELECT order_id FROM orders"
    for i in range(n):
        s = f"SELECT order_id FROM ({s}) AS q{i}"
    return s


def _nots(n: int) -> str:
    return "SELECT order_id FROM orders WHERE " + "NOT " * n + "order_id IS NULL"


def _casts(n: int) -> str:
    return "SELECT order_id" + "::bigint" * n + " AS x FROM orders"


def _mixed(n: int) -> str:
    s = "order_id"
    for i in range(n):
        s = [f"({s})", f"abs({s})", f"CASE WHEN true THEN {s} END", f"coalesce({s}, 0)"][i % 4]
    return f"SELECT {s} AS x FROM orders"


TOO_DEEP = [
    _parens(45),  # the reproductions
    _cases(60),
    _parens(N + 1),
    _cases(N + 1),
    _funcs(N + 1),
    _funcs(200),
    _mixed(N + 1),
    _nots(N + 1),
    _nots(500),
    "SELECT " + "- " * 600 + "1 AS x",
    _casts(120),
    "SELECT [1]" + "[1]" * 120 + " AS x",
    _subqueries(45),
    "SELECT 1 AS x WHERE " + "EXISTS (SELECT 1 WHERE " * 40 + "true" + ")" * 40,
    "SELECT " + " ".join(f"{i} {'+-'[i % 2]}" for i in range(3000)) + " 1 AS x",
]

NEAR_MISS = [
    _parens(N),
    _cases(N),
    _funcs(N),
    _mixed(N),
    _nots(N),
    _subqueries(N - 2),
    _casts(90),
    "SELECT order_id FROM orders WHERE " + " AND ".join(["order_id > 0"] * 900),
    "SELECT order_id FROM orders WHERE " + " OR ".join(["order_id = 1 AND order_id > 0"] * 400),
    "SELECT order_id FROM orders WHERE order_id IN (" + ", ".join(map(str, range(5000))) + ")",
    " UNION ALL ".join(["SELECT order_id FROM orders"] * 300),
    "SELECT " + " + ".join(["order_id"] * 300) + " AS x FROM orders",
]


def _at_depth(frames: int, fn: Any) -> Any:
    """Call fn with about `frames` extra frames on the stack, like a deep server call chain."""
    if frames <= 0:
        return fn()
    return _at_depth(frames - 1, fn)


@pytest.mark.parametrize("dialect", ["duckdb", "postgres", "sqlite"])
@pytest.mark.parametrize("sql", TOO_DEEP, ids=[f"deep-{i}" for i in range(len(TOO_DEEP))])
def test_too_deep_is_refused_clearly(dialect: str, sql: str) -> None:
    if dialect == "sqlite" and "[" in sql:
        sql = "SELECT " + "abs(" * 300 + "1" + ")" * 300 + " AS x"  # no arrays in SQLite
    for frames in (0, 300):  # also when sqlglot itself runs out of stack
        with pytest.raises(UnsafeSQL, match=r"statement is too deeply nested \(more than \d+ "):
            _at_depth(frames, lambda: check_read_only(sql, dialect))


def _page_sql(checked: Any, dialect: str) -> str:
    """What the paging layer does with a checked tree: wrap it and generate SQL."""
    wrapped = exp.select("*").from_(checked.tree.copy().subquery("page")).limit(11).offset(10)
    return wrapped.sql(dialect=dialect)


@pytest.mark.parametrize("sql", NEAR_MISS, ids=[f"near-{i}" for i in range(len(NEAR_MISS))])
def test_near_misses_pass_and_survive_generation(duck: Any, lite: Any, sql: str) -> None:
    # 150 frames of headroom used up by the caller, as in a deep server call chain
    checked = _at_depth(150, lambda: check_read_only(sql, "duckdb"))
    paged = _at_depth(150, lambda: _page_sql(checked, "duckdb"))
    duck.execute(paged).fetchall()
    duck.execute(checked.sql).fetchall()
    if "::" not in sql:
        lite_checked = check_read_only(sql, "sqlite")
        try:
            lite.execute(_page_sql(lite_checked, "sqlite")).fetchall()
        except sqlite3.OperationalError as err:  # SQLite's own, smaller parser bound
            assert "parser stack overflow" in str(err)


@pytest.mark.postgres
def test_near_misses_run_on_postgres() -> None:
    dsn = service_env("WELLHEAD_TEST_PG_DSN", "PostgreSQL", ".ci/postgres.sh")
    asyncpg = pytest.importorskip("asyncpg")

    async def run() -> list[Any]:
        con = await asyncpg.connect(dsn)
        failed = []
        try:
            await con.execute("SET default_transaction_read_only = off")
            await con.execute("CREATE TEMP TABLE orders AS SELECT 1::bigint AS order_id")
            for sql in NEAR_MISS:
                checked = check_read_only(sql, "postgres")
                try:
                    await con.fetch(_page_sql(checked, "postgres"))
                except asyncpg.PostgresError as err:
                    failed.append((sql[:80], str(err)))
        finally:
            await con.close()
        return failed

    assert anyio.run(run) == []


@pytest.fixture(scope="module")
def duck() -> Any:
    con = duckdb.connect(":memory:")
    con.execute(
        "CREATE TABLE orders AS SELECT range AS order_id, range * 1.5 AS total, "
        "TIMESTAMP '2024-01-01' + INTERVAL (range) DAY AS ordered_at FROM range(30)"
    )
    yield con
    con.close()


@pytest.fixture(scope="module")
def lite() -> Any:
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE orders (order_id INTEGER, total REAL, ordered_at TEXT)")
    con.execute("INSERT INTO orders VALUES (1, 1.5, '2024-01-01'), (2, 3.0, '2024-01-02')")
    yield con
    con.close()


# --------------------------------------------------------------------------- threads


def _outcome(sql: str, dialect: str) -> tuple[str, ...]:
    try:
        checked = check_read_only(sql, dialect)
    except (UnsafeSQL, InvalidRequest) as err:
        return ("refused", err.public_message)
    return ("ok", checked.kind, checked.sql, str(checked.volatile), checked.tree.sql(dialect))


def test_concurrent_checks_agree_with_sequential_ones() -> None:
    """check_read_only runs in worker threads for large statements: no shared mutable
    state may make one thread's answer depend on another's (DuckDB's parser included)."""
    work: list[tuple[str, str]] = []
    for engine in ("duckdb", "sqlite", "postgres"):
        with open(CORPUS.parent / f"{engine}.yaml", encoding="utf-8") as f:
            corpus = yaml.safe_load(f)
        work += [(c["sql"], engine) for c in corpus["attacks"] + corpus["legit"]]
    work += [(sql, d) for d, sql in VOLATILE + PERCENT] + [(sql, "duckdb") for sql in TOO_DEEP]
    expected = [_outcome(sql, d) for sql, d in work]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):
            got = list(pool.map(lambda job: _outcome(*job), work))
            assert got == expected


# --------------------------------------------------------------------------- error size

HUGE = "x" * 100_000


@pytest.mark.parametrize(
    ("dialect", "sql"),
    [
        ("duckdb", HUGE),
        ("duckdb", f"SELECT read_{HUGE}(1)"),
        ("duckdb", f"SELECT * FROM '{HUGE}.csv'"),
        ("postgres", f"SELECT * FROM pg_stat_progress_{HUGE}"),
        ("postgres", f"EXPLAIN ({HUGE}) SELECT 1"),
        ("postgres", f"SHOW {HUGE}; SELECT 1"),
        ("sqlite", f"SELECT * FROM pragma_{HUGE}"),
        ("postgres", f"SELECT (1 FROM {HUGE}"),
    ],
)
def test_errors_quote_user_text_clipped(dialect: str, sql: str) -> None:
    with pytest.raises(UnsafeSQL) as info:
        check_read_only(sql, dialect)
    message = info.value.public_message
    assert len(message) < 1_000, message[:200]


def test_parameter_errors_are_clipped() -> None:
    sql = "SELECT " + " + ".join(f":p{i}" for i in range(3000)) + " AS s"
    checked = check_read_only(sql, "postgres")
    with pytest.raises(InvalidRequest) as info:
        bind_named(checked, {HUGE: 1}, "dollar")
    assert len(info.value.public_message) < 1_500
    assert "characters)" in info.value.public_message  # the cut is visible


# --------------------------------------------------------------------------- flags on engines

_FLAGGED = VOLATILE + STABLE + PERCENT


def test_flag_corpora_run_on_duckdb_and_sqlite(duck: Any, lite: Any) -> None:
    for dialect, sql in _FLAGGED:
        # count(*) over it: the engine runs the statement (samples may well be empty)
        # without fetching TIMESTAMPTZ values
        wrapped = f"SELECT count(*) FROM ({check_read_only(sql, dialect).sql}) AS q"
        if dialect == "duckdb":
            duck.execute(wrapped).fetchall()
        elif dialect == "sqlite":
            lite.execute(wrapped).fetchall()


def test_percent_limit_keeps_its_meaning_through_sqlglot(duck: Any) -> None:
    """sqlglot writes `LIMIT 10%` back as `LIMIT 10 PERCENT`: DuckDB returns the same rows."""
    for dialect, sql in PERCENT:
        if dialect != "duckdb":
            continue
        checked = check_read_only(sql, dialect)
        original = duck.execute(checked.sql).fetchall()
        regenerated = duck.execute(checked.tree.sql(dialect="duckdb")).fetchall()
        assert regenerated == original
    rows = duck.execute("SELECT * FROM orders ORDER BY order_id LIMIT 10%").fetchall()
    assert len(rows) == 3  # 10% of 30, not 10 rows


@pytest.mark.postgres
def test_flag_corpora_run_on_postgres() -> None:
    dsn = service_env("WELLHEAD_TEST_PG_DSN", "PostgreSQL", ".ci/postgres.sh")
    asyncpg = pytest.importorskip("asyncpg")

    async def run() -> list[Any]:
        con = await asyncpg.connect(dsn)
        failed = []
        try:
            await con.execute("SET default_transaction_read_only = off")
            await con.execute(
                "CREATE TEMP TABLE orders AS SELECT g::bigint AS order_id, g * 1.5 AS total, "
                "now() AS ordered_at FROM generate_series(1, 30) AS g"
            )
            for dialect, sql in _FLAGGED:
                if dialect != "postgres" or "PERCENT" in sql:  # PostgreSQL has no PERCENT
                    continue
                try:
                    await con.fetch(check_read_only(sql, dialect).sql)
                except asyncpg.PostgresError as err:
                    failed.append((sql, str(err)))
        finally:
            await con.close()
        return failed

    assert anyio.run(run) == []
