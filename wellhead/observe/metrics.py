"""Prometheus metrics for tools, the event loop, source pools and the audit sink.

Each `Metrics` owns its own `CollectorRegistry`: two apps (or two tests) in one process
never share or collide on counters, and nothing registers into prometheus_client's global
default registry as an import side effect.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    make_asgi_app,
)
from prometheus_client import start_http_server as _prom_start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

OUTCOMES = (
    "ok", "tool_error", "invalid_output", "timeout", "cancelled", "rate_limited", "internal_error",
)  # fmt: skip

DURATION_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
RESPONSE_BYTES_BUCKETS = tuple(float(2**k) for k in range(6, 26, 2))  # 64 B … 16 MiB

UNKNOWN_LABEL = "_unknown"
MAX_TOOL_LABELS = 1000
"""Distinct `tool` label values a registry takes; later names are counted as `_unknown`."""
MAX_LABEL_CHARS = 128
"""A longer label value is never a tool name anyone registered: `_unknown`."""

InFlightCounts = Callable[[], Mapping[str, int]]
"""Returns {tool: calls running now}; called at scrape time."""

PoolStats = Callable[[], tuple[int, int]]
"""Returns (size, in_use) for a source's pool; called at scrape time."""


class _InFlightCollector(Collector):
    """`wellhead_tool_in_flight{tool}`, counted at scrape time from the registry of running
    calls the watchdog keeps anyway: no gauge to bump twice on every call. A tool once seen
    keeps its series (at 0) so dashboards do not see it vanish."""

    def __init__(self, label: Callable[[str], str]) -> None:
        self._label = label
        self._lock = threading.Lock()
        self._probes: list[InFlightCounts] = []
        self._counted: dict[str, int] = {}
        self._seen: set[str] = set()

    def watch(self, probe: InFlightCounts) -> None:
        with self._lock:
            self._probes.append(probe)

    def add(self, tool: str, delta: int) -> None:
        with self._lock:
            self._counted[tool] = self._counted.get(tool, 0) + delta

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            counts = dict(self._counted)
            probes = list(self._probes)
        for probe in probes:
            for tool, running in probe().items():
                tool = self._label(tool)
                counts[tool] = counts.get(tool, 0) + running
        self._seen.update(counts)
        family = GaugeMetricFamily(
            "wellhead_tool_in_flight", "Tool calls currently running.", labels=["tool"]
        )
        for tool in sorted(self._seen):
            family.add_metric([tool], counts.get(tool, 0))
        yield family


@dataclass
class _PoolEntry:
    size: int = 0
    in_use: int = 0
    probe: PoolStats | None = None


class _PoolCollector(Collector):
    """Pool gauges read at scrape time, so they are never stale between tool calls."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: dict[str, _PoolEntry] = {}

    def set(self, source: str, size: int, in_use: int) -> None:
        with self._lock:
            entry = self._pools.setdefault(source, _PoolEntry())
            entry.size, entry.in_use = size, in_use

    def watch(self, source: str, probe: PoolStats | None) -> None:
        with self._lock:
            if probe is None:
                self._pools.pop(source, None)
            else:
                self._pools.setdefault(source, _PoolEntry()).probe = probe

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        size = GaugeMetricFamily(
            "wellhead_source_pool_size", "Connections held by a source's pool.", labels=["source"]
        )
        in_use = GaugeMetricFamily(
            "wellhead_source_pool_in_use",
            "Connections of a source's pool currently checked out.",
            labels=["source"],
        )
        return size, in_use

    def collect(self) -> Iterable[GaugeMetricFamily]:
        size, in_use = self._families()
        with self._lock:
            pools = [(name, e.size, e.in_use, e.probe) for name, e in self._pools.items()]
        for source, s, u, probe in pools:
            if probe is not None:
                try:
                    s, u = probe()
                except Exception:  # a broken probe must not break the whole scrape
                    continue
            size.add_metric([source], s)
            in_use.add_metric([source], u)
        return [size, in_use]

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return list(self._families())


class Metrics:
    """All wellhead metrics, bound to one registry. Thread-safe (prometheus_client is)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.tool_calls = Counter(
            "wellhead_tool_calls_total",
            "Tool calls by tool and outcome.",
            ["tool", "outcome"],
            registry=r,
        )
        self.tool_duration = Histogram(
            "wellhead_tool_duration_seconds",
            "Wall time of a tool call, from the guard's point of view.",
            ["tool"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.tool_response_bytes = Histogram(
            "wellhead_tool_response_bytes",
            "Serialised size of a tool result.",
            ["tool"],
            buckets=RESPONSE_BYTES_BUCKETS,
            registry=r,
        )
        self.loop_lag = Gauge(
            "wellhead_event_loop_lag_seconds",
            "Event-loop lag measured by the watchdog at its last tick.",
            registry=r,
        )
        self.loop_lag_max = Gauge(
            "wellhead_event_loop_lag_max_seconds",
            "Largest event-loop lag seen since start.",
            registry=r,
        )
        self.loop_blocked = Counter(
            "wellhead_event_loop_blocked_total",
            "Times loop lag crossed the threshold, by tool running at the time ('none' if idle).",
            ["tool"],
            registry=r,
        )
        self.abandoned_threads = Gauge(
            "wellhead_abandoned_threads",
            "Sync tool threads still running after their deadline was reported to the caller.",
            registry=r,
        )
        self.audit_dropped = Counter(
            "wellhead_audit_dropped_total",
            "Audit events that could not be written (should stay 0).",
            registry=r,
        )
        self._tool_labels: set[str] = set()
        self._label_lock = threading.Lock()
        self._pools = _PoolCollector()
        r.register(self._pools)
        self._in_flight = _InFlightCollector(self.tool_label)
        r.register(self._in_flight)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    # -- tool calls -------------------------------------------------------------------------

    def record_call(
        self, tool: str, outcome: str, seconds: float, response_bytes: int | None = None
    ) -> None:
        """Count one finished call; response size only when a result was produced."""
        tool = self.tool_label(tool)
        self._child(self.tool_calls, tool, outcome).inc()
        self._child(self.tool_duration, tool).observe(seconds)
        if response_bytes is not None:
            self._child(self.tool_response_bytes, tool).observe(response_bytes)

    def watch_in_flight(self, probe: InFlightCounts) -> None:
        """Count running calls at scrape time with `probe` (the watchdog's call registry)."""
        self._in_flight.watch(probe)

    def tool_label(self, tool: str) -> str:
        """`tool` as a label value, within a bounded set (the callers pass registered names;
        this is the last line against one that does not, so /metrics cannot grow with them)."""
        if tool in self._tool_labels:
            return tool
        if len(tool) > MAX_LABEL_CHARS:
            return UNKNOWN_LABEL
        with self._label_lock:
            if len(self._tool_labels) >= MAX_TOOL_LABELS:
                return UNKNOWN_LABEL
            self._tool_labels.add(tool)
        return tool

    def _child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(...)` resolves labels on every call; tool names repeat, so keep them."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    @contextmanager
    def in_flight(self, tool: str) -> Iterator[None]:
        """Count a call in flight for the duration of a block, even if it raises."""
        tool = self.tool_label(tool)
        self._in_flight.add(tool, 1)
        try:
            yield
        finally:
            self._in_flight.add(tool, -1)

    # -- event loop -------------------------------------------------------------------------

    def set_loop_lag(self, last: float, maximum: float) -> None:
        self.loop_lag.set(last)
        self.loop_lag_max.set(maximum)

    def loop_blocked_by(self, tools: Iterable[str]) -> None:
        names = sorted({self.tool_label(tool) for tool in tools}) or ["none"]
        for name in names:
            self.loop_blocked.labels(tool=name).inc()

    # -- pools ------------------------------------------------------------------------------

    def set_pool(self, source: str, size: int, in_use: int) -> None:
        """Push pool figures (use `watch_pool` to have them read at scrape time instead)."""
        self._pools.set(source, size, in_use)

    def watch_pool(self, source: str, probe: PoolStats | None) -> None:
        """Register a `() -> (size, in_use)` probe read at each scrape; None unregisters."""
        self._pools.watch(source, probe)

    # -- exposition -------------------------------------------------------------------------

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """Body and content type for a /metrics response (OpenMetrics if the scraper asks)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def asgi_app(self) -> Any:
        """A ready ASGI app serving this registry (mount at /metrics)."""
        return make_asgi_app(registry=self.registry)

    def start_http_server(self, port: int, host: str = "127.0.0.1") -> MetricsServer:
        """Serve /metrics on its own port in a daemon thread (for stdio mode)."""
        server, thread = _prom_start_http_server(port, addr=host, registry=self.registry)
        return MetricsServer(server, thread)


class MetricsServer:
    """Handle on a metrics HTTP server; `port` is the bound one (useful with port=0)."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self, timeout: float = 5.0) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)
