"""What an audit event's fields mean to a receiver: severities shared by syslog and OTLP.

The fields themselves are made by the call guard (`guards.calls.call_event`) and the
chain fields (`seq`, `seed`, `prev`, `chain`) by the JSONL sink; docs/operating.md lists
every one of them with its meaning per transport and protocol era.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# RFC 5424 §6.2.1 severities; facility 13 is "log audit".
SEVERITY = {"debug": 7, "info": 6, "notice": 5, "warning": 4, "error": 3, "critical": 2}
OUTCOME_SEVERITY = {
    "ok": 6,
    "tool_error": 5,
    "cancelled": 5,
    "rate_limited": 5,
    "timeout": 4,
    "invalid_output": 3,
    "internal_error": 3,
}

# OpenTelemetry SeverityNumber for each syslog severity (logs data model, "Mapping of
# SeverityNumber"): INFO 9, INFO2 10 (notice), WARN 13, ERROR 17, FATAL 21, DEBUG 5.
OTEL_SEVERITY = {7: (5, "DEBUG"), 6: (9, "INFO"), 5: (10, "INFO2"), 4: (13, "WARN")}
OTEL_SEVERITY.update({3: (17, "ERROR"), 2: (21, "FATAL")})


def syslog_severity(event: Mapping[str, Any]) -> int:
    """An explicit `level` wins; otherwise the call's outcome decides; info by default."""
    level = event.get("level")
    if isinstance(level, str) and level.lower() in SEVERITY:
        return SEVERITY[level.lower()]
    outcome = event.get("outcome")
    return OUTCOME_SEVERITY.get(outcome, 6) if isinstance(outcome, str) else 6
