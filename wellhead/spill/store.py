"""A bounded spill store for result snapshots: Parquet files in a directory, per caller.

A snapshot is one result, spilled once: its rows as the JSON text pages carry, in one
string column of a zstd-compressed Parquet file, in row groups of `ROW_GROUP_ROWS` rows so
any page is one or two row groups away, whatever its offset. Files live under
`<dir>/<caller>/<id>.parquet` (the caller is `identity.caller_owner()`), so another caller's
id names no file of theirs. A local directory serves one host (its worker processes too); a
volume shared by replicas serves them all. Bounded by age (`ttl_s`), by the disk one caller's
snapshots may take and by the disk all take: the oldest go first. Everything here blocks
(disk); the executor calls it from worker threads.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from wellhead.errors import WellheadError

ROW_GROUP_ROWS = 4_096
_SUFFIX = ".parquet"
_PART = ".part"
_ANONYMOUS = "_"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_OPEN_FILES = 32
_SCHEMA = pa.schema([pa.field("row", pa.string(), nullable=False)])


class SnapshotTooBig(WellheadError):
    """The result is larger than a snapshot may be: the caller pages without one."""


class SnapshotGone(WellheadError):
    """The snapshot expired, was evicted, or is not this caller's."""


@dataclass(frozen=True)
class SnapshotInfo:
    id: str
    rows: int
    columns: list[tuple[str, str]]


class SnapshotWriter:
    """Appends encoded rows; `commit()` makes the snapshot visible (an atomic rename)."""

    def __init__(self, store: SnapshotStore, owner: str | None) -> None:
        self.store = store
        self.id = secrets.token_urlsafe(16)
        self.dir = store.owner_dir(owner)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.final = self.dir / f"{self.id}{_SUFFIX}"
        self.part = self.dir / f".{self.id}{_SUFFIX}{_PART}"
        self.rows = 0
        self.bytes = 0
        self.columns: list[tuple[str, str]] | None = None
        self._pending: list[pa.StringArray] = []
        self._pending_rows = 0
        self._writer: pq.ParquetWriter | None = None

    def add(self, columns: list[tuple[str, str]], texts: pa.StringArray) -> None:
        """Rows as JSON text; raises SnapshotTooBig past the store's row or byte limits."""
        if self.columns is None:
            self.columns = columns
        self.rows += len(texts)
        self.bytes += int(pc.sum(pc.binary_length(texts)).as_py() or 0)
        store = self.store
        if self.rows > store.max_rows or self.bytes > store.max_result_bytes:
            raise SnapshotTooBig(
                f"the result has more than {store.max_rows:,} rows or {store.max_result_bytes:,} "
                "bytes, more than a snapshot may hold"
            )
        self._pending.append(texts)
        self._pending_rows += len(texts)
        if self._pending_rows >= ROW_GROUP_ROWS:
            pending = pa.chunked_array(self._pending, pa.string())
            whole = self._pending_rows // ROW_GROUP_ROWS * ROW_GROUP_ROWS
            self._flush(pending.slice(0, whole))
            rest = pending.slice(whole)
            self._pending = [chunk for chunk in rest.chunks if len(chunk)]
            self._pending_rows = len(rest)

    def _flush(self, texts: pa.ChunkedArray) -> None:
        if self._writer is None:
            meta = {"wellhead.columns": json.dumps(self.columns or [])}
            self._writer = pq.ParquetWriter(
                self.part, _SCHEMA.with_metadata(meta), compression="zstd"
            )
        table = pa.Table.from_arrays([texts], schema=self._writer.schema)
        self._writer.write_table(table, row_group_size=ROW_GROUP_ROWS)

    def reset(self) -> None:
        """Forget every row added so far (the source starts the scan over)."""
        self.abort()
        self._writer = None
        self._pending, self._pending_rows = [], 0
        self.rows = self.bytes = 0

    def commit(self) -> SnapshotInfo:
        if self._pending_rows or self._writer is None:
            self._flush(pa.chunked_array(self._pending, pa.string()))
            self._pending, self._pending_rows = [], 0
        assert self._writer is not None
        self._writer.close()
        os.replace(self.part, self.final)
        self.store.make_room(self.final)
        return SnapshotInfo(self.id, self.rows, list(self.columns or []))

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - the file is removed anyway
                pass
        self.part.unlink(missing_ok=True)


class SnapshotStore:
    """Snapshots on disk, bounded by age, per-caller disk and total disk."""

    def __init__(
        self,
        root: str | Path,
        *,
        ttl_s: float = 900,
        max_bytes: int = 4 << 30,
        max_bytes_per_caller: int = 1 << 30,
        max_rows: int = 10_000_000,
        max_result_bytes: int = 2 << 30,
    ) -> None:
        self.root = Path(root)
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.max_bytes_per_caller = max_bytes_per_caller
        self.max_rows = max_rows
        self.max_result_bytes = max_result_bytes
        self._files: OrderedDict[Path, pq.ParquetFile] = OrderedDict()
        self._lock = threading.Lock()

    def owner_dir(self, owner: str | None) -> Path:
        name = owner or _ANONYMOUS
        if not _SAFE_NAME.match(name):  # owners are hex digests; never a path
            raise ValueError("caller name is not a plain token")
        return self.root / name

    def writer(self, owner: str | None) -> SnapshotWriter:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        return SnapshotWriter(self, owner)

    def _path(self, snapshot: str, owner: str | None) -> Path:
        if not _SAFE_NAME.match(snapshot):
            raise SnapshotGone("not a snapshot id")
        return self.owner_dir(owner) / f"{snapshot}{_SUFFIX}"

    def read(self, snapshot: str, owner: str | None, offset: int, count: int) -> list[str]:
        """Rows [offset, offset + count) as JSON text, read from the row groups holding them."""
        path = self._path(snapshot, owner)
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            self._forget(path)
            raise SnapshotGone("no such snapshot") from None
        if age > self.ttl_s:
            self._forget(path)
            path.unlink(missing_ok=True)
            raise SnapshotGone("snapshot expired")
        file = self._open(path)
        total = file.metadata.num_rows
        end = min(offset + count, total)
        if offset >= end:
            return []
        first, last = offset // ROW_GROUP_ROWS, (end - 1) // ROW_GROUP_ROWS
        table = file.read_row_groups(list(range(first, last + 1)), columns=["row"])
        start = offset - first * ROW_GROUP_ROWS
        column = table.column(0).slice(start, end - offset)
        return column.to_pylist()  # type: ignore[no-any-return]

    @staticmethod
    def byte_lengths(texts: list[str]) -> list[int]:
        """UTF-8 sizes of row texts (what a page's budget counts)."""
        return pc.binary_length(pa.array(texts, pa.string())).to_pylist()  # type: ignore[no-any-return]

    def info(self, snapshot: str, owner: str | None) -> dict[str, Any]:
        file = self._open(self._path(snapshot, owner))
        meta = file.schema_arrow.metadata or {}
        return {
            "rows": file.metadata.num_rows,
            "columns": json.loads(meta.get(b"wellhead.columns", b"[]")),
        }

    def _open(self, path: Path) -> pq.ParquetFile:
        with self._lock:
            file = self._files.get(path)
            if file is not None:
                self._files.move_to_end(path)
                return file
        try:
            file = pq.ParquetFile(path)
        except FileNotFoundError:
            raise SnapshotGone("no such snapshot") from None
        with self._lock:
            self._files[path] = file
            while len(self._files) > _OPEN_FILES:
                self._files.popitem(last=False)
        return file

    def _forget(self, path: Path) -> None:
        with self._lock:
            self._files.pop(path, None)

    def sweep(self) -> None:
        """Remove expired snapshots and abandoned partial files."""
        now = time.time()
        for path, stat in self._entries(include_parts=True):
            if now - stat.st_mtime > self.ttl_s:
                self._forget(path)
                path.unlink(missing_ok=True)

    def make_room(self, keep: Path) -> None:
        """Evict the oldest snapshots until the caller's and the total disk fit (never `keep`)."""
        self.sweep()
        entries = sorted(self._entries(), key=lambda e: e[1].st_mtime)
        mine = [e for e in entries if e[0].parent == keep.parent]
        for group, limit in ((mine, self.max_bytes_per_caller), (entries, self.max_bytes)):
            used = sum(stat.st_size for _, stat in group)
            for path, stat in list(group):
                if used <= limit:
                    break
                if path == keep:
                    continue
                self._forget(path)
                path.unlink(missing_ok=True)
                used -= stat.st_size
                for other in (mine, entries):
                    if (path, stat) in other:
                        other.remove((path, stat))
        if keep.exists() and keep.stat().st_size > self.max_bytes_per_caller:
            keep.unlink(missing_ok=True)
            raise SnapshotTooBig("the snapshot is larger than one caller may keep")

    def _entries(self, include_parts: bool = False) -> list[tuple[Path, os.stat_result]]:
        found: list[tuple[Path, os.stat_result]] = []
        if not self.root.is_dir():
            return found
        for owner in self.root.iterdir():
            if not owner.is_dir():
                continue
            for path in owner.iterdir():
                name = path.name
                if name.endswith(_SUFFIX) or (include_parts and name.endswith(_PART)):
                    try:
                        found.append((path, path.stat()))
                    except FileNotFoundError:
                        continue
        return found
