"""Remote sinks: events go to a local spool first, a forwarder thread sends them on.

The writer thread's only I/O is appending to the spool, so a receiver that is down, slow or
black-holed never backs the queue up into the calls. The forwarder sends the oldest
events in batches and moves the spool's cursor only once a batch was accepted; on failure
it reconnects with backoff (at most `retry_max_s` between attempts), logs a warning when
the receiver goes away (and every 30 s while it stays away, with the spool's size and
age) and an info line when it is back. A full spool refuses new events: each one is
counted in `dropped` and reported through `on_drop`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

from wellhead.observe.audit.base import AuditReceiverError, AuditSink
from wellhead.observe.audit.spool import Spool, SpoolStats

logger = logging.getLogger("wellhead.audit")

DEFAULT_SPOOL_BYTES = 256 * 1024 * 1024
_WARN_EVERY_S = 30.0


class Rejected(Exception):
    """The receiver refused these events for good (a 4xx): retrying cannot help."""


class ForwardingSink(AuditSink):
    """A sink whose destination is over the network. Subclasses implement `_send`.

    `spool_dir=None` spools to a temporary directory removed at close (tests, embedding):
    what is still in it then is counted as dropped. Configured sinks always get a real
    directory, so what is left at shutdown is sent at the next start.
    """

    kind = "remote"

    def __init__(
        self,
        *,
        spool_dir: str | None = None,
        spool_max_bytes: int = DEFAULT_SPOOL_BYTES,
        retry_max_s: float = 2.0,
        drain_timeout_s: float = 10.0,
        send_batch: int = 500,
        linger_s: float = 0.05,
        **kw: Any,
    ) -> None:
        self._temporary = spool_dir is None
        self._spool_dir = spool_dir
        self._spool_max_bytes = spool_max_bytes
        self._spool: Spool | None = None
        self._open_lock = threading.Lock()
        self.retry_max_s = retry_max_s
        self.drain_timeout_s = drain_timeout_s
        self.send_batch = send_batch
        self.linger_s = linger_s
        self.forwarded = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._drain_deadline = float("inf")
        self._problem: str | None = None  # why the receiver is unusable right now
        self._failing_since: float | None = None
        self._last_warning = 0.0
        self._forwarder = threading.Thread(
            target=self._forward_loop, name=f"{type(self).__name__}-forwarder", daemon=True
        )
        super().__init__(**kw)

    def open(self) -> Spool:
        """Take the spool (its directory lock) and start forwarding; idempotent.

        Done at server start (or at the first event), not when the sink is built, so that
        `wellhead check` next to a running server does not contend for the directory.
        """
        with self._open_lock:
            if self._spool is not None:
                return self._spool
            directory = self._spool_dir or tempfile.mkdtemp(prefix="wellhead-audit-spool-")
            self._spool = Spool(directory, self._spool_max_bytes)
            left = self._spool.stats()
            if left.events:
                logger.warning(
                    "audit %s: %d event(s) left unsent by the previous run; replaying them first",
                    self.describe(),
                    left.events,
                )
            self._forwarder.start()
            return self._spool

    @property
    def spool(self) -> Spool:
        return self._spool if self._spool is not None else self.open()

    # -- public -----------------------------------------------------------------------------

    def describe(self) -> str:
        """The receiver, for log lines (never a credential)."""
        return self.kind

    def spool_stats(self) -> SpoolStats:
        spool = self._spool
        return spool.stats() if spool is not None else SpoolStats(0, 0, 0.0, 0)

    def health(self) -> str:
        problem = self._problem
        return "ok" if problem is None else f"unavailable: {problem}"

    def flush_to_spool(self, timeout: float | None = None) -> bool:
        """Wait until everything emitted before now is in the spool (or counted as dropped)."""
        return super().flush(timeout)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything emitted before now was accepted by the receiver."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not super().flush(timeout):
            return False
        self._wake.set()
        while not self.spool.empty:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float | None = 30.0) -> bool:
        """Drain the queue into the spool, then try for `drain_timeout_s` to send the rest."""
        closed = super().close(timeout)
        if self._spool is None or not self._forwarder.is_alive():
            return closed
        self._drain_deadline = time.monotonic() + self.drain_timeout_s
        self._stopping.set()
        self._wake.set()
        self._forwarder.join(self.drain_timeout_s + 10)
        self._safe(self._disconnect)
        left = self.spool.stats().events
        self.spool.close()
        if left and self._temporary:
            self._drop(left, "not delivered before close (temporary spool)")
        elif left:
            logger.warning(
                "audit %s: %d event(s) not delivered yet stay in %s and are sent at the next start",
                self.describe(),
                left,
                self.spool.directory,
            )
        if self._temporary:
            shutil.rmtree(self.spool.directory, ignore_errors=True)
        return closed and not self._forwarder.is_alive()

    # -- subclass hooks (all run in the forwarder thread) -----------------------------------

    def _send(self, batch: Sequence[bytes]) -> int:
        """Deliver the batch in order; return how many the receiver refused (0: all taken).

        Raise `Rejected` when it refuses them all for good, any other exception when the
        attempt failed and should be retried (the connection is then reset).
        """
        raise NotImplementedError

    def _disconnect(self) -> None:
        """Drop the connection so the next attempt starts clean."""

    # -- the writer thread writes to the spool ----------------------------------------------

    def _write_batch(self, batch: Sequence[bytes]) -> int:
        accepted = self.spool.append(batch)
        if accepted < len(batch):
            self._drop(
                len(batch) - accepted,
                f"spool {self.spool.directory} is full ({self.spool.max_bytes} bytes)",
            )
        self._wake.set()
        return accepted

    # -- the forwarder ----------------------------------------------------------------------

    def _forward_loop(self) -> None:
        delay = 0.05
        while True:
            if self.spool.empty:
                if self._stopping.is_set():
                    return
                if self._problem is not None:  # nothing to send: see whether it is back
                    try:
                        self.probe(timeout=min(5.0, self.retry_max_s + 1))
                    except Exception as exc:  # noqa: BLE001 - reported through health
                        self._failed(exc)
                    else:
                        self._recovered()
                self._wake.wait(delay if self._problem is not None else 1.0)
                self._wake.clear()
                continue
            if self.linger_s and self.spool.stats().events < self.send_batch:
                # Let a batch gather: one request per event would cost the process more
                # CPU than the calls it audits. At most `linger_s` of added latency.
                self._stopping.wait(self.linger_s)
            batch = self.spool.read(self.send_batch)
            if not batch:
                self._wake.wait(0.01)
                self._wake.clear()
                continue
            try:
                refused = self._send(batch)
            except Rejected as exc:
                self.spool.commit()
                self._drop(len(batch), f"{self.describe()} rejected them: {exc}")
                continue
            except Exception as exc:  # noqa: BLE001 - any failure: keep them, retry later
                self._failed(exc)
                self._safe(self._disconnect)
                if self._stopping.is_set() and time.monotonic() >= self._drain_deadline:
                    return
                # Back off whatever arrives meanwhile (new events wake `_wake`, not this):
                # retrying per event would spend the process's CPU on a receiver that is away.
                if self._stopping.is_set():  # closing: retry until the drain deadline
                    time.sleep(max(0.0, min(delay, self._drain_deadline - time.monotonic())))
                else:
                    self._stopping.wait(delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            self.spool.commit()
            with self._lock:
                self.forwarded += len(batch) - refused
            if refused:
                self._drop(refused, f"{self.describe()} refused part of a batch")
            self._recovered()
            delay = 0.05

    def _failed(self, exc: BaseException) -> None:
        reason = str(exc) or type(exc).__name__
        now = time.monotonic()
        first = self._problem is None
        self._problem = reason
        if first:
            self._failing_since = now
        if first or now - self._last_warning >= _WARN_EVERY_S:
            self._last_warning = now
            stats = self.spool.stats()
            logger.warning(
                "audit receiver %s unavailable (%s): events spool to %s "
                "(%d waiting, %d bytes, oldest %.1fs, %d dropped)",
                self.describe(),
                reason,
                self.spool.directory,
                stats.events,
                stats.bytes,
                stats.oldest_age_s,
                stats.dropped,
            )

    def _recovered(self) -> None:
        if self._problem is None:
            return
        since = self._failing_since or time.monotonic()
        self._problem = None
        self._failing_since = None
        logger.info(
            "audit receiver %s is back after %.1fs; spooled events are being replayed",
            self.describe(),
            time.monotonic() - since,
        )

    # The base class's I/O hooks are the spool's (the writer thread), not the network's.
    def _reset_io(self) -> None:
        pass

    def _close_io(self) -> None:
        pass


def unreachable(what: str, exc: BaseException) -> AuditReceiverError:
    return AuditReceiverError(f"audit receiver {what} is unreachable: {exc}", unreachable=True)


def misconfigured(what: str, exc: BaseException | str) -> AuditReceiverError:
    return AuditReceiverError(f"audit receiver {what} cannot be used: {exc}", unreachable=False)
