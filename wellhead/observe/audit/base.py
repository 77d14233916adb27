"""The audit sink's core: a bounded queue and one writer thread, so no call waits on I/O.

Callers hand events to a bounded queue; one writer thread does all I/O, so the event loop
never waits on a disk or a socket. When the queue is full the caller is slowed down
(`aemit` awaits, `emit` blocks its thread) instead of losing events; only if that lasts
longer than `block_timeout` is an event dropped, and every drop is counted and reported
through `on_drop` (wire it to `Metrics.audit_dropped.inc`). `close()` drains the queue:
call it at graceful shutdown (an atexit hook does it too, as a last resort).

Remote sinks (`forward.ForwardingSink`) write to an on-disk spool here, which is fast and
local, and a second thread sends from the spool: a slow or absent receiver never fills the
queue, so it never slows a call down.
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.to_thread

from wellhead.errors import ConfigError
from wellhead.observe.bounds import MAX_LOGGED_ARGUMENT_BYTES, bound_arguments
from wellhead.observe.redact import redact_mapping

logger = logging.getLogger("wellhead.audit")


class AuditReceiverError(ConfigError):
    """A remote audit receiver cannot be used: misconfigured (refuse to start) or unreachable.

    Unreachable is not fatal at start-up (events spool until it answers; /readyz says so);
    a certificate, name or endpoint that can never work is.
    """

    def __init__(self, message: str, *, unreachable: bool) -> None:
        super().__init__(message)
        self.unreachable = unreachable


DropCallback = Callable[[int], None]


class _Stop:
    """Sentinel: everything queued before it is written, then the writer exits."""


class _Flush:
    """Marker: everything queued before it has been written once `done` is set."""

    def __init__(self) -> None:
        self.done = threading.Event()


_Item = bytes | _Stop | _Flush


def utc_timestamp(when: float | None = None) -> str:
    """RFC 3339 UTC timestamp with microseconds, as used in events and syslog headers."""
    dt = datetime.fromtimestamp(time.time() if when is None else when, UTC)
    return dt.isoformat(timespec="microseconds").replace("+00:00", "Z")


class AuditSink:
    """Bounded queue + one writer thread. Subclasses encode events and do the I/O.

    Thread-safe; `emit` may be called from any thread, `aemit` from the event loop.
    """

    ensure_ascii = False
    max_batch = 512
    write_attempts = 3

    def __init__(
        self,
        *,
        queue_size: int = 10_000,
        block_timeout: float = 10.0,
        on_drop: DropCallback | None = None,
        redact: bool = True,
        max_argument_bytes: int = MAX_LOGGED_ARGUMENT_BYTES,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=queue_size)
        self._block_timeout = block_timeout
        self._on_drop = on_drop
        self._redact = redact
        self._max_argument_bytes = max_argument_bytes  # a caller's arguments, cut and marked
        self._lock = threading.Lock()  # guards _closed against a concurrent put
        self._space = threading.Condition()
        self._closed = False
        self._dropped = 0
        self._written = 0
        self._thread = threading.Thread(
            target=self._run, name=f"{type(self).__name__}-writer", daemon=True
        )
        self._thread.start()
        atexit.register(self.close)

    # -- public API -------------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Events lost so far (queue full past block_timeout, I/O failed, or sink closed)."""
        return self._dropped

    @property
    def written(self) -> int:
        """Events handed to the OS (file write / socket send) so far."""
        return self._written

    def emit(self, event: Mapping[str, Any]) -> None:
        """Queue an event; blocks this thread (up to block_timeout) only when the queue is full.

        On the event loop prefer `await aemit(...)`, which yields instead of blocking.
        """
        data = self._prepare(event)
        if data is None:
            return
        deadline = time.monotonic() + self._block_timeout
        while True:
            accepted = self._offer(data)
            if accepted is not None:
                if not accepted:
                    self._drop(1, "sink is closed")
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._drop(1, f"queue full for {self._block_timeout}s")
                return
            with self._space:
                self._space.wait(min(remaining, 0.05))

    async def aemit(self, event: Mapping[str, Any]) -> None:
        """Queue an event without ever blocking the loop; awaits while the queue is full."""
        data = self._prepare(event)
        if data is None:
            return
        deadline = time.monotonic() + self._block_timeout
        delay = 0.0005
        while True:
            accepted = self._offer(data)
            if accepted is not None:
                if not accepted:
                    self._drop(1, "sink is closed")
                return
            if time.monotonic() >= deadline:
                self._drop(1, f"queue full for {self._block_timeout}s")
                return
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.05)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything emitted before this call is written. False on timeout."""
        marker = _Flush()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            accepted = self._offer(marker)
            if accepted is False:  # closed: close() drains everything, wait for that
                self._thread.join(timeout)
                return not self._thread.is_alive()
            if accepted:
                return marker.done.wait(timeout)
            if deadline is not None and time.monotonic() >= deadline:
                return False
            with self._space:
                self._space.wait(0.05)

    def close(self, timeout: float | None = 30.0) -> bool:
        """Refuse new events, write every queued one, release the file/socket. Idempotent."""
        with self._lock:
            already = self._closed
            self._closed = True
        if not already:
            atexit.unregister(self.close)
            try:
                self._queue.put(_Stop(), timeout=timeout)
            except queue.Full:
                logger.error("audit sink close timed out with a full queue")
                return False
        self._thread.join(timeout)
        return not self._thread.is_alive()

    async def aflush(self, timeout: float | None = None) -> bool:
        return await anyio.to_thread.run_sync(self.flush, timeout)

    async def aclose(self, timeout: float | None = 30.0) -> bool:
        return await anyio.to_thread.run_sync(self.close, timeout)

    def probe(self, timeout: float = 5.0) -> None:
        """Check the destination once (start-up); raise `AuditReceiverError` if it is unusable."""

    def health(self) -> str:
        """`ok`, or what is wrong with the destination right now (for /readyz)."""
        return "ok"

    # -- subclass hooks (encode runs in the caller's thread, the rest in the writer) --------

    def _encode(self, line: str, event: Mapping[str, Any]) -> bytes:
        raise NotImplementedError

    def _write_batch(self, batch: Sequence[bytes]) -> int:
        """Write the batch; return how many events were written (the rest were dropped)."""
        raise NotImplementedError

    def _reset_io(self) -> None:
        """Drop a broken connection/handle so the next attempt starts clean."""

    def _flush_io(self) -> None:
        """Push buffered bytes to the OS."""

    def _close_io(self) -> None:
        """Release the file or socket."""

    # -- internals --------------------------------------------------------------------------

    def _prepare(self, event: Mapping[str, Any]) -> bytes | None:
        """Snapshot and serialise now, so later mutation of `event` cannot change the record."""
        try:
            record: dict[str, Any] = dict(event)
            if "ts" not in record:
                record = {"ts": utc_timestamp(), **record}
            if self._redact:
                record = redact_mapping(record)
            if record.get("arguments") is not None:
                record["arguments"] = bound_arguments(record["arguments"], self._max_argument_bytes)
            line = json.dumps(
                record, default=str, separators=(",", ":"), ensure_ascii=self.ensure_ascii
            )
            return self._encode(line, record)
        except Exception:
            logger.exception("audit event could not be serialised")
            self._drop(1, "event could not be serialised")
            return None

    def _offer(self, data: _Item) -> bool | None:
        """True if queued, False if the sink is closed, None if the queue is full."""
        with self._lock:
            if self._closed:
                return False
            try:
                self._queue.put_nowait(data)
            except queue.Full:
                return None
            return True

    def _drop(self, n: int, why: str) -> None:
        with self._lock:
            self._dropped += n
            total = self._dropped
        logger.error("audit: %d event(s) dropped (%s); %d dropped in total", n, why, total)
        if self._on_drop is not None:
            try:
                self._on_drop(n)
            except Exception:
                logger.exception("audit on_drop callback failed")

    def _run(self) -> None:
        while True:
            items = [self._queue.get()]
            while len(items) < self.max_batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            with self._space:
                self._space.notify_all()
            data: list[bytes] = []
            for item in items:
                if isinstance(item, bytes):
                    data.append(item)
                    continue
                self._write_with_retries(data)
                data = []
                self._safe(self._flush_io)
                if isinstance(item, _Flush):
                    item.done.set()
                else:
                    self._safe(self._close_io)
                    return
            self._write_with_retries(data)
            self._safe(self._flush_io)

    def _write_with_retries(self, data: list[bytes]) -> None:
        if not data:
            return
        for attempt in range(1, self.write_attempts + 1):
            try:
                n = self._write_batch(data)
            except Exception as exc:
                logger.warning(
                    "audit write failed (attempt %d/%d): %s", attempt, self.write_attempts, exc
                )
                self._safe(self._reset_io)
                if attempt < self.write_attempts:
                    time.sleep(0.1 * 2**attempt)
            else:
                with self._lock:
                    self._written += n
                return
        self._drop(len(data), "writing failed")

    @staticmethod
    def _safe(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            logger.exception("audit sink I/O error")
