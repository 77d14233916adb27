"""Audit sinks for a SIEM: one JSON event per tool call, none lost.

Callers hand events to a bounded queue; one writer thread does all I/O, so the event loop
never waits on a disk or a socket. When the queue is full the caller is slowed down
(`aemit` awaits, `emit` blocks its thread) instead of losing events; only if that lasts
longer than `block_timeout` is an event dropped, and every drop is counted and reported
through `on_drop` (wire it to `Metrics.audit_dropped.inc`). `close()` drains the queue:
call it at graceful shutdown (an atexit hook does it too, as a last resort).

Sinks: `JsonlFileAuditSink` (size-rotated JSON lines), `SyslogAuditSink` (RFC 5424 over
UDP, or TCP with RFC 6587 octet counting), `MultiAuditSink` (fan out to several).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread

from wellhead.observe.bounds import MAX_LOGGED_ARGUMENT_BYTES, bound_arguments
from wellhead.observe.redact import redact_mapping

logger = logging.getLogger("wellhead.audit")

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


class JsonlFileAuditSink(AuditSink):
    """One JSON object per line, rotated by size: `path`, then `path.1` (newest) … `path.N`.

    A line is never split across files; a line longer than max_bytes gets a file of its own.
    If a write fails midway the batch is retried whole, so a disk error may duplicate lines
    (at-least-once) but never lose or split them.
    `max_bytes=0` or `backup_count=0` disables rotation. Beyond `backup_count` the oldest
    file is deleted: that is the retention the operator chose. One process per file.
    """

    def __init__(self, path: str | os.PathLike[str], max_bytes: int, backup_count: int, **kw: Any):
        if max_bytes < 0 or backup_count < 0:
            raise ValueError("max_bytes and backup_count must not be negative")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self._open()
        super().__init__(**kw)

    def _open(self) -> Any:
        # 0o640: audit trails carry who-did-what; keep them away from other users.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        f = os.fdopen(fd, "ab")
        self._size = f.seek(0, os.SEEK_END)
        return f

    def _rotate(self) -> None:
        self._file.close()
        for i in range(self.backup_count - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._file = self._open()

    def _encode(self, line: str, event: Mapping[str, Any]) -> bytes:
        return line.encode("utf-8") + b"\n"

    def _write_batch(self, batch: Sequence[bytes]) -> int:
        rotating = self.max_bytes > 0 and self.backup_count > 0
        chunk: list[bytes] = []
        size = self._size
        for line in batch:
            if rotating and size > 0 and size + len(line) > self.max_bytes:
                self._file.write(b"".join(chunk))
                self._size = size
                chunk = []
                self._rotate()
                size = self._size
            chunk.append(line)
            size += len(line)
        self._file.write(b"".join(chunk))
        self._size = size
        return len(batch)

    def _reset_io(self) -> None:
        try:
            self._file.close()
        finally:
            self._file = self._open()

    def _flush_io(self) -> None:
        self._file.flush()

    def _close_io(self) -> None:
        self._file.close()


# RFC 5424 §6.2.1 severities; facility 13 is "log audit".
SEVERITY = {"debug": 7, "info": 6, "notice": 5, "warning": 4, "error": 3, "critical": 2}
_OUTCOME_SEVERITY = {
    "ok": 6,
    "tool_error": 5,
    "cancelled": 5,
    "rate_limited": 5,
    "timeout": 4,
    "invalid_output": 3,
    "internal_error": 3,
}
_MAX_UDP_PAYLOAD = 65_507


def _header_field(value: str, max_len: int) -> str:
    """RFC 5424 header fields are 1..N printable US-ASCII characters (33..126), or '-'."""
    cleaned = "".join(c for c in value if 33 <= ord(c) <= 126)[:max_len]
    return cleaned or "-"


class SyslogAuditSink(AuditSink):
    """RFC 5424 messages whose MSG is the JSON event (ASCII-only, so no BOM is needed).

    UDP: one datagram per event (events over 64 KiB cannot be sent and are counted as
    dropped). TCP: RFC 6587 octet-counting frames over one connection, reconnected on
    failure; a batch that failed mid-send is resent whole (at-least-once).
    """

    ensure_ascii = True

    def __init__(
        self,
        host: str,
        port: int = 514,
        protocol: Literal["udp", "tcp"] = "udp",
        app_name: str = "wellhead",
        *,
        facility: int = 13,
        hostname: str | None = None,
        connect_timeout: float = 5.0,
        **kw: Any,
    ) -> None:
        if protocol not in ("udp", "tcp"):
            raise ValueError(f"syslog protocol must be 'udp' or 'tcp', not {protocol!r}")
        if not 0 <= facility <= 23:
            raise ValueError("syslog facility must be between 0 and 23")
        self.host, self.port, self.protocol = host, port, protocol
        self.facility = facility
        self.app_name = _header_field(app_name, 48)
        self.hostname = _header_field(hostname or socket.gethostname(), 255)
        self.procid = str(os.getpid())
        self.connect_timeout = connect_timeout
        self._sock: socket.socket | None = None
        self._addr: Any = None
        super().__init__(**kw)

    def _severity(self, event: Mapping[str, Any]) -> int:
        level = event.get("level")
        if isinstance(level, str) and level.lower() in SEVERITY:
            return SEVERITY[level.lower()]
        outcome = event.get("outcome")
        return _OUTCOME_SEVERITY.get(outcome, 6) if isinstance(outcome, str) else 6

    def _encode(self, line: str, event: Mapping[str, Any]) -> bytes:
        pri = self.facility * 8 + self._severity(event)
        msgid = _header_field(str(event.get("event") or "audit"), 32)
        header = (
            f"<{pri}>1 {utc_timestamp()} {self.hostname} {self.app_name} {self.procid} {msgid} -"
        )
        msg = f"{header} {line}".encode("ascii")
        if self.protocol == "tcp":
            return str(len(msg)).encode("ascii") + b" " + msg
        return msg

    def _connect(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        if self.protocol == "tcp":
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            family, kind, proto, _, addr = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_DGRAM
            )[0]
            sock = socket.socket(family, kind, proto)
            self._addr = addr
        self._sock = sock
        return sock

    def _write_batch(self, batch: Sequence[bytes]) -> int:
        sock = self._connect()
        if self.protocol == "tcp":
            sock.sendall(b"".join(batch))
            return len(batch)
        too_big = 0
        for datagram in batch:
            if len(datagram) > _MAX_UDP_PAYLOAD:
                too_big += 1
                continue
            sock.sendto(datagram, self._addr)
        if too_big:
            self._drop(too_big, "event larger than a UDP datagram; use TCP syslog")
        return len(batch) - too_big

    def _reset_io(self) -> None:
        self._close_io()

    def _close_io(self) -> None:
        if self._sock is not None:
            sock, self._sock = self._sock, None
            sock.close()


class MultiAuditSink:
    """Fan one event out to several sinks (e.g. a local JSONL file and a SIEM over syslog)."""

    def __init__(self, sinks: Sequence[AuditSink]) -> None:
        self.sinks = list(sinks)

    @property
    def dropped(self) -> int:
        return sum(s.dropped for s in self.sinks)

    @staticmethod
    def _stamped(event: Mapping[str, Any]) -> Mapping[str, Any]:
        """Stamp once so every destination records the same time."""
        return event if "ts" in event else {"ts": utc_timestamp(), **event}

    def emit(self, event: Mapping[str, Any]) -> None:
        event = self._stamped(event)
        for sink in self.sinks:
            sink.emit(event)

    async def aemit(self, event: Mapping[str, Any]) -> None:
        event = self._stamped(event)
        for sink in self.sinks:
            await sink.aemit(event)

    def flush(self, timeout: float | None = None) -> bool:
        return all([s.flush(timeout) for s in self.sinks])

    def close(self, timeout: float | None = 30.0) -> bool:
        return all([s.close(timeout) for s in self.sinks])

    async def aflush(self, timeout: float | None = None) -> bool:
        return await anyio.to_thread.run_sync(self.flush, timeout)

    async def aclose(self, timeout: float | None = 30.0) -> bool:
        return await anyio.to_thread.run_sync(self.close, timeout)
