"""Secure forwarding that loses nothing, against real receivers started by the tests.

Receivers (`tests/audit_receivers.py`): a TLS syslog server on the standard library's ssl
module, with certificates made here (client certificates required where said), and an
OTLP/HTTP receiver that decodes the protobuf export requests. Outages are real: the
receiver stops listening and comes back later on the same port.
"""

from __future__ import annotations

import logging
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import duckdb
import pytest
from fastmcp import Client

from tests.audit_receivers import OtlpReceiver, Pki, TlsSyslogReceiver, make_pki, wait_until
from wellhead.app import build_runtime, build_server
from wellhead.config import parse_settings
from wellhead.errors import ConfigError
from wellhead.observe.audit import (
    AuditReceiverError,
    JsonlFileAuditSink,
    MultiAuditSink,
    OtlpLogAuditSink,
    Spool,
    SyslogAuditSink,
)
from wellhead.observe.audit.setup import build_audit_sink, receiver_health, remote_sinks
from wellhead.observe.metrics import Metrics

OUTAGE_S = 10
OUTAGE_CALLS = 2_000


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def small_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("db") / "small.duckdb"
    connection = duckdb.connect(str(path))
    connection.execute("CREATE TABLE t AS SELECT range AS n FROM range(10)")
    connection.close()
    return path


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once this closes


def tls_sink(pki: Pki, port: int, **kw: Any) -> SyslogAuditSink:
    return SyslogAuditSink(
        "localhost",
        port,
        "tls",
        ca_file=str(pki.ca),
        cert_file=str(pki.client_cert),
        key_file=str(pki.client_key),
        **kw,
    )


# -- syslog over TLS --------------------------------------------------------------------------


def test_tls_syslog_with_a_client_certificate_delivers_octet_counted_rfc5424(pki: Pki) -> None:
    receiver = TlsSyslogReceiver(pki, require_client_cert=True).start()
    sink = tls_sink(pki, receiver.port)
    try:
        sink.probe()
        outcomes = ["ok", "internal_error", "timeout", "tool_error"] * 25
        for i, outcome in enumerate(outcomes):
            sink.emit({"event": "tool_call", "i": i, "outcome": outcome, "sql": "a\nb", "pw": 1})
        assert sink.flush(10)
    finally:
        sink.close()
        receiver.stop()
        receiver.join()
    events = receiver.events()
    assert [e["i"] for e in events] == list(range(100))
    assert events[0]["sql"] == "a\nb"  # octet counting carries embedded newlines
    severity = {"ok": 6, "internal_error": 3, "timeout": 4, "tool_error": 5}
    for message, outcome in zip(receiver.messages, outcomes, strict=True):
        pri = int(message[1 : message.index(b">")])
        assert pri == 13 * 8 + severity[outcome]
        assert message.split(b" ")[5] == b"tool_call"  # MSGID
    assert sink.dropped == 0 and sink.forwarded == 100


def test_tls_that_can_never_work_is_a_clear_error(pki: Pki, tmp_path: Path) -> None:
    receiver = TlsSyslogReceiver(pki).start()
    try:
        wrong_ca = SyslogAuditSink("localhost", receiver.port, "tls", ca_file=str(pki.other_ca))
        with pytest.raises(AuditReceiverError, match="certificate check failed") as caught:
            wrong_ca.probe()
        assert not caught.value.unreachable
        wrong_ca.close(1)
        wrong_name = SyslogAuditSink(
            "127.0.0.1", receiver.port, "tls", ca_file=str(pki.ca), server_name="siem.example"
        )
        with pytest.raises(AuditReceiverError, match="certificate check failed"):
            wrong_name.probe()
        wrong_name.close(1)
    finally:
        receiver.stop()
    strict = TlsSyslogReceiver(pki, require_client_cert=True).start()
    try:  # TLS 1.3: the missing client certificate is refused after the handshake
        anonymous = SyslogAuditSink("localhost", strict.port, "tls", ca_file=str(pki.ca))
        with pytest.raises(AuditReceiverError, match="refused the TLS session") as caught:
            anonymous.probe()
        assert not caught.value.unreachable
        anonymous.close(1)
    finally:
        strict.stop()
    with pytest.raises(ConfigError, match="cannot be loaded"):
        SyslogAuditSink("localhost", 6514, "tls", ca_file=str(tmp_path / "missing.pem"))
    nobody = SyslogAuditSink("localhost", dead_port(), "tls", ca_file=str(pki.ca))
    with pytest.raises(AuditReceiverError, match="unreachable") as caught:
        nobody.probe()
    assert caught.value.unreachable
    nobody.close(1)


def test_a_misconfigured_receiver_stops_the_server_at_start_up(
    pki: Pki, small_db: Path, tmp_path: Path
) -> None:
    receiver = TlsSyslogReceiver(pki).start()
    settings = parse_settings(
        {
            "sources": {"db": {"kind": "duckdb", "path": str(small_db)}},
            "audit": {
                "syslog": {
                    "host": "localhost",
                    "port": receiver.port,
                    "protocol": "tls",
                    "ca_file": str(pki.other_ca),
                },
                "spool": {"directory": str(tmp_path / "spool")},
            },
        }
    )

    async def connect() -> None:
        async with Client(build_server(settings)) as client:
            await client.list_tools()

    try:
        with pytest.raises(Exception, match="certificate check failed"):
            anyio.run(connect)
    finally:
        receiver.stop()


# -- OTLP/HTTP --------------------------------------------------------------------------------


def test_otlp_export_is_decodable_log_records() -> None:
    receiver = OtlpReceiver().start()
    sink = OtlpLogAuditSink(receiver.endpoint, service_name="wellhead-test")
    try:
        sink.probe()
        trace = "0af7651916cd43dd8448eb211c80319c"
        sink.emit(
            {
                "ts": "2026-12-01T10:00:00.000001Z",
                "event": "tool_call",
                "outcome": "timeout",
                "rows": 3,
                "truncated": False,
                "arguments": {"sql": "select 1", "params": [1, "x"]},
                "trace_id": trace,
                "client_name": None,
            }
        )
        for i in range(99):
            sink.emit({"event": "tool_call", "i": i, "outcome": "ok"})
        assert sink.flush(10)
    finally:
        sink.close()
        receiver.stop()
    assert len(receiver.records) == 100
    first = receiver.records[0]
    assert first.event_name == "tool_call"
    assert (first.severity_number, first.severity_text) == (13, "WARN")
    when = datetime(2026, 12, 1, 10, 0, 0, 1, tzinfo=UTC)
    assert first.time_unix_nano == int(when.timestamp()) * 10**9 + 1_000  # the event's ts
    assert first.trace_id.hex() == trace
    body = receiver.events()[0]
    assert body["arguments"] == {"sql": "select 1", "params": [1, "x"]}
    assert body["rows"] == 3 and body["truncated"] is False and body["client_name"] is None
    assert [e["i"] for e in receiver.events()[1:]] == list(range(99))
    assert receiver.resources[0]["service.name"] == "wellhead-test"
    assert sink.forwarded == 100 and sink.dropped == 0


def test_otlp_refusals_are_counted_and_overload_is_retried() -> None:
    receiver = OtlpReceiver().start()
    metrics = Metrics()
    sink = OtlpLogAuditSink(receiver.endpoint, on_drop=metrics.audit_dropped.inc)
    try:
        receiver.status = 400  # never acceptable: a counted loss, not a retry loop
        for i in range(5):
            sink.emit({"event": "tool_call", "i": i})
        assert sink.flush(10)
        assert sink.dropped == 5
        assert metrics.registry.get_sample_value("wellhead_audit_dropped_total") == 5

        receiver.status = 503  # overloaded: kept and retried
        for i in range(5, 10):
            sink.emit({"event": "tool_call", "i": i})
        assert not sink.flush(1)
        assert sink.health().startswith("unavailable: HTTP 503")
        receiver.status = 200
        assert sink.flush(10)
        assert [e["i"] for e in receiver.events()] == list(range(5, 10))

        receiver.rejected = 2  # a 2xx that refuses some records
        sink.emit({"event": "tool_call", "i": 10})
        sink.emit({"event": "tool_call", "i": 11})
        assert sink.flush(10)
        assert sink.dropped == 7
    finally:
        sink.close()
        receiver.stop()


def test_otlp_wrong_path_is_a_misconfiguration() -> None:
    receiver = OtlpReceiver().start()
    sink = OtlpLogAuditSink(f"http://127.0.0.1:{receiver.port}/v1/traces")
    try:
        with pytest.raises(AuditReceiverError, match="HTTP 404") as caught:
            sink.probe()
        assert not caught.value.unreachable
    finally:
        sink.close(1)
        receiver.stop()
    with pytest.raises(ConfigError, match="http"):
        OtlpLogAuditSink("collector:4318")


# -- the spool --------------------------------------------------------------------------------


def test_a_full_spool_is_a_counted_loss_and_never_a_wait(tmp_path: Path) -> None:
    port = dead_port()
    metrics = Metrics()
    sink = OtlpLogAuditSink(
        f"http://127.0.0.1:{port}/v1/logs",
        spool_dir=str(tmp_path / "spool"),
        spool_max_bytes=20_000,
        on_drop=metrics.audit_dropped.inc,
        drain_timeout_s=0.5,
    )
    started = time.monotonic()
    for i in range(500):
        sink.emit({"event": "tool_call", "i": i, "pad": "x" * 40})
    assert sink.flush_to_spool(5)  # everything is in the spool (or dropped)
    assert time.monotonic() - started < 3, "a full spool made callers wait"
    stats = sink.spool_stats()
    assert 0 < stats.events < 500
    assert stats.dropped == sink.dropped == 500 - stats.events
    assert stats.bytes <= 20_000
    assert metrics.registry.get_sample_value("wellhead_audit_dropped_total") == sink.dropped
    kept = stats.events
    receiver = OtlpReceiver(port=port).start()
    try:
        assert sink.flush(15)
        assert [e["i"] for e in receiver.events()] == list(range(kept))  # the oldest kept
    finally:
        sink.close()
        receiver.stop()


def test_the_spool_outlives_the_process(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = dead_port()
    spool = str(tmp_path / "spool")
    first = OtlpLogAuditSink(
        f"http://127.0.0.1:{port}/v1/logs", spool_dir=spool, drain_timeout_s=0.5
    )
    for i in range(300):
        first.emit({"event": "tool_call", "i": i})
    with caplog.at_level(logging.WARNING, logger="wellhead.audit"):
        first.close()
    assert first.dropped == 0
    assert any("sent at the next start" in r.getMessage() for r in caplog.records)
    receiver = OtlpReceiver(port=port).start()
    second = OtlpLogAuditSink(f"http://127.0.0.1:{port}/v1/logs", spool_dir=spool)
    try:
        second.emit({"event": "tool_call", "i": 300})
        assert second.flush(15)
    finally:
        second.close()
        receiver.stop()
    assert [e["i"] for e in receiver.events()] == list(range(301))


def test_one_process_per_spool_directory(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", 1_000_000)
    try:
        with pytest.raises(ConfigError, match="in use by another process"):
            Spool(tmp_path / "spool", 1_000_000)
    finally:
        spool.close()
    Spool(tmp_path / "spool", 1_000_000).close()  # free again once closed


def test_spool_segments_replay_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", 10_000_000, segment_bytes=1_000)
    records = [f"event-{i}".encode() * 5 for i in range(400)]
    for start in range(0, 400, 37):
        assert spool.append(records[start : start + 37]) == len(records[start : start + 37])
    assert len(list((tmp_path / "s").glob("*.seg"))) > 10
    got: list[bytes] = []
    while len(got) < 150:
        batch = spool.read(50)
        got += batch
        spool.commit()
    spool.read(10)  # read but never committed: must come again after a restart
    spool.close()
    again = Spool(tmp_path / "s", 10_000_000, segment_bytes=1_000)
    assert again.stats().events == 250
    while not again.empty:
        got += again.read(64)
        again.commit()
    assert got == records
    assert len(list((tmp_path / "s").glob("*.seg"))) == 1  # read segments are deleted
    again.close()


# -- the outage: 2,000 calls while both receivers are away ------------------------------------


def test_two_thousand_calls_during_a_ten_second_outage_lose_nothing(
    pki: Pki, small_db: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    syslog = TlsSyslogReceiver(pki, require_client_cert=True).start()
    otlp = OtlpReceiver().start()
    settings = parse_settings(
        {
            "sources": {"db": {"kind": "duckdb", "path": str(small_db)}},
            "audit": {
                "syslog": {
                    "host": "localhost",
                    "port": syslog.port,
                    "protocol": "tls",
                    "ca_file": str(pki.ca),
                    "cert_file": str(pki.client_cert),
                    "key_file": str(pki.client_key),
                },
                "otlp": {"endpoint": otlp.endpoint},
                "spool": {"directory": str(tmp_path / "spool")},
            },
            "logging": {"arguments": "full"},
        }
    )
    runtime = build_runtime(settings)
    sinks = {sink.kind: sink for sink in remote_sinks(runtime.audit)}
    restarted: list[Any] = []
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with Client(build_server(settings, runtime)) as client:
            await client.call_tool("query", {"sql": "SELECT -1 AS warmup"})
            await anyio.to_thread.run_sync(
                lambda: wait_until(
                    lambda: len(syslog.events()) == 1 and len(otlp.events()) == 1, 10, "warm-up"
                )
            )
            syslog.stop()
            otlp.stop()
            outage_started = time.monotonic()
            for i in range(OUTAGE_CALLS):  # one after another: the order is the calls'
                result = await client.call_tool("query", {"sql": f"SELECT {i} AS n"})
                assert result.structured_content["rows"] == [[i]]
            await anyio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_started)))
            await anyio.to_thread.run_sync(lambda: [s.flush_to_spool(5) for s in sinks.values()])
            seen["health"] = receiver_health(runtime.audit)
            seen["stats"] = {kind: sink.spool_stats() for kind, sink in sinks.items()}
            body, _ = runtime.metrics.render()
            seen["metrics"] = body.decode()
            restarted.append(TlsSyslogReceiver(pki, port=syslog.port, require_client_cert=True))
            restarted.append(OtlpReceiver(port=otlp.port))
            for receiver in restarted:
                receiver.start()
            total = OUTAGE_CALLS + 1

            def delivered() -> bool:
                return (
                    len(syslog.events()) + len(restarted[0].events()) >= total
                    and len(restarted[1].events()) + len(otlp.events()) >= total
                )

            await anyio.to_thread.run_sync(lambda: wait_until(delivered, 60, "replay"))

    try:
        with caplog.at_level(logging.INFO, logger="wellhead.audit"):
            anyio.run(scenario)
    finally:
        for receiver in [syslog, otlp, *restarted]:
            receiver.stop()

    # While away (at least 10 s, longer if the calls took longer): readiness said so, the
    # spool already held every event of the 2,000 calls, which had all returned; metrics
    # and warnings showed it.
    for kind, sink in sinks.items():
        assert seen["health"][sink.describe()].startswith("unavailable"), seen["health"]
        stats = seen["stats"][kind]
        assert stats.events == OUTAGE_CALLS and stats.dropped == 0
        assert stats.oldest_age_s >= OUTAGE_S * 0.9
        assert (
            f'wellhead_audit_spool_events{{receiver="{kind}"}} {OUTAGE_CALLS}.0'
            in (seen["metrics"])
        )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("syslog+tls" in w and "unavailable" in w for w in warnings), warnings
    assert any("otlp" in w and "unavailable" in w for w in warnings), warnings
    # After: exactly 2,000 events (and the warm-up) on each, once each, in call order.
    expected = ["SELECT -1 AS warmup"] + [f"SELECT {i} AS n" for i in range(OUTAGE_CALLS)]
    syslog_events = syslog.events() + restarted[0].events()
    otlp_events = otlp.events() + restarted[1].events()
    for events in (syslog_events, otlp_events):
        assert [e["arguments"]["sql"] for e in events] == expected
        assert len({e["invocation_id"] for e in events}) == len(expected)
    for sink in sinks.values():
        assert sink.spool_stats().events == 0 and sink.dropped == 0
        assert sink.health() == "ok"


def test_each_http_worker_gets_its_own_file_and_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit = parse_settings(
        {
            "audit": {
                "path": str(tmp_path / "audit.jsonl"),
                "otlp": {"endpoint": f"http://127.0.0.1:{dead_port()}/v1/logs"},
                "spool": {"directory": str(tmp_path / "spool")},
            }
        }
    ).audit
    monkeypatch.setenv("WELLHEAD_WORKER_INDEX", "2")  # what `serve.supervise` sets
    sink = build_audit_sink(audit, on_drop=lambda n: None, max_argument_bytes=4096)
    try:
        assert isinstance(sink, MultiAuditSink)
        jsonl, otlp = sink.sinks
        assert isinstance(jsonl, JsonlFileAuditSink) and isinstance(otlp, OtlpLogAuditSink)
        assert jsonl.path == tmp_path / "audit.worker2.jsonl"
        assert otlp.spool.directory == tmp_path / "spool" / "otlp-worker2"
    finally:
        sink.close(1)
