"""How a column policy is written in config: `column_policies.<source>.<table>.<column>`.

A policy is either a word (`deny`, `hash`, `redact`, `partial`, `null`) or a mapping with
`policy`, `keep` (partial only) and `unless_scopes`. Kept apart from the enforcement
(`wellhead.sql.policies`) so the settings module can import it without pulling in sqlglot.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PolicyName = Literal["deny", "hash", "redact", "partial", "null"]


class ColumnPolicyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: PolicyName = Field(
        description="deny: any reference is refused; hash, redact, partial, null: the column "
        "reads as that mask everywhere in a statement."
    )
    keep: int = Field(
        4, ge=1, le=64, description="partial: how many trailing characters stay visible."
    )
    unless_scopes: list[str] = Field(
        default_factory=list,
        description="A caller whose token holds any of these scopes sees the clear value.",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        """`ssn: deny` is short for `ssn: {policy: deny}`."""
        if isinstance(value, str):
            return {"policy": value}
        return value

    @model_validator(mode="after")
    def _keep_only_for_partial(self) -> ColumnPolicyConfig:
        if self.policy != "partial" and "keep" in self.model_fields_set:
            raise ValueError("'keep' applies to policy 'partial' only")
        if any(not s.strip() for s in self.unless_scopes):
            raise ValueError("unless_scopes entries must be non-empty scope names")
        return self


ColumnPoliciesConfig = dict[str, dict[str, dict[str, ColumnPolicyConfig]]]
"""source -> table (as list_tables names it) -> column -> policy."""
