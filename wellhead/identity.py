"""Who is calling: the owner stamped on cursors and stored results so nobody else can use them.

The owner is a digest of the authenticated principal (a token's client id and subject) and,
when the protocol has one, the HTTP session (`Mcp-Session-Id`). A digest, not the values:
cursors are readable by whoever holds them and may end up in logs, and a session id is a
credential.
Without auth and without a session (stdio, anonymous stateless HTTP) there is one caller the
server can tell apart, so the owner is None and cursors are bound to nothing more than the
signature.
"""

from __future__ import annotations

import hashlib

from fastmcp.server.dependencies import get_access_token, get_http_request

_SESSION_HEADER = "mcp-session-id"


def caller_owner() -> str | None:
    """A short stable digest of (principal, session) for the current request, or None."""
    principal = _principal()
    session = _http_session()
    if principal is None and session is None:
        return None
    raw = f"{principal or ''}\x00{session or ''}".encode()
    return hashlib.sha256(raw).hexdigest()[:24]


def _principal() -> str | None:
    try:
        token = get_access_token()
    except Exception:  # noqa: BLE001 - no auth context on this transport
        return None
    if token is None:
        return None
    # One OAuth client may act for many users: the subject tells them apart.
    subject = getattr(token, "subject", None) or (token.claims or {}).get("sub")
    return f"{token.client_id}" if subject is None else f"{token.client_id}\x00{subject}"


def _http_session() -> str | None:
    try:
        request = get_http_request()
    except RuntimeError:  # stdio, or no request in flight
        return None
    value = request.headers.get(_SESSION_HEADER)
    return value or None


def caller_scopes() -> frozenset[str]:
    """The scopes of the caller's access token (empty without auth): they may lift column
    policies, so they travel down to the executor as data."""
    try:
        token = get_access_token()
    except Exception:  # noqa: BLE001 - no auth context on this transport
        return frozenset()
    if token is None:
        return frozenset()
    return frozenset(token.scopes or ())
