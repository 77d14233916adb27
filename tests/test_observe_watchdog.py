"""Loop watchdog: a tool that blocks the loop is named in a warning and in the metrics."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from wellhead.observe.metrics import Metrics
from wellhead.observe.watchdog import Call, InFlight, LoopWatchdog


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def blocked_count(m: Metrics, tool: str) -> float:
    value = m.registry.get_sample_value("wellhead_event_loop_blocked_total", {"tool": tool})
    return value or 0.0


def watchdog_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "wellhead.watchdog" and r.levelno == logging.WARNING
    ]


@pytest.mark.anyio
async def test_blocking_tool_is_named(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="wellhead.watchdog")
    metrics = Metrics()
    seen: list[tuple[float, list[Call]]] = []
    wd = LoopWatchdog(
        interval=0.02,
        threshold=0.2,
        on_lag=lambda lag, calls: seen.append((lag, calls)),
        metrics=metrics,
    )
    inflight = wd.inflight

    async def quick_tool() -> None:
        inflight.enter("quick_tool", "inv-quick")
        await asyncio.sleep(0)
        inflight.exit("inv-quick")

    async def bad_tool() -> None:
        inflight.enter("bad_tool", "inv-bad")
        try:
            time.sleep(0.5)  # the plugin bug the watchdog exists to catch  # noqa: ASYNC251
        finally:
            inflight.exit("inv-bad")

    async with wd:
        await quick_tool()
        await asyncio.sleep(0.15)  # several healthy ticks between the two calls
        await bad_tool()
        await asyncio.sleep(0.1)  # let the watchdog wake up and report

    warnings = [r for r in watchdog_warnings(caplog) if "bad_tool" in r.getMessage()]
    assert len(warnings) == 1
    record = warnings[0]
    assert record.blocking_tools == ["bad_tool"]  # type: ignore[attr-defined]
    assert record.invocation_ids == ["inv-bad"]  # type: ignore[attr-defined]
    assert record.lag_seconds >= 0.2  # type: ignore[attr-defined]
    assert not any("quick_tool" in r.getMessage() for r in watchdog_warnings(caplog))
    assert blocked_count(metrics, "bad_tool") == 1
    assert any(c.tool == "bad_tool" for _, calls in seen for c in calls)
    assert wd.max_lag >= 0.2
    max_gauge = metrics.registry.get_sample_value("wellhead_event_loop_lag_max_seconds")
    assert max_gauge == pytest.approx(wd.max_lag)
    assert len(inflight) == 0


@pytest.mark.anyio
async def test_stall_with_no_tool_running(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="wellhead.watchdog")
    metrics = Metrics()
    calls_seen: list[list[Call]] = []

    async def on_lag(lag: float, calls: list[Call]) -> None:  # async callbacks are awaited
        calls_seen.append(calls)

    async with LoopWatchdog(interval=0.02, threshold=0.2, on_lag=on_lag, metrics=metrics) as wd:
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # noqa: ASYNC251
        await asyncio.sleep(0.1)
    assert wd.stalls >= 1
    assert blocked_count(metrics, "none") >= 1
    assert any("no tool" in r.getMessage() for r in watchdog_warnings(caplog))
    assert [] in calls_seen


@pytest.mark.anyio
async def test_failing_callback_does_not_kill_the_watchdog(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def boom(lag: float, calls: list[Call]) -> None:
        raise RuntimeError("callback bug")

    wd = LoopWatchdog(interval=0.02, threshold=0.1, on_lag=boom)
    task = wd.start()
    await asyncio.sleep(0.05)
    time.sleep(0.2)  # noqa: ASYNC251
    await asyncio.sleep(0.1)
    assert not task.done()
    assert wd.stalls >= 1
    # exc_text: the redacting log filter renders tracebacks into it and clears exc_info.
    assert any(r.exc_info or r.exc_text for r in caplog.records if r.name == "wellhead.watchdog")
    await wd.stop()
    assert task.done()


def test_inflight_overlap_rules() -> None:
    now = [0.0]
    inflight = InFlight(history=3, clock=lambda: now[0])
    inflight.enter("a", "1")  # t=0
    now[0] = 1.0
    inflight.exit("1")  # a ran [0, 1]
    inflight.enter("b", "2")  # b runs from 1 onwards
    now[0] = 2.0
    inflight.exit("unknown")  # ignored
    assert [c.tool for c in inflight.running()] == ["b"]
    assert [c.tool for c in inflight.active_between(0.5, 0.9)] == ["a"]
    assert [c.tool for c in inflight.active_between(1.0, 1.5)] == ["a", "b"]
    assert [c.tool for c in inflight.active_between(1.2, 5.0)] == ["b"]
    assert inflight.active_between(-2.0, -1.0) == []
    for i in range(5):  # history is bounded
        inflight.enter("c", f"c{i}")
        inflight.exit(f"c{i}")
    assert [c.tool for c in inflight.active_between(0.0, 5.0)] == ["b", "c", "c", "c"]


def test_invalid_settings() -> None:
    with pytest.raises(ValueError):
        LoopWatchdog(interval=0)
