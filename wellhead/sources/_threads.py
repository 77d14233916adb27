"""Run a blocking driver call in a worker thread that the engine really stops.

A sync driver in `to_thread` is not stopped by cancelling the awaiting task: the
thread keeps the query running and the connection busy. `run_interruptible` waits for
the call under a deadline; when the deadline passes or the caller is cancelled it calls
the engine's own interrupt (repeatedly, so an interrupt that lands just before the
statement starts is not lost), waits a bounded grace period for the thread to return,
and only then lets the timeout or the cancellation continue.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import anyio

from wellhead.errors import QueryTimeout

T = TypeVar("T")

INTERRUPT_GRACE = 5.0
"""Seconds to wait for an interrupted call to return before abandoning its thread."""

_POLL_FIRST = 0.001
_POLL_MAX = 0.05


class Deadline(Exception):
    """The call passed its deadline; the engine was interrupted."""

    def __init__(self, timeout: float, *, finished: bool) -> None:
        super().__init__(f"call exceeded {timeout:g} s")
        self.timeout = timeout
        self.finished = finished
        """False when the thread did not return within the grace period (it was abandoned)."""


class Interruptible:
    """Shared state between the awaiting task and the worker thread of one call.

    The worker registers the engine handle it is using (`attach`); the task calls
    `interrupt` when it gives up. `interrupted` lets the worker refuse to start
    a statement after the call was already abandoned.
    """

    def __init__(self, interrupt: Callable[[object], None]) -> None:
        self._interrupt = interrupt
        self._handle: object | None = None
        self._lock = threading.Lock()
        self.interrupted = False
        self.abandoned = False
        self.started = False
        self.done = threading.Event()

    def attach(self, handle: object) -> None:
        with self._lock:
            self._handle = handle
        if self.interrupted:
            self.fire()

    def detach(self) -> None:
        with self._lock:
            self._handle = None

    def fire(self) -> None:
        self.interrupted = True
        with self._lock:
            handle = self._handle
            if handle is None:
                return
            try:
                self._interrupt(handle)
            except Exception:  # the handle may have closed between the check and the call
                pass


async def run_interruptible(
    fn: Callable[[Interruptible], T],
    interrupt: Callable[[object], None],
    *,
    timeout: float,  # noqa: ASYNC109 - the engine must be interrupted, not just awaited
    grace: float = INTERRUPT_GRACE,
    limiter: anyio.CapacityLimiter | None = None,
    active: set[Interruptible] | None = None,
) -> T:
    """Run `fn(state)` in a worker thread; interrupt it on deadline or cancellation.

    Raises `Deadline` after `timeout` seconds; re-raises the caller's cancellation
    after interrupting. In both cases the worker thread has returned unless
    `grace` seconds passed first, in which case `state.abandoned` is set so the
    worker can discard its connection when it finally returns. While the call runs its
    state is in `active`, so closing a source can interrupt everything in flight.
    """
    state = Interruptible(interrupt)

    def work() -> T:
        state.started = True
        try:
            return fn(state)
        finally:
            state.done.set()

    if active is not None:
        active.add(state)
    try:
        finished = True
        with anyio.move_on_after(timeout) as scope:
            try:
                return await anyio.to_thread.run_sync(work, abandon_on_cancel=True, limiter=limiter)
            except anyio.get_cancelled_exc_class():
                finished = await _stop(state, grace)
                raise
        # Only reached when our own deadline cancelled the call (the scope swallowed it).
        assert scope.cancelled_caught
        raise Deadline(timeout, finished=finished)
    finally:
        if active is not None:
            active.discard(state)


async def _stop(state: Interruptible, grace: float) -> bool:
    """Interrupt until the worker returns or `grace` passes; True if it returned."""
    state.fire()  # sets `interrupted` first: a worker that starts later stops at once
    if state.done.is_set() or not state.started:
        return True
    poll = _POLL_FIRST
    with anyio.CancelScope(shield=True):
        with anyio.move_on_after(grace):
            while not state.done.is_set():
                await anyio.sleep(poll)
                state.fire()
                poll = min(poll * 2, _POLL_MAX)
    if not state.done.is_set():
        state.abandoned = True
        return False
    return True


def timeout_error(timeout: float) -> QueryTimeout:
    """The agent-facing message for a query stopped at its deadline."""
    return QueryTimeout(
        f"query exceeded the {timeout:g} s limit and was cancelled; narrow it (filter on an "
        "indexed or partition column, aggregate, or select fewer columns) and try again"
    )
