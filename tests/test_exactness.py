"""Walking every cursor returns exactly the full result, checked against the engine on 1M rows.

No row lost, none repeated, in order when the query orders; also without ORDER BY. Large
pages keep the walk short: the limits are the server's own configuration, not a special path.
"""

from __future__ import annotations

import pytest

from tests.conftest import settings_for
from tests.helpers import client_for, walk

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
BIG_PAGES = {"max_rows_per_page": 100_000, "max_result_budget_bytes": 4_194_304}


async def test_unordered_walk_over_a_million_rows_is_exact(demo_db, engine):
    sql = "SELECT order_id, customer_id FROM orders"
    expected = engine.execute(sql).fetchall()
    assert len(expected) >= 1_000_000
    async with client_for(settings_for(demo_db, **BIG_PAGES)) as client:
        rows, pages = await walk(client, sql, max_rows=100_000, budget_bytes=4_194_304)
    assert pages >= 10
    assert len(rows) == len(expected)
    assert sorted(tuple(r) for r in rows) == sorted(expected)


async def test_ordered_walk_with_ties_over_a_million_rows_keeps_order(demo_db, engine):
    sql = "SELECT customer_id, status FROM orders ORDER BY customer_id"
    expected = engine.execute(sql).fetchall()
    async with client_for(settings_for(demo_db, **BIG_PAGES)) as client:
        rows, _ = await walk(client, sql, max_rows=100_000, budget_bytes=4_194_304)
    keys = [r[0] for r in rows]
    assert keys == [e[0] for e in expected]  # same order of keys, ties included
    assert sorted(tuple(r) for r in rows) == sorted(expected)
