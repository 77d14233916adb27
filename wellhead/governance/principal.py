"""The authenticated caller as plain data, carried in a context variable.

Sources cannot import the transport or tool layers, yet a PostgreSQL source must know whose
role to take. The request layer (`wellhead.governance.request`) puts the caller here once
per call; lower layers read it. Unset means "nobody authenticated" (stdio, anonymous HTTP,
or code calling a source directly), which role mapping treats as an unknown caller.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's client id and subject, its scopes and all its claims."""

    client_id: str | None = None
    subject: str | None = None
    scopes: tuple[str, ...] = ()
    claims: Mapping[str, Any] = field(default_factory=dict)

    def lookup(self, spec: str) -> Any:
        """The value named by an identity spec: `client_id`, `subject` or `claims.<name>`.

        Returns None when the caller has no such value (the caller decides what that means).
        """
        if spec == "client_id":
            return self.client_id
        if spec == "subject":
            return self.subject
        if spec.startswith("claims."):
            value: Any = self.claims
            for part in spec[len("claims.") :].split("."):
                if not isinstance(value, Mapping) or part not in value:
                    return None
                value = value[part]
            return value
        raise ValueError(f"unknown identity spec {spec!r}")

    def describe(self) -> str:
        """A short, secret-free name for errors and logs (never a claim value)."""
        if self.client_id:
            return f"client_id {self.client_id!r}"
        if self.subject:
            return f"subject {self.subject!r}"
        return "an authenticated caller without client_id or subject"


IDENTITY_SPEC = r"^(client_id|subject|claims\.[A-Za-z0-9_:\-]{1,64}(\.[A-Za-z0-9_:\-]{1,64}){0,3})$"
"""What `identity:` in a SQL tool parameter and role rules may name."""

_current: ContextVar[Principal | None] = ContextVar("wellhead_principal", default=None)


def current_principal() -> Principal | None:
    """The caller of the call in progress, or None when nobody authenticated."""
    return _current.get()


@contextmanager
def acting_as(principal: Principal | None) -> Iterator[None]:
    """Run the enclosed code as `principal` (tasks started inside inherit it)."""
    token = _current.set(principal)
    try:
        yield
    finally:
        _current.reset(token)
