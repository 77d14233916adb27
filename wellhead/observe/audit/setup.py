"""From `audit:` settings to running sinks: built, probed at start-up, watched by /readyz
and /metrics."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from wellhead.config import AuditConfig
from wellhead.observe.audit.base import AuditReceiverError, AuditSink
from wellhead.observe.audit.forward import ForwardingSink
from wellhead.observe.audit.jsonl import JsonlFileAuditSink
from wellhead.observe.audit.multi import MultiAuditSink

log = logging.getLogger("wellhead.audit")

PROBE_TIMEOUT_S = 5.0
WORKER_INDEX_ENV = "WELLHEAD_WORKER_INDEX"  # set by `serve.supervise` for each HTTP worker


def per_worker(path: Path) -> Path:
    """With `server.workers` > 1 each worker gets its own file and spool (one process each):
    `audit.jsonl` becomes `audit.worker2.jsonl`, the spool `otlp` becomes `otlp-worker2`.
    A replaced worker takes over its predecessor's, spool included."""
    index = os.environ.get(WORKER_INDEX_ENV)
    if not index:
        return path
    if path.suffix:
        return path.with_name(f"{path.stem}.worker{index}{path.suffix}")
    return path.with_name(f"{path.name}-worker{index}")


def enabled(audit: AuditConfig) -> bool:
    return bool(audit.path or audit.syslog or audit.otlp)


def spool_root(audit: AuditConfig) -> Path:
    if audit.spool.directory:
        return Path(audit.spool.directory)
    import platformdirs

    cache = os.environ.get("WELLHEAD_CACHE_DIR") or platformdirs.user_cache_dir("wellhead")
    return Path(cache) / "audit-spool"


def build_audit_sink(
    audit: AuditConfig, *, on_drop: Callable[[int], None], max_argument_bytes: int
) -> AuditSink | MultiAuditSink:
    """The configured sinks (one, or a fan-out). Threads start; nothing is contacted yet."""
    common: dict[str, Any] = {"on_drop": on_drop, "max_argument_bytes": max_argument_bytes}
    sinks: list[AuditSink] = []
    try:
        if audit.path:
            key = audit.chain.secret.encode() if audit.chain.secret else None
            sinks.append(
                JsonlFileAuditSink(
                    per_worker(Path(audit.path)),
                    audit.max_bytes,
                    audit.backup_count,
                    chain=audit.chain.enabled,
                    chain_key=key,
                    **common,
                )
            )
        spool: dict[str, Any] = {"spool_max_bytes": audit.spool.max_bytes}
        if audit.syslog:
            from wellhead.observe.audit.syslog import SyslogAuditSink

            s = audit.syslog
            sinks.append(
                SyslogAuditSink(
                    s.host,
                    s.port,
                    s.protocol,
                    ca_file=s.ca_file,
                    cert_file=s.cert_file,
                    key_file=s.key_file,
                    server_name=s.server_name,
                    spool_dir=str(per_worker(spool_root(audit) / "syslog")),
                    **spool,
                    **common,
                )
            )
        if audit.otlp:
            from wellhead.observe.audit.otlp import OtlpLogAuditSink

            o = audit.otlp
            sinks.append(
                OtlpLogAuditSink(
                    o.endpoint,
                    timeout=o.timeout_s,
                    ca_file=o.ca_file,
                    cert_file=o.cert_file,
                    key_file=o.key_file,
                    spool_dir=str(per_worker(spool_root(audit) / "otlp")),
                    **spool,
                    **common,
                )
            )
    except BaseException:
        for sink in sinks:
            sink.close(5)
        raise
    return sinks[0] if len(sinks) == 1 else MultiAuditSink(sinks)


def remote_sinks(sink: Any) -> list[ForwardingSink]:
    members = sink.sinks if isinstance(sink, MultiAuditSink) else [sink]
    return [s for s in members if isinstance(s, ForwardingSink)]


async def check_receivers(sink: Any) -> None:
    """At start-up: a receiver that can never work stops the server with a clear error;
    one that is merely unreachable is logged and shown by /readyz while events spool."""
    for remote in remote_sinks(sink):
        await asyncio.to_thread(remote.open)  # the spool: refused if another process has it
        try:
            await asyncio.to_thread(remote.probe, PROBE_TIMEOUT_S)
        except AuditReceiverError as exc:
            if not exc.unreachable:
                raise
            remote._failed(exc)  # noqa: SLF001 - the forwarder's own failure path
            log.error("%s; events spool to %s meanwhile", exc, remote.spool.directory)


def receiver_health(sink: Any) -> dict[str, str]:
    """`{receiver: "ok" | "unavailable: why"}` for /readyz; empty without remote sinks."""
    return {remote.describe(): remote.health() for remote in remote_sinks(sink)}


class SpoolCollector(Collector):
    """Per receiver: events and bytes waiting in its spool, the oldest one's age, drops."""

    def __init__(self, sinks: list[ForwardingSink]) -> None:
        self.sinks = sinks

    def collect(self) -> Iterator[Any]:
        events = GaugeMetricFamily(
            "wellhead_audit_spool_events", "Audit events waiting to be sent.", labels=["receiver"]
        )
        size = GaugeMetricFamily(
            "wellhead_audit_spool_bytes", "Bytes of audit events waiting.", labels=["receiver"]
        )
        age = GaugeMetricFamily(
            "wellhead_audit_spool_oldest_age_seconds",
            "Age of the oldest audit event waiting (0 when none).",
            labels=["receiver"],
        )
        dropped = CounterMetricFamily(
            "wellhead_audit_spool_dropped",
            "Audit events refused because the spool was full.",
            labels=["receiver"],
        )
        sent = CounterMetricFamily(
            "wellhead_audit_forwarded", "Audit events the receiver accepted.", labels=["receiver"]
        )
        for sink in self.sinks:
            stats, label = sink.spool_stats(), [sink.kind]
            events.add_metric(label, stats.events)
            size.add_metric(label, stats.bytes)
            age.add_metric(label, stats.oldest_age_s)
            dropped.add_metric(label, stats.dropped)
            sent.add_metric(label, sink.forwarded)
        yield from (events, size, age, dropped, sent)
