"""Fan one event out to several sinks (e.g. a local chained file and a SIEM receiver)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anyio.to_thread

from wellhead.observe.audit.base import AuditSink, utc_timestamp


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
