"""The export store: files in one directory, each with a JSON sidecar, bounded and owned.

A local directory by default (private to the process); a shared volume when replicas
should serve each other's exports (the sidecars are all the state there is). Bounded
three ways: an age (`ttl_s`, after which an export is gone), bytes per owner, and bytes
in all; when a new export would pass a bound, the oldest exports go first. Every lookup
is by an unguessable id *and* the caller's owner digest: another caller's export does not
exist for them, exactly like a missing one.

All methods block (file system): call them in a worker thread.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass

from wellhead.exports.formats import FORMATS

_ID = re.compile(r"^[A-Za-z0-9_-]{24}$")
_PART_MAX_AGE_S = 24 * 3600
"""A half-written file older than this is debris of a crashed process: removed on sweep."""


@dataclass(frozen=True)
class ExportInfo:
    id: str
    owner: str | None
    format: str
    source: str
    rows: int
    size: int
    columns: list[list[str]]
    created: float
    expires: float

    @property
    def mime_type(self) -> str:
        return FORMATS[self.format][0]

    @property
    def filename(self) -> str:
        return f"export-{self.id}{FORMATS[self.format][1]}"


class ExportStore:
    def __init__(
        self,
        directory: str | None,
        *,
        ttl_s: float,
        max_owner_bytes: int,
        max_total_bytes: int,
        private: bool | None = None,
    ) -> None:
        self._private = directory is None if private is None else private
        self._directory = directory
        self._ready = False
        self.ttl_s = ttl_s
        self.max_owner_bytes = max_owner_bytes
        self.max_total_bytes = max_total_bytes

    @property
    def directory(self) -> str:
        """Made on first use: a server that never exports leaves nothing behind."""
        if self._directory is None:
            self._directory = tempfile.mkdtemp(prefix="wellhead-exports-")  # mode 0700
            self._ready = True
        elif not self._ready:
            os.makedirs(self._directory, mode=0o700, exist_ok=True)
            self._ready = True
        return self._directory

    def close(self) -> None:
        """Remove a private store (a configured directory is left for other replicas)."""
        if self._private and self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
            self._ready = False

    # -- writing ---------------------------------------------------------------------

    def reserve(self) -> tuple[str, str]:
        """A new export id and the path its file is written to before it is committed."""
        export_id = secrets.token_urlsafe(18)
        return export_id, os.path.join(self.directory, f".{export_id}.part")

    def commit(self, info: ExportInfo, part_path: str) -> ExportInfo:
        """Make a written file an export; then evict what the bounds no longer allow."""
        os.replace(part_path, self._data(info.id))
        sidecar = self._meta(info.id)
        with open(sidecar + ".tmp", "w") as out:
            json.dump(asdict(info), out)
        os.replace(sidecar + ".tmp", sidecar)
        self.sweep(keep=info.id)
        return info

    # -- reading ---------------------------------------------------------------------

    def get(self, export_id: str, owner: str | None) -> ExportInfo | None:
        """The export if it exists, has not expired, and is the caller's; else None."""
        if not isinstance(export_id, str) or not _ID.match(export_id):
            return None
        info = self._load(export_id)
        if info is None or info.owner != owner or info.expires <= time.time():
            return None
        return info

    def get_any(self, export_id: str) -> ExportInfo | None:
        """The export whoever owns it (a signed link names its owner itself); else None."""
        if not isinstance(export_id, str) or not _ID.match(export_id):
            return None
        info = self._load(export_id)
        if info is None or info.expires <= time.time():
            return None
        return info

    def path(self, info: ExportInfo) -> str:
        return self._data(info.id)

    def read(self, info: ExportInfo, offset: int, length: int) -> bytes:
        with open(self._data(info.id), "rb") as data:
            data.seek(offset)
            return data.read(length)

    # -- bounds ----------------------------------------------------------------------

    def sweep(self, keep: str | None = None) -> None:
        """Drop expired exports, stale partial files, then the oldest over the size bounds."""
        now = time.time()
        live: list[ExportInfo] = []
        for name in os.listdir(self.directory):
            full = os.path.join(self.directory, name)
            if name.endswith(".part"):
                if _age(full, now) > _PART_MAX_AGE_S:
                    _remove(full)
                continue
            if not name.endswith(".json"):
                continue
            info = self._load(name[: -len(".json")])
            if info is None:
                continue
            if info.expires <= now:
                self._delete(info.id)
            else:
                live.append(info)
        live.sort(key=lambda i: i.created)
        per_owner: dict[str | None, int] = {}
        for info in live:
            per_owner[info.owner] = per_owner.get(info.owner, 0) + info.size
        total = sum(per_owner.values())
        for info in live:  # oldest first
            if info.id == keep:
                continue
            over_owner = per_owner[info.owner] > self.max_owner_bytes
            if over_owner or total > self.max_total_bytes:
                self._delete(info.id)
                per_owner[info.owner] -= info.size
                total -= info.size

    # -- files -----------------------------------------------------------------------

    def _data(self, export_id: str) -> str:
        return os.path.join(self.directory, f"{export_id}.data")

    def _meta(self, export_id: str) -> str:
        return os.path.join(self.directory, f"{export_id}.json")

    def _load(self, export_id: str) -> ExportInfo | None:
        try:
            with open(self._meta(export_id)) as meta:
                return ExportInfo(**json.load(meta))
        except (OSError, ValueError, TypeError):
            return None

    def _delete(self, export_id: str) -> None:
        _remove(self._meta(export_id))  # the sidecar first: the export is gone at once
        _remove(self._data(export_id))


def _age(path: str, now: float) -> float:
    try:
        return now - os.path.getmtime(path)
    except OSError:
        return 0.0


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
