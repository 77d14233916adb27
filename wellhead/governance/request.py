"""Fill the principal from the authenticated request, once per tool call.

FastMCP's verifiers (static tokens, JWT) put an `AccessToken` in the request context; this
guard turns it into a `Principal` for the lower layers (role mapping in the PostgreSQL
source, identity-bound SQL tool parameters). Without a token (stdio, anonymous HTTP) the
principal set by the embedding code, if any, is kept.
"""

from __future__ import annotations

from typing import Any

from fastmcp.server.dependencies import get_access_token
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext

from wellhead.governance.principal import Principal, acting_as, current_principal


def request_principal() -> Principal | None:
    """The caller of the current request as a `Principal`, or None without a token."""
    try:
        token = get_access_token()
    except Exception:  # noqa: BLE001 - no auth context on this transport
        return None
    return None if token is None else principal_of(token)


def principal_of(token: Any) -> Principal:
    """A verified `AccessToken` (static or JWT) as a `Principal`: client id, subject, scopes,
    and every claim (a JWT's `groups`, `tenant_id`...; a static token's `claims`)."""
    claims = dict(getattr(token, "claims", None) or {})
    subject = getattr(token, "subject", None) or claims.get("sub")
    return Principal(
        client_id=token.client_id or None,
        subject=str(subject) if subject is not None else None,
        scopes=tuple(token.scopes or ()),
        claims=claims,
    )


class PrincipalGuard(Middleware):
    """Runs each tool call as its authenticated caller (see `governance.principal`)."""

    async def on_call_tool(
        self, context: MiddlewareContext[Any], call_next: CallNext[Any, Any]
    ) -> Any:
        principal = request_principal() or current_principal()
        with acting_as(principal):
            return await call_next(context)
