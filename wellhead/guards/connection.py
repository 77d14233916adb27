"""Which client connection a call came on: the identity an auditor groups calls by.

`connection_id` is one value per client connection, whatever the protocol era:

- a protocol with a session (handshake-era stdio, SSE and stateful streamable HTTP): a
  digest of the session id, which is also logged as `session_id`;
- stdio in the 2026-07-28 era, where every request is its own MCP connection: the process,
  since a stdio server serves exactly one client (an id minted once per process);
- stateless HTTP (either era) and anything else without a session: a digest of the
  principal and the client's declared name and version. Clients that share all three
  (say, two anonymous copies of one agent) share the id: nothing on the wire tells them
  apart.

`session_id` is set only when the protocol has a session: on 2026-07-28 connections
FastMCP mints a new one per request, which would make every call look like a new client.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from typing import Any, NamedTuple

from mcp_types.version import MODERN_PROTOCOL_VERSIONS

_PROCESS = os.urandom(12).hex()
"""The stdio connection of this process."""


class ConnectionFacts(NamedTuple):
    connection_id: str | None
    session_id: str | None
    client_name: str | None
    client_version: str | None


NO_CONNECTION = ConnectionFacts(None, None, None, None)


def connection_facts(ctx: Any, transport: str | None, principal: str | None) -> ConnectionFacts:
    """The facts of the call running in `ctx` (a FastMCP Context), cheap enough per call."""
    try:
        request = ctx.request_context
        session = request.session if request is not None else None
    except Exception:  # noqa: BLE001 - a background task has no live request
        session = None
    if session is None:
        return NO_CONNECTION
    name = version = None
    try:
        params = session.client_params
        if params is not None:
            name = _text(params.client_info.name)
            version = _text(params.client_info.version)
        era_has_session = session.protocol_version not in MODERN_PROTOCOL_VERSIONS
    except Exception:  # noqa: BLE001 - a session without the usual fields
        era_has_session = False
    session_id = None
    if era_has_session and (transport != "streamable-http" or _http_session(session, request)):
        try:
            session_id = str(ctx.session_id)
        except Exception:  # noqa: BLE001
            session_id = None
    if session_id is not None:
        connection = _digest("session", session_id)
    elif transport == "stdio":
        connection = _PROCESS
    else:
        connection = _digest("client", principal or "", name or "", version or "")
    return ConnectionFacts(connection, session_id, name, version)


def _http_session(session: Any, request: Any) -> bool:
    """Stateful streamable HTTP: the connection negotiated an `Mcp-Session-Id`."""
    connection = getattr(session, "_connection", None)
    if getattr(connection, "session_id", None):
        return True
    http = getattr(request, "request", None)
    return bool(http is not None and http.headers.get("mcp-session-id"))


@lru_cache(maxsize=4096)
def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:24]


def _text(value: Any, limit: int = 128) -> str | None:
    """A client-declared string, bounded: the client chooses it, the log line carries it."""
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
