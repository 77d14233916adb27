"""Deadlines cancel in the engine, the loop never blocks, progress flows while a query runs."""

from __future__ import annotations

import anyio
import pytest
from fastmcp import Client

from tests.conftest import settings_for
from tests.helpers import error_of
from wellhead.app import build_server
from wellhead.sql.cost import CostGuardConfig

pytestmark = pytest.mark.anyio

SLOW_SQL = "SELECT sum(hash(i)) FROM range(50000000000) t(i)"


def unguarded(path, **limits):  # type: ignore[no-untyped-def]
    """SLOW_SQL is hopeless on purpose; the cost guard (on by default) would refuse it before
    it runs (tests/test_cost_guard.py), so these deadline tests switch it off."""
    settings = settings_for(path, **limits)
    return settings.model_copy(update={"cost_guard": CostGuardConfig(free_sql=False)})


async def test_timeout_interrupts_and_the_source_stays_usable(demo_db):
    server = build_server(unguarded(demo_db, query_timeout_s=1.0))
    async with Client(server) as client:
        with anyio.fail_after(20):  # a guard against a hang, not a performance assertion
            slow = await client.call_tool("query", {"sql": SLOW_SQL}, raise_on_error=False)
        after = await client.call_tool("query", {"sql": "SELECT 42"})
    payload = error_of(slow)
    assert payload["error"] == "timeout"
    assert "1 s limit" in payload["message"]
    assert after.structured_content["rows"] == [[42]]


async def test_second_client_is_answered_while_a_long_query_runs(demo_db):
    server = build_server(unguarded(demo_db, query_timeout_s=6.0))
    finished: list[str] = []

    async def slow_call() -> None:
        async with Client(server) as client:
            await client.call_tool("query", {"sql": SLOW_SQL}, raise_on_error=False)
        finished.append("slow")

    async with anyio.create_task_group() as group:
        group.start_soon(slow_call)
        await anyio.sleep(0.5)
        async with Client(server) as other:
            result = await other.call_tool("query", {"sql": "SELECT count(*) FROM customers"})
        finished.append("fast")
    assert result.structured_content["rows"][0][0] > 0
    assert finished == ["fast", "slow"]


async def test_progress_notifications_while_a_query_runs(demo_db):
    server = build_server(unguarded(demo_db, query_timeout_s=2.5))
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with Client(server, progress_handler=on_progress) as client:
        await client.call_tool("query", {"sql": SLOW_SQL}, raise_on_error=False)
    assert seen, "no progress notification arrived"
    assert all(total == 2.5 for _, total, _ in seen)
    assert "running" in (seen[0][2] or "")


async def test_client_cancellation_interrupts_the_engine(demo_db):
    from wellhead.app import build_runtime

    settings = unguarded(demo_db, query_timeout_s=30.0)
    runtime = build_runtime(settings)
    outcomes: list[str] = []
    runtime.observers.append(lambda record: outcomes.append(record.outcome))
    server = build_server(settings, runtime)
    async with Client(server) as client:
        with anyio.move_on_after(1.0):
            await client.call_tool("query", {"sql": SLOW_SQL})
        # The engine was interrupted: the next query is answered at once, not after 30 s.
        with anyio.fail_after(10):
            after = await client.call_tool("query", {"sql": "SELECT 7"})
    assert after.structured_content["rows"] == [[7]]
    with anyio.fail_after(10):
        while "cancelled" not in outcomes:  # noqa: ASYNC110 - polling a plain list
            await anyio.sleep(0.05)
