"""Exports: whole results as files (Parquet, CSV, JSON Lines) in a bounded, owned store."""

from __future__ import annotations

import hashlib
import hmac
import os

from wellhead.config import ExportsConfig
from wellhead.exports.store import ExportStore

SHARED_DIR_ENV = "WELLHEAD_EXPORTS_SHARED_DIR"
"""Set by the `--workers` supervisor: the one store its workers share (it removes it)."""


def export_store(config: ExportsConfig) -> ExportStore:
    shared = os.environ.get(SHARED_DIR_ENV)
    if config.directory is None and shared:
        return ExportStore(
            shared,
            ttl_s=config.ttl_s,
            max_owner_bytes=config.max_owner_bytes,
            max_total_bytes=config.max_total_bytes,
            private=False,
        )
    return ExportStore(
        config.directory,
        ttl_s=config.ttl_s,
        max_owner_bytes=config.max_owner_bytes,
        max_total_bytes=config.max_total_bytes,
    )


def link_key(config: ExportsConfig, cursor_secret: bytes) -> bytes:
    """The download links' HMAC key: `exports.secret`, else one derived from the cursor key
    (so replicas that share cursor.secret share links too, and neither key reveals the other)."""
    if config.secret:
        return config.secret.encode()
    return hmac.new(cursor_secret, b"wellhead export links", hashlib.sha256).digest()
