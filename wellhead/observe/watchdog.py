"""Event-loop watchdog: measures loop lag and names the tool that was running when it spiked.

A plugin that calls `time.sleep` or a sync driver on the loop freezes every other client,
and nothing fails loudly. The watchdog sleeps `interval` on the loop and measures how late
it wakes; past `threshold` it logs a warning on `wellhead.watchdog` naming the tools in
flight during the stall, bumps `wellhead_event_loop_blocked_total{tool}`, and calls
`on_lag`. The guard middleware feeds `InFlight.enter/exit` around every call.

The culprit has usually already returned when the watchdog wakes (the stall ended by it
finishing), so `InFlight` also remembers recently finished calls: a call is blamed when its
run overlaps the stalled window. A call merely awaiting I/O during the stall is named too;
the warning lists every candidate rather than guess.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from wellhead.observe.metrics import Metrics

logger = logging.getLogger("wellhead.watchdog")

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Call:
    """One tool invocation as the watchdog sees it (monotonic times)."""

    tool: str
    invocation_id: str
    started: float
    ended: float | None = None


class InFlight:
    """Registry of running tool calls plus a short memory of finished ones.

    No contextvars: the middleware calls `enter` before the tool and `exit` after it, on
    any thread. `history` bounds the memory of finished calls.
    """

    def __init__(self, history: int = 1024, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._running: dict[str, Call] = {}
        self._finished: deque[Call] = deque(maxlen=history)

    def enter(self, tool: str, invocation_id: str) -> None:
        call = Call(tool, invocation_id, self._clock())
        with self._lock:
            self._running[invocation_id] = call

    def exit(self, invocation_id: str) -> None:
        """Mark a call finished; unknown ids are ignored so a guard can call it blindly."""
        now = self._clock()
        with self._lock:
            call = self._running.pop(invocation_id, None)
            if call is not None:
                self._finished.append(Call(call.tool, call.invocation_id, call.started, ended=now))

    def running(self) -> list[Call]:
        with self._lock:
            return sorted(self._running.values(), key=lambda c: c.started)

    def active_between(self, start: float, end: float) -> list[Call]:
        """Calls whose run overlaps [start, end]: running now, or finished after `start`."""
        with self._lock:
            calls = [*self._running.values(), *self._finished]
        hits = [c for c in calls if c.started <= end and (c.ended is None or c.ended >= start)]
        return sorted(hits, key=lambda c: c.started)

    def counts(self) -> dict[str, int]:
        """Running calls per tool (the in-flight metric, read at scrape time)."""
        with self._lock:
            calls = list(self._running.values())
        counts: dict[str, int] = {}
        for call in calls:
            counts[call.tool] = counts.get(call.tool, 0) + 1
        return counts

    def __len__(self) -> int:
        with self._lock:
            return len(self._running)


LagCallback = Callable[[float, list[Call]], Awaitable[None] | None]


class LoopWatchdog:
    """Async task measuring loop lag; start it on the loop it should watch."""

    def __init__(
        self,
        interval: float = 0.05,
        threshold: float = 0.2,
        on_lag: LagCallback | None = None,
        *,
        metrics: Metrics | None = None,
        inflight: InFlight | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        if interval <= 0 or threshold <= 0:
            raise ValueError("interval and threshold must be positive")
        self.interval = interval
        self.threshold = threshold
        self.on_lag = on_lag
        self.metrics = metrics
        self.inflight = inflight if inflight is not None else InFlight(clock=clock)
        self._clock = clock
        self.last_lag = 0.0
        self.max_lag = 0.0
        self.stalls = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        """Run `run()` as a background task on the current event loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self.run(), name="wellhead-loop-watchdog"
            )
        return self._task

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def __aenter__(self) -> LoopWatchdog:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self) -> None:
        """Measure forever (until cancelled)."""
        while True:
            before = self._clock()
            await asyncio.sleep(self.interval)
            after = self._clock()
            await self._observe(before, after)

    async def _observe(self, before: float, after: float) -> None:
        lag = max(0.0, after - before - self.interval)
        self.last_lag = lag
        self.max_lag = max(self.max_lag, lag)
        if self.metrics is not None:
            self.metrics.set_loop_lag(lag, self.max_lag)
        if lag < self.threshold:
            return
        self.stalls += 1
        calls = self.inflight.active_between(before + self.interval, after)
        tools = sorted({c.tool for c in calls})
        if self.metrics is not None:
            self.metrics.loop_blocked_by(tools)
        logger.warning(
            "event loop blocked for %.0f ms (threshold %.0f ms) while running: %s",
            lag * 1000,
            self.threshold * 1000,
            ", ".join(tools) or "no tool",
            extra={
                "lag_seconds": round(lag, 4),
                "blocking_tools": tools,
                "invocation_ids": [c.invocation_id for c in calls],
            },
        )
        if self.on_lag is not None:
            try:
                result = self.on_lag(lag, calls)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("watchdog on_lag callback failed")
