"""Signed, expiring download links for exports, served by wellhead itself.

The link is a capability: `/exports/{id}?expires=…&sig=…` where the signature is an HMAC
(SHA-256) over the export id, its owner digest and the expiry. It works without the MCP
session or token (curl, a browser, a notebook), only until it expires, and only for the
export it names; changing any part of it breaks the signature.
"""

from __future__ import annotations

import hashlib
import hmac
import time

DOWNLOAD_PATH = "/exports/{export_id}"


def sign(secret: bytes, export_id: str, owner: str | None, expires: int) -> str:
    message = f"{export_id}\x00{owner or ''}\x00{expires}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:40]


def download_path(secret: bytes, export_id: str, owner: str | None, expires: int) -> str:
    signature = sign(secret, export_id, owner, expires)
    return f"/exports/{export_id}?expires={expires}&sig={signature}"


def verify(
    secret: bytes, export_id: str, owner: str | None, expires: str | None, sig: str | None
) -> bool:
    """True when the link is untampered and unexpired (compared in constant time)."""
    if not expires or not sig or not expires.isdigit() or int(expires) < time.time():
        return False
    expected = sign(secret, export_id, owner, int(expires))
    return hmac.compare_digest(expected, sig)
