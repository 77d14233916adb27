"""Result snapshots for walks: spill a result once, serve every page from the spill.

Paging by re-running the statement with a growing OFFSET makes a page cost more the deeper
it is (the engine produces and drops every row before it) and shifts pages when the table
changes mid-walk. When a first page shows that a result needs more pages, the statement runs
once more, whole, and its rows go to the spill store (`wellhead.spill.store`) as the JSON
text pages carry; that page and every later one is read from the snapshot, so page 400
costs what page 1 does, the total is exact, and the walk is one consistent result whatever
writers do meanwhile. A result too large (`snapshots.max_rows`, `max_result_bytes`) or too
slow (`spill_timeout_s`) to spill pages the old way, by OFFSET over the total order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from wellhead.errors import CursorError, QueryTimeout
from wellhead.sources.base import Column, EncodedRows, Source
from wellhead.spill.rows import encode_rows
from wellhead.spill.store import SnapshotGone, SnapshotInfo, SnapshotStore, SnapshotTooBig

log = logging.getLogger("wellhead.snapshots")

GONE = (
    "this walk's result snapshot is gone: snapshots are kept for {minutes} minutes (and the "
    "oldest are evicted when the spill store is full), and only for the caller and session "
    "that made them; run the query again without a cursor to start a new walk (it will see "
    "the data as it is now)"
)


class _RowTooBig(SnapshotTooBig):
    pass


class Snapshots:
    """Takes and reads snapshots for the executor; blocking work runs in worker threads."""

    def __init__(self, store: SnapshotStore, *, spill_timeout_s: float, max_row_bytes: int):
        self.store = store
        self.spill_timeout_s = spill_timeout_s
        self.max_row_bytes = max_row_bytes
        """A row larger than the largest page can never be served: no snapshot then."""

    async def take(
        self,
        source: Source,
        sql: str,
        values: list[Any],
        owner: str | None,
        deadline: float,
    ) -> SnapshotInfo | None:
        """Spill the statement's whole result; None when it is too big or too slow to."""
        # At most half the time left: a spill that does not finish leaves the other half to
        # page the result without one, so a walk that worked without snapshots still works.
        timeout = min(self.spill_timeout_s, (deadline - time.monotonic()) / 2)
        if timeout <= 0:
            return None
        try:
            writer = await asyncio.to_thread(self.store.writer, owner)
        except OSError as exc:  # a read-only or full disk: walks page without snapshots
            log.warning("no snapshot: the spill directory is not writable (%s)", exc.strerror)
            return None
        limit = self.max_row_bytes

        def sink(columns: list[Column], rows: Sequence[Sequence[Any]] | EncodedRows | None) -> int:
            if rows is None:  # the source starts over another way
                writer.reset()
                return 0
            if isinstance(rows, EncodedRows):
                texts = rows.texts
                if texts.type != pa.string():
                    texts = texts.cast(pa.string())
            else:
                texts = encode_rows(rows, len(columns))
            sizes = pc.binary_length(texts)
            if pc.max(sizes).as_py() > limit:
                raise _RowTooBig("a row is larger than the largest page")
            writer.add([(c.name, c.type) for c in columns], texts)
            return int(pc.sum(sizes).as_py())

        try:
            await source.scan(sql, values, timeout=timeout, sink=sink)
            return await asyncio.to_thread(writer.commit)
        except NotImplementedError:
            return None
        except SnapshotTooBig as exc:
            log.info("no snapshot: %s", exc)
            return None
        except OSError as exc:
            log.warning("no snapshot: writing it failed (%s)", exc.strerror)
            return None
        except QueryTimeout:
            if time.monotonic() >= deadline:
                raise
            log.info("no snapshot: spilling took more than %.3g s", timeout)
            return None
        finally:
            await asyncio.to_thread(writer.abort)  # after commit: only removes nothing

    async def read(
        self, snapshot: str, owner: str | None, offset: int, count: int
    ) -> tuple[list[str], int, list[Column]]:
        """Rows [offset, offset + count) as JSON text, the snapshot's row count, its columns."""
        try:
            return await asyncio.to_thread(self._read, snapshot, owner, offset, count)
        except (SnapshotGone, ValueError):
            raise CursorError(GONE.format(minutes=f"{self.store.ttl_s / 60:g}")) from None

    def _read(
        self, snapshot: str, owner: str | None, offset: int, count: int
    ) -> tuple[list[str], int, list[Column]]:
        texts = self.store.read(snapshot, owner, offset, count)
        info = self.store.info(snapshot, owner)
        columns = [Column(str(name), str(kind)) for name, kind in info["columns"]]
        return texts, int(info["rows"]), columns


def default_dir() -> Path:
    """`snapshots` under $WELLHEAD_CACHE_DIR, else the user cache dir (as the demo data):
    shared by this host's worker processes, private to the user."""
    import platformdirs

    root = os.environ.get("WELLHEAD_CACHE_DIR") or platformdirs.user_cache_dir("wellhead")
    return Path(root) / "snapshots"
