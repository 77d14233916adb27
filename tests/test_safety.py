"""Layer 1 of read-only: every corpus attack is refused for the right reason, every legit
query is accepted and really runs on its engine, and `:name` parameters bind safely."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import duckdb
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import service_env
from wellhead.errors import InvalidRequest, UnsafeSQL
from wellhead.sql.safety import (
    CheckedStatement,
    bind_named,
    check_read_only,
    named_parameters,
)

CORPORA = Path(__file__).parent / "corpora"
ENGINES = ("duckdb", "sqlite", "postgres")


def _corpus(engine: str) -> dict[str, list[dict[str, Any]]]:
    with open(CORPORA / f"{engine}.yaml", encoding="utf-8") as f:
        data: dict[str, list[dict[str, Any]]] = yaml.safe_load(f)
    return data


def _cases(section: str) -> list[Any]:
    out = []
    for engine in ENGINES:
        for i, case in enumerate(_corpus(engine)[section]):
            out.append(pytest.param(engine, case, id=f"{engine}-{section}-{i}"))
    return out


# --------------------------------------------------------------------------- corpora


@pytest.mark.parametrize("engine", ENGINES)
def test_corpus_sizes(engine: str) -> None:
    corpus = _corpus(engine)
    assert len(corpus["attacks"]) >= 60
    assert len(corpus["legit"]) >= 30
    for case in corpus["attacks"]:
        assert set(case) == {"sql", "reason"}, case
    sqls = [c["sql"] for c in corpus["attacks"]]
    assert len(sqls) == len(set(sqls)), "duplicate attack"


@pytest.mark.parametrize(("engine", "case"), _cases("attacks"))
def test_attack_is_refused_with_its_reason(engine: str, case: dict[str, str]) -> None:
    with pytest.raises(UnsafeSQL) as info:
        check_read_only(case["sql"], engine)
    assert case["reason"] in info.value.public_message


@pytest.mark.parametrize(("engine", "case"), _cases("legit"))
def test_legit_query_is_accepted(engine: str, case: dict[str, str]) -> None:
    checked = check_read_only(case["sql"], engine)
    kind = case.get("kind", "select")
    assert checked.kind == kind
    assert checked.pageable is (kind == "select")
    assert not checked.sql.rstrip().endswith(";")
    assert checked.sql == case["sql"].rstrip().rstrip(";").rstrip()


# --------------------------------------------------------------------------- real engines

_ROWS: dict[str, list[tuple[Any, ...]]] = {
    "customers": [
        (1, "Ada", "ada@example.com", "DE", "EU", "2024-01-05", "enterprise"),
        (2, "Bo", "bo@example.org", "US", "NA", "2024-02-10", "smb"),
        (3, "Cy", "cy@example.com", "FR", "EU", "2024-02-11", "smb"),
    ],
    "products": [
        (1, "Anvil", "tools", 19.5),
        (2, "Banana", "food", 0.25),
        (3, "Hammer", "tools", 12.0),
    ],
    "orders": [
        (1, 1, "2024-03-01 10:00:00", "paid", 120.0, "web"),
        (2, 1, "2024-03-05 12:30:00", "shipped", 20.0, "app"),
        (3, 2, "2024-04-01 08:00:00", "paid", 5.5, "web"),
    ],
    "order_items": [
        (1, 1, 1, 5, 19.5),
        (1, 2, 2, 4, 0.25),
        (2, 1, 3, 1, 12.0),
        (3, 1, 2, 22, 0.25),
    ],
}

_DDL = {
    "customers": "customer_id INTEGER, name VARCHAR, email VARCHAR, country VARCHAR, "
    "region VARCHAR, signup_date DATE, segment VARCHAR",
    "products": "product_id INTEGER, name VARCHAR, category VARCHAR, price DECIMAL(10, 2)",
    "orders": "order_id BIGINT, customer_id INTEGER, ordered_at TIMESTAMP, status VARCHAR, "
    "total DECIMAL(12, 2), channel VARCHAR",
    "order_items": "order_id BIGINT, line_no INTEGER, product_id INTEGER, quantity INTEGER, "
    "unit_price DECIMAL(10, 2)",
}


@pytest.fixture(scope="module")
def duck() -> Any:
    con = duckdb.connect(":memory:")
    for table, cols in _DDL.items():
        con.execute(f"CREATE TABLE {table} ({cols})")
        marks = ", ".join("?" * len(_ROWS[table][0]))
        con.executemany(f"INSERT INTO {table} VALUES ({marks})", _ROWS[table])
    yield con
    con.close()


@pytest.fixture(scope="module")
def lite() -> Any:
    con = sqlite3.connect(":memory:")
    for table, cols in _DDL.items():
        con.execute(f"CREATE TABLE {table} ({cols.replace('TIMESTAMP', 'TEXT')})")
        marks = ", ".join("?" * len(_ROWS[table][0]))
        con.executemany(f"INSERT INTO {table} VALUES ({marks})", _ROWS[table])
    yield con
    con.close()


def _legit(engine: str) -> list[Any]:
    return [
        pytest.param(c["sql"], id=f"{engine}-legit-{i}")
        for i, c in enumerate(_corpus(engine)["legit"])
    ]


@pytest.mark.parametrize("sql", _legit("duckdb"))
def test_duckdb_legit_runs_on_duckdb(duck: Any, sql: str) -> None:
    checked = check_read_only(sql, "duckdb")
    duck.execute(checked.sql).fetchall()


@pytest.mark.parametrize("sql", _legit("sqlite"))
def test_sqlite_legit_runs_on_sqlite(lite: Any, sql: str) -> None:
    checked = check_read_only(sql, "sqlite")
    lite.execute(checked.sql).fetchall()


@pytest.mark.postgres
def test_postgres_legit_runs_on_postgres() -> None:
    """Runs every legit PostgreSQL query against temp copies of the demo tables."""
    dsn = service_env("WELLHEAD_TEST_PG_ADMIN_DSN", "PostgreSQL", ".ci/postgres.sh")
    asyncpg = pytest.importorskip("asyncpg")
    queries = [check_read_only(c["sql"], "postgres").sql for c in _corpus("postgres")["legit"]]
    pg_types = {"VARCHAR": "text", "DECIMAL": "numeric", "BIGINT": "bigint"}

    async def run() -> list[tuple[str, str]]:
        failures: list[tuple[str, str]] = []
        con = await asyncpg.connect(dsn)
        try:
            tx = con.transaction()
            await tx.start()
            for table, cols in _DDL.items():
                for a, b in pg_types.items():
                    cols = cols.replace(a, b)
                await con.execute(f"CREATE TEMP TABLE {table} ({cols}) ON COMMIT DROP")
                rows = [tuple(_pg_value(v) for v in row) for row in _ROWS[table]]
                await con.copy_records_to_table(table, records=rows, schema_name="pg_temp")
            for sql in queries:
                await con.execute("SAVEPOINT q")
                try:
                    await con.fetch(sql)
                except Exception as err:  # collect all failures, report at once
                    failures.append((sql, f"{type(err).__name__}: {err}"))
                await con.execute("ROLLBACK TO SAVEPOINT q")
            await tx.rollback()
        finally:
            await con.close()
        return failures

    assert anyio.run(run) == []


def _pg_value(v: object) -> object:
    import datetime as dt
    from decimal import Decimal

    if isinstance(v, float):
        return Decimal(str(v))
    if isinstance(v, str) and len(v) == 10 and v[4] == "-" and v[7] == "-":
        return dt.date.fromisoformat(v)
    if isinstance(v, str) and len(v) == 19 and v[10] == " ":
        return dt.datetime.fromisoformat(v)
    return v


# --------------------------------------------------------------------------- specifics


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("sql", ["", "   ", "\n\t", "-- only a comment", "/* c */"])
def test_empty_sql_is_an_invalid_request(engine: str, sql: str) -> None:
    with pytest.raises(InvalidRequest):
        check_read_only(sql, engine)


def test_unknown_dialect_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="unknown SQL dialect"):
        check_read_only("select 1", "oracle")


@pytest.mark.parametrize("engine", ENGINES)
def test_unparseable_sql_fails_closed_with_dialect(engine: str) -> None:
    with pytest.raises(UnsafeSQL, match=f"could not parse the statement in dialect {engine}"):
        check_read_only("SELECT (1 FROM", engine)


@pytest.mark.parametrize("engine", ENGINES)
def test_semicolons_inside_strings_comments_and_identifiers_are_fine(engine: str) -> None:
    sql = "SELECT 'a;b' AS \"c;d\" /* ; */ -- ;\n FROM orders"
    checked = check_read_only(sql, engine)
    assert checked.sql == sql


@pytest.mark.parametrize("engine", ENGINES)
def test_trailing_semicolon_and_comment_are_stripped(engine: str) -> None:
    checked = check_read_only("  SELECT 1 AS x ; -- done\n", engine)
    assert checked.sql == "  SELECT 1 AS x"
    # the stripped text can be wrapped as a subquery without a comment eating the rest
    assert check_read_only(f"SELECT * FROM ({checked.sql}) AS q LIMIT 5", engine).pageable


def test_unicode_inside_strings_is_fine() -> None:
    checked = check_read_only("SELECT 'a\u00a0b\u200dc' AS s", "duckdb")
    assert checked.kind == "select"


def test_nul_is_refused_even_inside_a_string() -> None:
    with pytest.raises(UnsafeSQL, match="U\\+0000"):
        check_read_only("SELECT 'a\x00b'", "sqlite")


def test_explain_tree_carries_the_checked_target() -> None:
    checked = check_read_only("EXPLAIN ANALYZE SELECT * FROM orders WHERE total > :t", "duckdb")
    assert checked.kind == "explain" and not checked.pageable
    assert named_parameters(checked.tree) == ["t"]


def test_describe_and_show_kinds() -> None:
    assert check_read_only("DESCRIBE orders", "duckdb").kind == "describe"
    assert check_read_only("DESCRIBE SELECT 1", "duckdb").kind == "describe"
    assert check_read_only("SHOW orders", "duckdb").kind == "show"
    assert check_read_only("SHOW work_mem", "postgres").kind == "show"
    # SHOW ALL lists server file paths: refused unless the source allows introspection.
    with pytest.raises(UnsafeSQL, match="SHOW ALL is not allowed"):
        check_read_only("SHOW ALL", "postgres")
    assert check_read_only("SHOW ALL", "postgres", allow_introspection=True).kind == "show"


def test_pg_sleep_and_current_setting_decisions() -> None:
    # Documented choices: both read-only; the deadline bounds pg_sleep.
    assert check_read_only("SELECT pg_sleep(1)", "postgres").kind == "select"
    assert check_read_only("SELECT current_setting('work_mem')", "postgres").pageable
    assert check_read_only("SELECT currval('s')", "postgres").pageable
    with pytest.raises(UnsafeSQL, match="current_setting"):
        check_read_only("SELECT current_setting('threads')", "duckdb")


def test_glob_operator_is_fine_where_only_the_function_is_denied() -> None:
    assert check_read_only("SELECT 'abc' GLOB 'a*' AS g", "duckdb").pageable
    assert check_read_only("SELECT glob('a*', 'abc') AS g", "sqlite").pageable


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("engine", ENGINES)
def test_named_parameters_in_first_use_order(engine: str) -> None:
    sql = "SELECT :b AS x, :a AS y FROM orders WHERE total > :a AND status = :b LIMIT :n"
    checked = check_read_only(sql, engine)
    assert named_parameters(checked.tree) == ["b", "a", "n"]


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_bind_dollar_reuses_numbers(engine: str) -> None:
    checked = check_read_only("SELECT * FROM orders WHERE a = :x OR b = :y OR c = :x", engine)
    sql, values = bind_named(checked, {"x": 1, "y": "two"}, "dollar")
    assert sql == "SELECT * FROM orders WHERE a = $1 OR b = $2 OR c = $1"
    assert values == [1, "two"]


def test_bind_qmark_repeats_values() -> None:
    checked = check_read_only("SELECT * FROM orders WHERE a = :x OR b = :y OR c = :x", "sqlite")
    sql, values = bind_named(checked, {"x": 1, "y": None}, "qmark")
    assert sql == "SELECT * FROM orders WHERE a = ? OR b = ? OR c = ?"
    assert values == [1, None, 1]


@pytest.mark.parametrize("engine", ENGINES)
def test_placeholder_lookalikes_are_left_alone(engine: str) -> None:
    sql = "SELECT ':x' AS s, \":y\" AS i, total::text AS t /* :z */ FROM orders -- :w"
    checked = check_read_only(sql, engine)
    assert checked.sql == sql.removesuffix(" -- :w")
    assert bind_named(checked, {}, "dollar") == (checked.sql, [])


def test_duckdb_struct_and_slice_colons_are_not_placeholders() -> None:
    sql = "SELECT {'a':1} AS s, [1, 2, 3][1:2] AS l, [1, 2, 3][:n] AS p FROM range(1) AS t(n)"
    checked = check_read_only(sql, "duckdb")
    assert named_parameters(checked.tree) == ["n"]  # documented: [:name] is a placeholder
    bound, values = bind_named(checked, {"n": 2}, "dollar")
    assert "{'a':1} AS s, [1, 2, 3][1:2] AS l, [1, 2, 3][$1] AS p" in bound
    assert values == [2]


def test_missing_and_unknown_parameters_are_named() -> None:
    checked = check_read_only("SELECT :a + :b AS s", "postgres")
    with pytest.raises(InvalidRequest, match=r"missing value for :b"):
        bind_named(checked, {"a": 1}, "dollar")
    with pytest.raises(InvalidRequest, match=r"unknown parameter 'c'"):
        bind_named(checked, {"a": 1, "b": 2, "c": 3}, "dollar")
    with pytest.raises(InvalidRequest, match=r"missing value for :a, :b.*unknown parameter 'z'"):
        bind_named(checked, {"z": 1}, "dollar")


def test_leading_colon_in_param_keys_is_accepted() -> None:
    checked = check_read_only("SELECT :a AS s", "duckdb")
    assert bind_named(checked, {":a": 5}, "dollar") == ("SELECT $1 AS s", [5])


@pytest.mark.parametrize(
    ("engine", "sql"),
    [("duckdb", "SELECT ? AS x"), ("postgres", "SELECT $1 AS x"), ("duckdb", "SELECT $x AS y")],
)
def test_positional_markers_are_refused_at_bind(engine: str, sql: str) -> None:
    checked = check_read_only(sql, engine)
    with pytest.raises(InvalidRequest, match="write query parameters as :name"):
        bind_named(checked, {}, "dollar")


def test_bind_needs_a_checked_statement() -> None:
    import sqlglot

    tree = sqlglot.parse_one("SELECT 1")
    assert isinstance(tree, sqlglot.exp.Expression)
    fake = CheckedStatement("SELECT 1", tree, "select", True)
    with pytest.raises(InvalidRequest, match="check_read_only"):
        bind_named(fake, {}, "dollar")


def test_bound_sql_runs_on_duckdb_and_sqlite(duck: Any, lite: Any) -> None:
    sql = "SELECT count(*) FROM orders WHERE status = :s AND total >= :t AND status = :s"
    bound, values = bind_named(check_read_only(sql, "duckdb"), {"s": "paid", "t": 10}, "dollar")
    assert duck.execute(bound, values).fetchall() == [(1,)]
    bound, values = bind_named(check_read_only(sql, "sqlite"), {"s": "paid", "t": 10}, "qmark")
    assert lite.execute(bound, values).fetchall() == [(1,)]


def test_parameter_values_are_never_spliced() -> None:
    checked = check_read_only("SELECT :v AS v", "sqlite")
    sql, values = bind_named(checked, {"v": "'; DROP TABLE orders; --"}, "qmark")
    assert sql == "SELECT ? AS v" and values == ["'; DROP TABLE orders; --"]


# --------------------------------------------------------------------------- properties

_COLUMNS = {
    "orders": ["order_id", "customer_id", "status", "total", "channel"],
    "customers": ["customer_id", "name", "email", "country", "segment"],
    "products": ["product_id", "name", "category", "price"],
}
_SAFE_CHARS = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")


@st.composite
def read_queries(draw: st.DrawFn) -> str:
    table = draw(st.sampled_from(sorted(_COLUMNS)))
    cols = draw(st.lists(st.sampled_from(_COLUMNS[table]), min_size=1, max_size=3, unique=True))
    text = draw(st.text(_SAFE_CHARS, max_size=12)).replace("'", "''")
    col = draw(st.sampled_from(_COLUMNS[table]))
    pred = draw(
        st.sampled_from(
            [
                f"{col} = '{text}'",
                f"{col} IS NOT NULL",
                f"length(CAST({col} AS VARCHAR)) > {draw(st.integers(0, 99))}",
                f"{col} IN ('{text}', 'x;y', '--')",
            ]
        )
    )
    sql = f"SELECT {', '.join(cols)} FROM {table} WHERE {pred}"
    if draw(st.booleans()):
        sql = f"WITH q AS ({sql}) SELECT * FROM q"
    if draw(st.booleans()):
        sql += f" ORDER BY {cols[0]} LIMIT {draw(st.integers(1, 1000))}"
    return sql


_STATEMENTS = st.sampled_from(
    [
        "DROP TABLE orders",
        "SELECT 1",
        "DELETE FROM orders",
        "ATTACH 'x.db' AS x",
        "COPY orders TO '/tmp/x'",
        "x",
        "PRAGMA query_only = 0",
        "SET a = 1",
        "VALUES (1)",
    ]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(engine=st.sampled_from(ENGINES), sql=read_queries())
def test_random_reads_are_accepted(engine: str, sql: str) -> None:
    checked = check_read_only(sql, engine)
    assert checked.kind == "select" and checked.pageable


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    engine=st.sampled_from(ENGINES),
    sql=read_queries(),
    gap=st.sampled_from([" ", "\n", "/* c */", "-- c\n", ""]),
    extra=_STATEMENTS,
)
def test_appending_a_statement_is_always_refused(
    engine: str, sql: str, gap: str, extra: str
) -> None:
    with pytest.raises(UnsafeSQL, match="only one statement per call"):
        check_read_only(f"{sql};{gap}{extra}", engine)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(engine=st.sampled_from(ENGINES), tail=st.text(_SAFE_CHARS, max_size=30))
def test_anything_after_a_semicolon_is_refused_or_inert(engine: str, tail: str) -> None:
    base = "SELECT order_id FROM orders"
    try:
        checked = check_read_only(f"{base}; {tail}", engine)
    except (UnsafeSQL, InvalidRequest):
        return
    # Accepted only when the tail is nothing but whitespace and comments.
    assert checked.sql == base


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(engine=st.sampled_from(ENGINES), text=st.text(_SAFE_CHARS, max_size=40))
def test_any_string_literal_is_inert(engine: str, text: str) -> None:
    quoted = text.replace("'", "''")
    checked = check_read_only(f"SELECT '{quoted}' AS s FROM orders", engine)
    assert checked.kind == "select"
    assert named_parameters(checked.tree) == []
