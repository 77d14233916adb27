"""Precise exceptions raised inside wellhead.

The guard layer turns each into a structured tool error; `public_message` is what an
agent may see, so it must never carry a secret or an internal detail.
"""

from __future__ import annotations


class WellheadError(Exception):
    """Base of every error wellhead raises on purpose. Its message is safe to show."""

    kind = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.public_message = message


class ConfigError(WellheadError):
    kind = "config_error"


class UnsafeSQL(WellheadError):
    """The statement is not a single read-only statement, or it touches a denied feature."""

    kind = "unsafe_sql"


class InvalidRequest(WellheadError):
    """An argument is malformed: unknown source or table, bad parameter, bad max_rows."""

    kind = "invalid_request"


class CursorError(WellheadError):
    """A cursor was tampered with, expired, or belongs to another query."""

    kind = "invalid_cursor"


class AccessDenied(WellheadError):
    """The caller may not do this: no database role is mapped to it, or a bound identity
    value (a claim) is missing."""

    kind = "access_denied"


class CostExceeded(WellheadError):
    """The engine's plan estimate for the statement is over the configured ceiling."""

    kind = "cost_exceeded"


class QueryTimeout(WellheadError):
    kind = "timeout"


class QueryCancelled(WellheadError):
    kind = "cancelled"


class QueryFailed(WellheadError):
    """The engine rejected the statement (syntax, missing column, type error)."""

    kind = "query_error"


class BudgetExceeded(WellheadError):
    """A single item cannot fit the byte budget even alone."""

    kind = "budget_exceeded"


class SourceUnavailable(WellheadError):
    kind = "source_unavailable"


class PoolExhausted(SourceUnavailable):
    kind = "pool_exhausted"


class PolicyDenied(WellheadError):
    """A column policy refuses the statement: it reads a denied column, or a route around
    a masked one (statistics, EXPLAIN of a policed table)."""

    kind = "policy_denied"
