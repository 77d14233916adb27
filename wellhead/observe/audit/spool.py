"""A bounded on-disk FIFO of audit events waiting for a remote receiver.

Events are appended to numbered segment files and read back in order from a position
kept in a `cursor` file, which moves only once the receiver accepted what was read: a
crash or a restart replays from there (at-least-once). A segment is deleted once read
past. The spool holds at most `max_bytes`; an event that does not fit is refused and
counted, so a full spool is a counted loss, never a silent one and never a wait.

A record is a 12-byte header (length, enqueue time) followed by the encoded event. One
process per directory: an exclusive lock on `lock` refuses a second one.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wellhead.errors import ConfigError

_HEADER = struct.Struct(">Id")
_SUFFIX = ".seg"


@dataclass(frozen=True)
class SpoolStats:
    """What the metrics show: what waits, since when, and what was lost."""

    events: int
    bytes: int
    oldest_age_s: float
    dropped: int


class Spool:
    """Thread-safe: the sink's writer thread appends, its forwarder thread reads and commits."""

    def __init__(
        self, directory: str | os.PathLike[str], max_bytes: int, segment_bytes: int = 4 << 20
    ) -> None:
        if max_bytes < 1:
            raise ValueError("the spool's max_bytes must be at least 1")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.dropped = 0
        self._lock = threading.Lock()
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o750)
            self._lock_file = (self.directory / "lock").open("a")
        except OSError as exc:
            raise ConfigError(f"audit spool directory {self.directory}: {exc}") from None
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            raise ConfigError(
                f"audit spool directory {self.directory} is in use by another process; "
                "give each process its own audit.spool.directory"
            ) from None
        self._read_seg, self._read_off = self._load_cursor()
        segments = self._segments()
        for stale in [s for s in segments if s < self._read_seg]:
            self._segment_path(stale).unlink(missing_ok=True)
        segments = [s for s in segments if s >= self._read_seg] or [self._read_seg]
        if segments[0] > self._read_seg:  # the cursor's segment is gone: start at the next
            self._read_seg, self._read_off = segments[0], 0
        self._write_seg = segments[-1]
        self._writer = self._segment_path(self._write_seg).open("ab")
        self._write_off = self._writer.tell()
        self._reader: tuple[int, object] | None = None
        self._pending: tuple[int, int, int, int] | None = None  # seg, off, events, bytes
        self._events, self._bytes, self._oldest = self._scan()

    # -- writer side ------------------------------------------------------------------------

    def append(self, records: Sequence[bytes]) -> int:
        """Append in order; returns how many fit (the rest are counted in `dropped`)."""
        now = time.time()
        accepted = 0
        with self._lock:
            parts: list[bytes] = []
            for data in records:
                size = _HEADER.size + len(data)
                if self._bytes + size > self.max_bytes:
                    break
                if self._write_off and self._write_off + size > self.segment_bytes:
                    self._write_parts(parts)
                    parts = []
                    self._next_segment()
                parts += (_HEADER.pack(len(data), now), data)
                self._write_off += size
                self._bytes += size
                self._events += 1
                if self._oldest is None:
                    self._oldest = now
                accepted += 1
            self._write_parts(parts)
            self.dropped += len(records) - accepted
        return accepted

    def _write_parts(self, parts: list[bytes]) -> None:
        if parts:
            self._writer.write(b"".join(parts))
            self._writer.flush()

    def _next_segment(self) -> None:
        self._writer.close()
        self._write_seg += 1
        self._writer = self._segment_path(self._write_seg).open("ab")
        self._write_off = 0

    # -- forwarder side ---------------------------------------------------------------------

    def read(self, max_events: int, max_bytes: int = 4 << 20) -> list[bytes]:
        """The oldest events not yet committed (at least one if any); `commit()` consumes them."""
        with self._lock:
            seg, off = self._read_seg, self._read_off
            out: list[bytes] = []
            used = 0
            while len(out) < max_events:
                f = self._open_reader(seg)
                f.seek(off)  # type: ignore[attr-defined]
                header = f.read(_HEADER.size)  # type: ignore[attr-defined]
                if len(header) < _HEADER.size:
                    if seg < self._write_seg:
                        seg, off = seg + 1, 0
                        continue
                    break
                length, _ = _HEADER.unpack(header)
                if out and used + length > max_bytes:
                    break
                data = f.read(length)  # type: ignore[attr-defined]
                if len(data) < length:
                    break  # being written right now
                out.append(data)
                used += _HEADER.size + length
                off += _HEADER.size + length
            self._pending = (seg, off, len(out), used)
            return out

    def commit(self) -> None:
        """The events of the last `read` were delivered: move past them for good."""
        with self._lock:
            if self._pending is None:
                return
            seg, off, events, used = self._pending
            self._pending = None
            for done in range(self._read_seg, seg):
                self._segment_path(done).unlink(missing_ok=True)
            self._read_seg, self._read_off = seg, off
            self._events -= events
            self._bytes -= used
            self._oldest = self._peek_time() if self._events else None
            self._save_cursor()

    def stats(self) -> SpoolStats:
        with self._lock:
            age = time.time() - self._oldest if self._oldest is not None else 0.0
            return SpoolStats(self._events, self._bytes, max(age, 0.0), self.dropped)

    @property
    def empty(self) -> bool:
        return self._events == 0

    def close(self) -> None:
        with self._lock:
            self._writer.close()
            if self._reader is not None:
                self._reader[1].close()  # type: ignore[attr-defined]
                self._reader = None
            self._lock_file.close()

    # -- internals --------------------------------------------------------------------------

    def _segment_path(self, seg: int) -> Path:
        return self.directory / f"{seg:012d}{_SUFFIX}"

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.directory.glob(f"*{_SUFFIX}") if p.stem.isdigit())

    def _open_reader(self, seg: int) -> object:
        if self._reader is None or self._reader[0] != seg:
            if self._reader is not None:
                self._reader[1].close()  # type: ignore[attr-defined]
            self._reader = (seg, self._segment_path(seg).open("rb"))
        return self._reader[1]

    def _peek_time(self) -> float | None:
        seg, off = self._read_seg, self._read_off
        while seg <= self._write_seg:
            f = self._open_reader(seg)
            f.seek(off)  # type: ignore[attr-defined]
            header = f.read(_HEADER.size)  # type: ignore[attr-defined]
            if len(header) == _HEADER.size:
                return float(_HEADER.unpack(header)[1])
            seg, off = seg + 1, 0
        return None

    def _scan(self) -> tuple[int, int, float | None]:
        """Events, bytes and oldest time of what a previous run left unsent."""
        events = used = 0
        oldest: float | None = None
        seg, off = self._read_seg, self._read_off
        while seg <= self._write_seg:
            path = self._segment_path(seg)
            if not path.exists():
                seg, off = seg + 1, 0
                continue
            with path.open("rb") as f:
                f.seek(off)
                while True:
                    header = f.read(_HEADER.size)
                    if len(header) < _HEADER.size:
                        break
                    length, when = _HEADER.unpack(header)
                    f.seek(length, os.SEEK_CUR)
                    events += 1
                    used += _HEADER.size + length
                    oldest = when if oldest is None else oldest
            seg, off = seg + 1, 0
        return events, used, oldest

    def _load_cursor(self) -> tuple[int, int]:
        try:
            seg, off = (self.directory / "cursor").read_text().split()
            return int(seg), int(off)
        except (FileNotFoundError, ValueError):
            segments = self._segments()
            return (segments[0] if segments else 0), 0

    def _save_cursor(self) -> None:
        tmp = self.directory / "cursor.tmp"
        tmp.write_text(f"{self._read_seg} {self._read_off}\n")
        os.replace(tmp, self.directory / "cursor")
