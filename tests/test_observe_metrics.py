"""Metrics: names, labels and values as a scraper sees them in the exposition text."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from wellhead.observe.metrics import Metrics
from wellhead.observe.watchdog import InFlight


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse what /metrics would return into {(sample name, sorted labels): value}."""
    body, content_type = m.render()
    assert content_type.startswith("text/plain")
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_tool_calls_duration_and_size() -> None:
    m = Metrics()
    m.record_call("query", "ok", 0.03, response_bytes=1500)
    m.record_call("query", "ok", 2.0, response_bytes=70_000)
    m.record_call("query", "timeout", 30.0)
    m.record_call("list_tables", "tool_error", 0.001, response_bytes=100)
    s = samples(m)
    assert s[("wellhead_tool_calls_total", (("outcome", "ok"), ("tool", "query")))] == 2
    assert s[("wellhead_tool_calls_total", (("outcome", "timeout"), ("tool", "query")))] == 1
    assert (
        s[("wellhead_tool_calls_total", (("outcome", "tool_error"), ("tool", "list_tables")))] == 1
    )
    assert s[("wellhead_tool_duration_seconds_count", (("tool", "query"),))] == 3
    assert s[("wellhead_tool_duration_seconds_sum", (("tool", "query"),))] == pytest.approx(32.03)
    assert s[("wellhead_tool_duration_seconds_bucket", (("le", "0.05"), ("tool", "query")))] == 1
    # the timeout produced no response, so only two sizes were observed
    assert s[("wellhead_tool_response_bytes_count", (("tool", "query"),))] == 2
    assert s[("wellhead_tool_response_bytes_bucket", (("le", "4096.0"), ("tool", "query")))] == 1
    assert s[("wellhead_tool_response_bytes_bucket", (("le", "+Inf"), ("tool", "query")))] == 2


def test_in_flight_gauge_goes_back_down_even_on_error() -> None:
    m = Metrics()
    key = ("wellhead_tool_in_flight", (("tool", "query"),))
    with m.in_flight("query"), m.in_flight("query"):
        assert samples(m)[key] == 2
    assert samples(m)[key] == 0
    with pytest.raises(RuntimeError), m.in_flight("query"):
        raise RuntimeError("boom")
    assert samples(m)[key] == 0


def test_in_flight_is_counted_at_scrape_time_from_the_call_registry() -> None:
    m, calls = Metrics(), InFlight()
    m.watch_in_flight(calls.counts)
    calls.enter("query", "a")
    calls.enter("query", "b")
    calls.enter("echo", "c")
    assert samples(m)[("wellhead_tool_in_flight", (("tool", "query"),))] == 2
    assert samples(m)[("wellhead_tool_in_flight", (("tool", "echo"),))] == 1
    calls.exit("a")
    calls.exit("c")
    assert samples(m)[("wellhead_tool_in_flight", (("tool", "query"),))] == 1
    assert samples(m)[("wellhead_tool_in_flight", (("tool", "echo"),))] == 0  # kept, at 0


def test_loop_abandoned_audit_and_pool_metrics() -> None:
    m = Metrics()
    m.set_loop_lag(0.012, 0.6)
    m.loop_blocked_by(["bad_tool", "bad_tool", "query"])
    m.loop_blocked_by([])
    m.abandoned_threads.inc()
    m.abandoned_threads.inc()
    m.abandoned_threads.dec()
    m.audit_dropped.inc(3)
    m.set_pool("warehouse", size=10, in_use=4)
    live = {"size": 5, "in_use": 1}
    m.watch_pool("pg", lambda: (live["size"], live["in_use"]))

    def broken() -> tuple[int, int]:
        raise RuntimeError("pool closed")

    m.watch_pool("broken", broken)
    s = samples(m)
    assert s[("wellhead_event_loop_lag_seconds", ())] == pytest.approx(0.012)
    assert s[("wellhead_event_loop_lag_max_seconds", ())] == pytest.approx(0.6)
    assert s[("wellhead_event_loop_blocked_total", (("tool", "bad_tool"),))] == 1
    assert s[("wellhead_event_loop_blocked_total", (("tool", "query"),))] == 1
    assert s[("wellhead_event_loop_blocked_total", (("tool", "none"),))] == 1
    assert s[("wellhead_abandoned_threads", ())] == 1
    assert s[("wellhead_audit_dropped_total", ())] == 3
    assert s[("wellhead_source_pool_size", (("source", "warehouse"),))] == 10
    assert s[("wellhead_source_pool_in_use", (("source", "warehouse"),))] == 4
    assert s[("wellhead_source_pool_in_use", (("source", "pg"),))] == 1
    assert not any(labels == (("source", "broken"),) for _, labels in s)
    live["in_use"] = 5  # probes are read at scrape time
    assert samples(m)[("wellhead_source_pool_in_use", (("source", "pg"),))] == 5
    m.watch_pool("pg", None)
    assert ("wellhead_source_pool_size", (("source", "pg"),)) not in samples(m)


def test_registries_are_independent() -> None:
    a, b = Metrics(), Metrics()
    a.record_call("query", "ok", 0.1)
    assert ("wellhead_tool_calls_total", (("outcome", "ok"), ("tool", "query"))) in samples(a)
    assert ("wellhead_tool_calls_total", (("outcome", "ok"), ("tool", "query"))) not in samples(b)


def test_openmetrics_negotiation() -> None:
    m = Metrics()
    m.record_call("query", "ok", 0.1)
    body, content_type = m.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_standalone_http_server_serves_the_registry() -> None:
    m = Metrics()
    m.record_call("describe_table", "ok", 0.2)
    server = m.start_http_server(0, "127.0.0.1")
    try:
        r = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
        assert r.status_code == 200
        assert 'wellhead_tool_calls_total{outcome="ok",tool="describe_table"} 1.0' in r.text
    finally:
        server.close()


@pytest.mark.anyio
async def test_asgi_app() -> None:
    m = Metrics()
    m.record_call("query", "internal_error", 0.2)
    transport = httpx.ASGITransport(app=m.asgi_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/")
    assert r.status_code == 200
    assert 'wellhead_tool_calls_total{outcome="internal_error",tool="query"} 1.0' in r.text
