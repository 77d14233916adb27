"""Audit events for a SIEM: one JSON event per tool call, forwarded securely, none lost.

Sinks: `JsonlFileAuditSink` (size-rotated, hash-chained JSON lines), `SyslogAuditSink`
(RFC 5424 over UDP, TCP with RFC 6587 octet counting, or TLS per RFC 5425),
`OtlpLogAuditSink` (OpenTelemetry logs over OTLP/HTTP), `MultiAuditSink` (fan out).
The remote ones spool to disk while their receiver is away (`forward.py`, `spool.py`);
`chain.verify` checks a trail's hashes (`wellhead audit verify`).
"""

from wellhead.observe.audit.base import AuditReceiverError, AuditSink, utc_timestamp
from wellhead.observe.audit.fields import SEVERITY
from wellhead.observe.audit.forward import ForwardingSink
from wellhead.observe.audit.jsonl import JsonlFileAuditSink
from wellhead.observe.audit.multi import MultiAuditSink
from wellhead.observe.audit.otlp import OtlpLogAuditSink
from wellhead.observe.audit.spool import Spool, SpoolStats
from wellhead.observe.audit.syslog import SyslogAuditSink

__all__ = [
    "SEVERITY",
    "AuditReceiverError",
    "AuditSink",
    "ForwardingSink",
    "JsonlFileAuditSink",
    "MultiAuditSink",
    "OtlpLogAuditSink",
    "Spool",
    "SpoolStats",
    "SyslogAuditSink",
    "utc_timestamp",
]
