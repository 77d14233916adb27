"""Identity to PostgreSQL role: which database role a caller's statements run as.

Each statement of a mapped source runs inside its read-only transaction after
`SET LOCAL ROLE <role>`, so PostgreSQL's own grants and row-level security decide what the
caller sees. Role names come from the config only, are checked to be plain identifiers when
it loads, and are always written quoted; nothing the caller sends ever reaches that SQL.
The first matching rule wins; no match is refused unless the source names a `default`.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from wellhead.errors import AccessDenied
from wellhead.governance.principal import Principal

ROLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}\Z")
"""A PostgreSQL role name wellhead accepts: an unquoted identifier (at most 63 bytes)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _role(value: str) -> str:
    if not ROLE_NAME.match(value):
        raise ValueError(
            f"role {value!r} must be a plain PostgreSQL identifier (letters, digits, _ and $, "
            "not starting with a digit, at most 63 characters)"
        )
    return value


class RoleRule(_Strict):
    """One rule: callers matching exactly one condition run as `role`."""

    role: str = Field(description="The PostgreSQL role to SET LOCAL ROLE to.")
    client_id: str | None = Field(None, description="Match the token's client id.")
    subject: str | None = Field(None, description="Match the token's subject (`sub`).")
    scope: str | None = Field(None, description="Match a caller holding this scope.")
    claim: str | None = Field(None, description="Match a claim (e.g. groups); needs `value`.")
    value: str | int | bool | None = Field(
        None, description="The claim's value, or one element of a list claim."
    )

    @field_validator("role")
    @classmethod
    def _check_role(cls, value: str) -> str:
        return _role(value)

    @model_validator(mode="after")
    def _one_condition(self) -> RoleRule:
        given = [k for k in ("client_id", "subject", "scope", "claim") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "a role rule needs exactly one of client_id, subject, scope or claim "
                f"(got {', '.join(given) or 'none'})"
            )
        if self.claim is not None and self.value is None:
            raise ValueError(f"claim {self.claim!r} needs `value` (the value to match)")
        if self.claim is None and self.value is not None:
            raise ValueError("`value` applies to `claim` rules only")
        return self

    def matches(self, principal: Principal) -> bool:
        if self.client_id is not None:
            return principal.client_id == self.client_id
        if self.subject is not None:
            return principal.subject == self.subject
        if self.scope is not None:
            return self.scope in principal.scopes
        found = principal.lookup(f"claims.{self.claim}")
        if isinstance(found, list | tuple):
            return any(_same(item, self.value) for item in found)
        return _same(found, self.value)


def _same(found: Any, wanted: Any) -> bool:
    """Equal, without True == 1 (a claim `admin: true` is not the value 1)."""
    return type(found) is type(wanted) and found == wanted


class RolesConfig(_Strict):
    """`sources.<pg>.roles`: the caller-to-role rules of one PostgreSQL source."""

    rules: list[RoleRule] = Field(default_factory=list, description="First match wins.")
    default: str | None = Field(
        None, description="Role for callers no rule matches (stdio included); null: refuse."
    )

    @field_validator("default")
    @classmethod
    def _default_role(cls, value: str | None) -> str | None:
        return None if value is None else _role(value)

    @model_validator(mode="after")
    def _something(self) -> RolesConfig:
        if not self.rules and self.default is None:
            raise ValueError("roles needs at least one rule or a default role")
        return self

    def all_roles(self) -> list[str]:
        """Every role a caller can end up in, in config order, each once."""
        names = [rule.role for rule in self.rules]
        if self.default is not None:
            names.append(self.default)
        return list(dict.fromkeys(names))


def quote_role(name: str) -> str:
    """`"name"`: a checked role name written as a quoted identifier."""
    _role(name)
    return '"' + name + '"'


def resolve_role(roles: RolesConfig, principal: Principal | None, source: str) -> str:
    """The role this caller runs as on `source`, or `AccessDenied`."""
    if principal is not None:
        for rule in roles.rules:
            if rule.matches(principal):
                return rule.role
    if roles.default is not None:
        return roles.default
    who = principal.describe() if principal is not None else "an unauthenticated caller"
    raise AccessDenied(
        f"source {source!r} runs each caller as its own PostgreSQL role, and no rule under "
        f"sources.{source}.roles matches {who}; ask the operator to add a rule for it (or a "
        "`default` role)"
    )
