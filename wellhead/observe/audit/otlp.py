"""OpenTelemetry logs over OTLP/HTTP (protobuf): the usual road to a SIEM via a collector.

Each event becomes one `LogRecord`: `body` is the event as a key-value list (nested
values kept), `event_name` its `event` field, `time_unix_nano` its `ts`, the severity from
the outcome as for syslog, and `trace_id` when the call was traced. The resource says
`service.name`, `host.name` and `process.pid`. A batch is one `ExportLogsServiceRequest`
POSTed to `endpoint` (e.g. `http://collector:4318/v1/logs`), unlike syslog acknowledged:
the spool moves on only after a 2xx. 429, 502, 503, 504 and network errors are retried;
another 4xx means the receiver will never take these events, which are counted as dropped;
records a 2xx reports as rejected (`partial_success`) are counted as dropped too.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from wellhead.errors import ConfigError
from wellhead.observe.audit.fields import OTEL_SEVERITY, syslog_severity
from wellhead.observe.audit.forward import ForwardingSink, Rejected, misconfigured, unreachable
from wellhead.observe.audit.tls import client_context

_RETRYABLE = {408, 429, 502, 503, 504}
_INT64 = (-(2**63), 2**63 - 1)


class OtlpLogAuditSink(ForwardingSink):
    """OTLP/HTTP protobuf log export; `https` endpoints verify the collector's certificate
    (`ca_file`, else the system CAs) and present `cert_file`/`key_file` if given."""

    kind = "otlp"

    def __init__(
        self,
        endpoint: str,
        *,
        service_name: str = "wellhead",
        timeout: float = 10.0,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        **kw: Any,
    ) -> None:
        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"audit.otlp.endpoint must be an http(s) URL, not {endpoint!r}")
        self.endpoint = f"{url.scheme}://{url.hostname}:{url.port or ''}".rstrip(":")
        self._host, self._port = url.hostname, url.port
        self._path = url.path if url.path not in ("", "/") else "/v1/logs"
        self._https = url.scheme == "https"
        self._tls = client_context(ca_file, cert_file, key_file) if self._https else None
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._resource = Resource(
            attributes=[
                _kv("service.name", service_name),
                _kv("host.name", socket.gethostname()),
                _kv("process.pid", os.getpid()),
            ]
        )
        self._scope = InstrumentationScope(name="wellhead.audit")
        super().__init__(**kw)

    def describe(self) -> str:
        return f"otlp {self.endpoint}{self._path}"

    def _encode(self, line: str, event: Mapping[str, Any]) -> bytes:
        return line.encode("utf-8")  # made into protobuf by the forwarder, off the call

    def probe(self, timeout: float = 5.0) -> None:
        """POST an empty export request: a collector answers 200 to it."""
        what = self.describe()
        conn = self._new_connection(timeout)  # its own: the forwarder may be sending
        try:
            empty = ExportLogsServiceRequest().SerializeToString()
            status, body, _ = _request(conn, self._path, empty)
        except ssl.SSLCertVerificationError as exc:
            raise misconfigured(what, f"certificate check failed: {exc.verify_message}") from None
        except ssl.SSLError as exc:
            raise misconfigured(what, f"TLS handshake failed: {exc}") from None
        except socket.gaierror as exc:
            raise misconfigured(what, f"host name does not resolve: {exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise unreachable(what, exc) from None
        finally:
            conn.close()
        if status in _RETRYABLE or status >= 500:
            raise unreachable(what, RuntimeError(f"HTTP {status}"))
        if not 200 <= status < 300:
            raise misconfigured(what, f"HTTP {status} {_text(body)}")

    def _send(self, batch: Sequence[bytes]) -> int:
        request = ExportLogsServiceRequest(
            resource_logs=[
                ResourceLogs(
                    resource=self._resource,
                    scope_logs=[
                        ScopeLogs(scope=self._scope, log_records=[_record(b) for b in batch])
                    ],
                )
            ]
        )
        status, body = self._post(request.SerializeToString(), self.timeout)
        if status in _RETRYABLE or status >= 500:
            raise ConnectionError(f"HTTP {status} {_text(body)}")
        if not 200 <= status < 300:
            raise Rejected(f"HTTP {status} {_text(body)}")
        if not body:
            return 0
        response = ExportLogsServiceResponse()
        try:
            response.ParseFromString(body)
        except Exception:  # noqa: BLE001 - a 2xx with an odd body still took the events
            return 0
        return min(len(batch), int(response.partial_success.rejected_log_records))

    def _post(self, payload: bytes, timeout: float) -> tuple[int, bytes]:
        """One POST on the forwarder's persistent connection."""
        if self._conn is None:
            self._conn = self._new_connection(timeout)
        self._conn.timeout = timeout
        status, body, will_close = _request(self._conn, self._path, payload)
        if will_close:
            self._disconnect()
        return status, body

    def _new_connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout, context=self._tls
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _disconnect(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()


def _request(
    conn: http.client.HTTPConnection, path: str, payload: bytes
) -> tuple[int, bytes, bool]:
    conn.request(
        "POST",
        path,
        body=payload,
        headers={"Content-Type": "application/x-protobuf", "User-Agent": "wellhead-audit"},
    )
    response = conn.getresponse()
    return response.status, response.read(), bool(response.will_close)


def _text(body: bytes) -> str:
    return body[:200].decode("utf-8", "replace")


def _record(line: bytes) -> LogRecord:
    event = json.loads(line)
    severity, severity_text = OTEL_SEVERITY.get(syslog_severity(event), (9, "INFO"))
    record = LogRecord(
        time_unix_nano=_nanos(event.get("ts")),
        observed_time_unix_nano=_nanos(None),
        severity_number=severity,  # type: ignore[arg-type]
        severity_text=severity_text,
        body=_any(event),
        event_name=str(event.get("event") or "audit"),
    )
    trace = event.get("trace_id")
    if isinstance(trace, str) and len(trace) == 32:
        try:
            record.trace_id = bytes.fromhex(trace)
        except ValueError:
            pass
    return record


def _nanos(ts: Any) -> int:
    if isinstance(ts, str):
        try:
            return int(datetime.fromisoformat(ts).timestamp() * 1_000_000) * 1000
        except ValueError:
            pass
    return int(datetime.now().timestamp() * 1_000_000) * 1000


def _any(value: Any) -> AnyValue:
    if value is None:
        return AnyValue()
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        if _INT64[0] <= value <= _INT64[1]:
            return AnyValue(int_value=value)
        return AnyValue(string_value=str(value))
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, Mapping):
        return AnyValue(kvlist_value=KeyValueList(values=[_kv(k, v) for k, v in value.items()]))
    if isinstance(value, list | tuple):
        return AnyValue(array_value=ArrayValue(values=[_any(v) for v in value]))
    return AnyValue(string_value=str(value))


def _kv(key: Any, value: Any) -> KeyValue:
    return KeyValue(key=str(key), value=_any(value))
