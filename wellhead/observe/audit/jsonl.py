"""The local trail: one JSON object per line, rotated by size, each line hash-chained."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wellhead.observe.audit.base import AuditSink
from wellhead.observe.audit.chain import Chain

logger = logging.getLogger("wellhead.audit")


class JsonlFileAuditSink(AuditSink):
    """One JSON object per line, rotated by size: `path`, then `path.1` (newest) … `path.N`.

    A line is never split across files; a line longer than max_bytes gets a file of its own.
    If a write fails midway the batch is retried whole, so a disk error may duplicate lines
    (at-least-once) but never lose or split them.
    `max_bytes=0` or `backup_count=0` disables rotation. Beyond `backup_count` the oldest
    file is deleted: that is the retention the operator chose. One process per file.

    With `chain` (the default) every line gets `seq` and `chain` fields (see `chain.py`),
    added by the writer thread: `wellhead audit verify` checks them. A restart continues the
    chain of the file it reopens.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_bytes: int,
        backup_count: int,
        *,
        chain: bool = True,
        chain_key: bytes | None = None,
        **kw: Any,
    ):
        if max_bytes < 0 or backup_count < 0:
            raise ValueError("max_bytes and backup_count must not be negative")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._chain = Chain(chain_key) if chain else None
        self._file = self._open()
        if self._chain is not None and self._size and not self._chain.resume(self.path):
            logger.warning(
                "audit file %s does not end with a whole chained line (a crash, or a file "
                "from an older version): a new chain segment starts after it",
                self.path,
            )
        super().__init__(**kw)

    def _open(self) -> Any:
        # 0o640: audit trails carry who-did-what; keep them away from other users.
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        f = os.fdopen(fd, "ab")
        self._size = f.seek(0, os.SEEK_END)
        self._first = self._size == 0
        if self._size and os.pread(fd, 1, self._size - 1) != b"\n":
            f.write(b"\n")  # end a torn line (a crash mid-write) so ours start whole
            self._size += 1
            self._first = True
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
        chain = self._chain
        saved = (chain.seq, chain.last) if chain is not None else None
        try:
            return self._write_lines(batch)
        except BaseException:
            if chain is not None and saved is not None:
                chain.seq, chain.last = saved  # the retry numbers the batch again
            raise

    def _write_lines(self, batch: Sequence[bytes]) -> int:
        rotating = self.max_bytes > 0 and self.backup_count > 0
        chain = self._chain
        chunk: list[bytes] = []
        size = self._size
        for raw in batch:
            state = (chain.seq, chain.last) if chain is not None else None
            line = chain.seal(raw, self._first) if chain is not None else raw
            if rotating and size > 0 and size + len(line) > self.max_bytes:
                self._file.write(b"".join(chunk))
                self._size = size
                chunk = []
                self._rotate()
                size = self._size
                if chain is not None and state is not None:  # a new file: seeded, linked back
                    chain.seq, chain.last = state
                    line = chain.seal(raw, True)
            self._first = False
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
