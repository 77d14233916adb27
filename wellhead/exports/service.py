"""Run one export: check the statement like `query` does, stream it into a file, keep it.

The statement passes the same read-only check and compilation as `query` (the executor's
cache, sqlglot in the source's dialect), then the source's own engine-level locks apply
while it streams. Memory is one batch; the deadline and cancellation interrupt the engine;
the file's size is capped. A failed or cancelled export leaves no file behind.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from wellhead.config import ExportsConfig
from wellhead.errors import InvalidRequest
from wellhead.exports.formats import FORMATS
from wellhead.exports.store import ExportInfo, ExportStore
from wellhead.sql.executor import QueryExecutor

Progress = Callable[[int, float], Awaitable[None]]
"""Called about once a second with (rows written so far, seconds elapsed)."""

_PROGRESS_EVERY_S = 1.0


class Exporter:
    def __init__(self, executor: QueryExecutor, store: ExportStore, config: ExportsConfig):
        self.executor = executor
        self.store = store
        self.config = config

    async def export(
        self,
        *,
        sql: str,
        params: dict[str, Any],
        source: str,
        fmt: str,
        owner: str | None,
        scopes: frozenset[str] = frozenset(),
        on_progress: Progress | None = None,
    ) -> ExportInfo:
        if fmt not in FORMATS:
            raise InvalidRequest(
                f"format must be one of {', '.join(FORMATS)} (got {str(fmt)[:40]!r})"
            )
        from wellhead.exports.writers import FileSink  # pyarrow: imported on first export

        engine = self.executor.source(source)
        # The same checks as `query`: read-only, column policies (the caller's scopes may lift
        # some), and the cost guard's refusal of statements the engine estimates too costly.
        compiled = await self.executor.compile(engine, sql, params, scopes)
        values = compiled.values(params)
        guard = self.executor.cost_guard
        if guard is not None:
            pageable = compiled.first is not None
            await guard.check(
                engine,
                compiled.sql,
                compiled.checked.tree,
                values,
                self.config.timeout_s,
                pageable=pageable,
            )
        export_id, part = await asyncio.to_thread(self.store.reserve)
        sink = await asyncio.to_thread(FileSink, part, fmt, self.config.max_export_bytes)
        started = time.monotonic()
        reporter = None
        if on_progress is not None:
            reporter = asyncio.ensure_future(_report(on_progress, sink, started))
        try:
            await engine.stream(compiled.sql, values, sink=sink, timeout=self.config.timeout_s)
            await asyncio.to_thread(sink.close)
        except BaseException:
            sink.abort()  # closes and deletes the partial file: quick, and must not be skipped
            raise
        finally:
            if reporter is not None:
                reporter.cancel()
        now = time.time()
        info = ExportInfo(
            id=export_id,
            owner=owner,
            format=fmt,
            source=source,
            rows=sink.rows,
            size=sink.size,
            columns=[[c.name, c.type] for c in sink.columns],
            created=now,
            expires=now + self.config.ttl_s,
        )
        return await asyncio.to_thread(self.store.commit, info, part)


async def _report(on_progress: Progress, sink: Any, started: float) -> None:
    while True:
        await asyncio.sleep(_PROGRESS_EVERY_S)
        await on_progress(sink.rows, time.monotonic() - started)
