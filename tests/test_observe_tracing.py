"""Tracing: spans reach exporters, trace ids reach logs, FastMCP spans reach our provider."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from textwrap import dedent

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from wellhead.observe.tracing import (
    TraceContextFilter,
    current_span_id,
    current_trace_id,
    otlp_traces_url,
    setup_tracing,
    shutdown_tracing,
)


def test_disabled_does_nothing() -> None:
    before = trace.get_tracer_provider()
    assert setup_tracing(False, "wellhead", "http://127.0.0.1:1") is None
    assert trace.get_tracer_provider() is before


def test_span_is_exported_and_trace_id_matches() -> None:
    exporter = InMemorySpanExporter()
    provider = setup_tracing(True, "wellhead-test", None, exporters=[exporter], set_global=False)
    assert provider is not None
    tracer = provider.get_tracer("test")
    record = logging.LogRecord("wellhead", logging.INFO, __file__, 1, "hello", None, None)
    assert current_trace_id() is None
    with tracer.start_as_current_span("tools/call query") as span:
        trace_id = current_trace_id()
        TraceContextFilter().filter(record)
        ctx = span.get_span_context()
        assert current_span_id() == format(ctx.span_id, "016x")
    assert current_trace_id() is None
    assert trace_id == format(ctx.trace_id, "032x")
    assert record.trace_id == trace_id  # type: ignore[attr-defined]
    (finished,) = exporter.get_finished_spans()
    assert finished.name == "tools/call query"
    assert format(finished.context.trace_id, "032x") == trace_id
    assert finished.resource.attributes["service.name"] == "wellhead-test"
    shutdown_tracing(provider)


def test_otlp_url_normalisation() -> None:
    assert otlp_traces_url("http://otel:4318") == "http://otel:4318/v1/traces"
    assert otlp_traces_url("https://otel:4318/") == "https://otel:4318/v1/traces"
    assert otlp_traces_url("http://gw/otlp/v1/traces") == "http://gw/otlp/v1/traces"
    with pytest.raises(ValueError):
        otlp_traces_url("otel:4318")


def test_otlp_http_export_reaches_a_collector() -> None:
    received: list[tuple[str, str, bytes, str | None]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(
                (self.path, self.headers["Content-Type"], body, self.headers.get("x-team"))
            )
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        provider = setup_tracing(
            True, "wellhead-otlp", endpoint, headers={"x-team": "data"}, set_global=False
        )
        assert provider is not None
        with provider.get_tracer("test").start_as_current_span("tools/call describe_table"):
            pass
        shutdown_tracing(provider)
    finally:
        server.shutdown()
        server.server_close()
    assert len(received) == 1
    path, content_type, body, team = received[0]
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    assert team == "data"
    assert b"wellhead-otlp" in body and b"tools/call describe_table" in body


def test_fastmcp_spans_reach_the_global_provider() -> None:
    """In a fresh interpreter, since the global provider can be installed only once."""
    script = dedent(
        """
        import asyncio, json
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from wellhead.observe.tracing import setup_tracing, current_trace_id

        exporter = InMemorySpanExporter()
        setup_tracing(True, "wellhead", None, exporters=[exporter])
        from fastmcp import FastMCP, Client

        mcp = FastMCP("t")
        seen = {}

        @mcp.tool
        def ping() -> str:
            seen["trace_id"] = current_trace_id()
            return "pong"

        async def main():
            async with Client(mcp) as client:
                await client.call_tool("ping", {})

        asyncio.run(main())
        spans = exporter.get_finished_spans()
        print(json.dumps({
            "names": [s.name for s in spans],
            "trace_ids": [format(s.context.trace_id, "032x") for s in spans],
            "seen": seen["trace_id"],
        }))
        """
    )
    env = {**os.environ, "FASTMCP_CHECK_FOR_UPDATES": "off", "FASTMCP_LOG_ENABLED": "false"}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert any("ping" in name for name in result["names"]), result["names"]
    assert result["seen"] in result["trace_ids"]
