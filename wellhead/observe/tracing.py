"""OpenTelemetry setup: FastMCP already emits spans through the API; we install the SDK.

Nothing here touches the network unless an OTLP endpoint is configured, and the console
exporter writes to stderr (stdout belongs to the stdio transport). `current_trace_id()` and
`TraceContextFilter` put the active trace id on log lines so logs and traces join up.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import ProxyTracerProvider, format_span_id, format_trace_id

logger = logging.getLogger("wellhead.tracing")


def otlp_traces_url(endpoint: str) -> str:
    """Accept a collector base URL (`http://otel:4318`) or a full `/v1/traces` URL."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"OTLP endpoint must be an http(s) URL, got {endpoint!r}")
    if parts.path in ("", "/"):
        return endpoint.rstrip("/") + "/v1/traces"
    return endpoint


def setup_tracing(
    enabled: bool,
    service_name: str,
    otlp_endpoint: str | None,
    console: bool = False,
    *,
    headers: Mapping[str, str] | None = None,
    exporters: Sequence[SpanExporter] = (),
    resource_attributes: Mapping[str, str] | None = None,
    set_global: bool = True,
) -> TracerProvider | None:
    """Build (and by default install globally) a TracerProvider; None when disabled.

    OTLP/HTTP goes through a BatchSpanProcessor so exporting never runs on a request
    path; `exporters` (e.g. an in-memory one in tests) get a SimpleSpanProcessor. The global
    provider can be installed once per process: a second call keeps the first and warns.
    Call `shutdown_tracing(provider)` at graceful shutdown to flush pending spans.
    """
    if not enabled:
        return None
    attributes: dict[str, str] = {"service.name": service_name}
    attributes.update(resource_attributes or {})
    provider = TracerProvider(resource=Resource.create(attributes))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=otlp_traces_url(otlp_endpoint), headers=headers)
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if console:
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    for extra in exporters:
        provider.add_span_processor(SimpleSpanProcessor(extra))
    if set_global:
        if isinstance(trace.get_tracer_provider(), ProxyTracerProvider):
            trace.set_tracer_provider(provider)
        else:
            logger.warning(
                "a global OpenTelemetry tracer provider is already installed; keeping it"
            )
    return provider


def shutdown_tracing(provider: TracerProvider | None, timeout_ms: int = 5000) -> None:
    """Flush spans still buffered in batch processors, then stop them."""
    if provider is None:
        return
    provider.force_flush(timeout_ms)
    provider.shutdown()


def current_trace_id() -> str | None:
    """32-hex id of the active trace, or None outside a recorded span."""
    ctx = trace.get_current_span().get_span_context()
    return format_trace_id(ctx.trace_id) if ctx.is_valid else None


def current_span_id() -> str | None:
    """16-hex id of the active span, or None outside a recorded span."""
    ctx = trace.get_current_span().get_span_context()
    return format_span_id(ctx.span_id) if ctx.is_valid else None


class TraceContextFilter(logging.Filter):
    """Add `trace_id` and `span_id` to every record (None outside a span)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "trace_id"):
            record.trace_id = current_trace_id()
            record.span_id = current_span_id()
        return True
