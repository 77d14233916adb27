"""Audit sinks: nothing lost under load, rotation never splits a line, real syslog receivers."""

from __future__ import annotations

import json
import re
import socket
import threading
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from wellhead.observe.audit import AuditSink, JsonlFileAuditSink, MultiAuditSink, SyslogAuditSink
from wellhead.observe.metrics import Metrics


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def rotated_files(path: Path) -> list[Path]:
    """Oldest first: path.N … path.1, path."""
    backups = sorted(
        (p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()),
        key=lambda p: int(p.suffix[1:]),
        reverse=True,
    )
    return [*backups, path]


CHAIN_FIELDS = ("chain_seq", "chain_seed", "chain_prev", "chain")


def unchained(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events as emitted: without the fields each file's chain adds."""
    return [{k: v for k, v in line.items() if k not in CHAIN_FIELDS} for line in lines]


def read_lines(path: Path) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for f in rotated_files(path):
        raw = f.read_bytes()
        assert raw == b"" or raw.endswith(b"\n"), f"{f} ends mid-line"
        lines.extend(json.loads(line) for line in raw.splitlines())
    return lines


@pytest.mark.anyio
async def test_ten_thousand_concurrent_events_give_ten_thousand_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "audit.jsonl"
    metrics = Metrics()
    sink = JsonlFileAuditSink(
        path,
        max_bytes=64 * 1024,
        backup_count=1000,
        queue_size=64,  # far smaller than the burst: backpressure, not loss
        on_drop=metrics.audit_dropped.inc,
    )
    tasks, per_task = 200, 50

    async def caller(task: int) -> None:
        for seq in range(per_task):
            event = {"id": uuid.uuid4().hex, "task": task, "seq": seq, "tool": "query"}
            if seq % 2:
                await sink.aemit(event)
            else:
                await anyio.to_thread.run_sync(sink.emit, event)  # sync tools emit from threads

    async with anyio.create_task_group() as tg:
        for t in range(tasks):
            tg.start_soon(caller, t)
    assert await sink.aclose()

    lines = read_lines(path)
    assert len(lines) == tasks * per_task
    assert len({line["id"] for line in lines}) == tasks * per_task
    assert sink.dropped == 0
    assert sink.written == tasks * per_task
    assert metrics.registry.get_sample_value("wellhead_audit_dropped_total") == 0
    files = rotated_files(path)
    assert len(files) > 5, "rotation did not happen"
    for f in files:
        assert f.stat().st_size <= 64 * 1024
    # each task's events are in emission order across the rotated files
    seen: dict[int, int] = {}
    for line in lines:
        assert line["seq"] == seen.get(line["task"], -1) + 1
        seen[line["task"]] = line["seq"]
        assert line["ts"].endswith("Z")


def test_many_threads_emitting_sync(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    sink = JsonlFileAuditSink(path, max_bytes=0, backup_count=0, queue_size=8)

    def worker(n: int) -> None:
        for i in range(500):
            sink.emit({"worker": n, "i": i})

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sink.flush(timeout=30)
    assert len(path.read_bytes().splitlines()) == 4000  # flush made them visible
    sink.close()
    assert len(read_lines(path)) == 4000
    assert rotated_files(path) == [path]


def test_retention_and_oversized_lines(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    sink = JsonlFileAuditSink(path, max_bytes=300, backup_count=2)
    sink.emit({"n": 0, "blob": "x" * 1000})  # bigger than max_bytes: a file of its own
    for n in range(1, 40):
        sink.emit({"n": n})
    sink.close()
    files = rotated_files(path)
    assert [f.name for f in files] == ["a.jsonl.2", "a.jsonl.1", "a.jsonl"]
    kept = read_lines(path)
    assert [e["n"] for e in kept] == list(range(kept[0]["n"], 40))  # newest kept, in order
    for f in files:
        assert f.stat().st_size <= 300


def test_reopen_appends_and_respects_existing_size(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    first = JsonlFileAuditSink(path, max_bytes=10_000, backup_count=3)
    first.emit({"run": 1})
    first.close()
    second = JsonlFileAuditSink(path, max_bytes=10_000, backup_count=3)
    second.emit({"run": 2})
    second.close()
    assert [e["run"] for e in read_lines(path)] == [1, 2]
    assert path.stat().st_mode & 0o777 == 0o640


def test_secrets_are_redacted_and_events_snapshotted(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    sink = JsonlFileAuditSink(path, max_bytes=0, backup_count=0)
    event: dict[str, Any] = {
        "tool": "query",
        "arguments": {"sql": "select 1", "password": "hunter2"},
        "error": "could not connect to postgresql://app:hunter2@db/x",
    }
    sink.emit(event)
    event["tool"] = "mutated-after-emit"
    sink.close()
    raw = path.read_text()
    assert "hunter2" not in raw
    (line,) = read_lines(path)
    assert line["tool"] == "query"
    assert line["arguments"] == {"sql": "select 1", "password": "***"}


def test_closed_sink_counts_late_events_as_dropped(tmp_path: Path) -> None:
    drops: list[int] = []
    sink = JsonlFileAuditSink(
        tmp_path / "a.jsonl", max_bytes=0, backup_count=0, on_drop=drops.append
    )
    sink.emit({"n": 1})
    assert sink.close()
    assert sink.close()  # idempotent
    sink.emit({"n": 2})
    assert sink.flush(timeout=1)
    assert sink.dropped == 1
    assert drops == [1]
    assert len(read_lines(tmp_path / "a.jsonl")) == 1


class GatedSink(AuditSink):
    """A sink whose destination stalls until the test opens the gate (a slow SIEM)."""

    def __init__(self, **kw: Any) -> None:
        self.gate = threading.Event()
        self.lines: list[bytes] = []
        super().__init__(**kw)

    def _encode(self, line: str, event: Any) -> bytes:
        return line.encode()

    def _write_batch(self, batch: Sequence[bytes]) -> int:
        self.gate.wait()
        self.lines.extend(batch)
        return len(batch)


@pytest.mark.anyio
async def test_stalled_destination_applies_backpressure_then_counts_drops() -> None:
    metrics = Metrics()
    sink = GatedSink(queue_size=2, block_timeout=0.1, on_drop=metrics.audit_dropped.inc)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.sleep(0.005)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        for n in range(10):
            await sink.aemit({"n": n})
        tg.cancel_scope.cancel()
    assert ticks > 1, "aemit blocked the event loop while waiting for space"
    assert sink.dropped > 0
    body, _ = metrics.render()
    assert f"wellhead_audit_dropped_total {float(sink.dropped)}".encode() in body
    sink.gate.set()
    assert await sink.aclose()
    assert len(sink.lines) + sink.dropped == 10


def test_unserialisable_event_is_counted_not_raised(tmp_path: Path) -> None:
    sink = JsonlFileAuditSink(tmp_path / "a.jsonl", max_bytes=0, backup_count=0)
    looped: dict[str, Any] = {}
    looped["self"] = looped
    sink.emit({"bad": looped})
    sink.emit({"ok": True, "obj": object()})  # default=str handles arbitrary objects
    sink.close()
    assert sink.dropped == 1
    (line,) = read_lines(tmp_path / "a.jsonl")
    assert line["ok"] is True


RFC5424 = re.compile(
    r"^<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) "
    r"(?P<msgid>\S+) (?P<sd>-|\[.*?\]) (?P<msg>.*)$",
    re.DOTALL,
)


def check_syslog(message: bytes, app: str = "wellhead") -> tuple[int, dict[str, Any]]:
    text = message.decode("ascii")  # MSG is ASCII-only JSON, no BOM needed
    m = RFC5424.match(text)
    assert m, text
    ts = datetime.fromisoformat(m["ts"])
    assert ts.tzinfo is not None and m["ts"].endswith("Z")
    assert m["app"] == app
    assert m["procid"].isdigit()
    return int(m["pri"]), json.loads(m["msg"])


def test_syslog_udp_receiver_gets_rfc5424(tmp_path: Path) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    port = receiver.getsockname()[1]
    sink = SyslogAuditSink("127.0.0.1", port, protocol="udp", app_name="wellhead")
    outcomes = ["ok", "internal_error", "timeout", "tool_error"] * 5
    for i, outcome in enumerate(outcomes):
        sink.emit({"event": "tool_call", "i": i, "outcome": outcome, "note": "café ☕"})
    assert sink.close()
    got = {}
    try:
        for _ in outcomes:
            data, _ = receiver.recvfrom(70_000)
            pri, event = check_syslog(data)
            got[event["i"]] = (pri, event)
    finally:
        receiver.close()
    assert sorted(got) == list(range(len(outcomes)))
    expected_severity = {"ok": 6, "internal_error": 3, "timeout": 4, "tool_error": 5}
    for i, outcome in enumerate(outcomes):
        pri, event = got[i]
        assert pri == 13 * 8 + expected_severity[outcome]  # facility 13: log audit
        assert event["note"] == "café ☕"
    assert sink.dropped == 0


def test_syslog_tcp_octet_counting() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    received = bytearray()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            while chunk := conn.recv(65536):
                received.extend(chunk)

    t = threading.Thread(target=serve)
    t.start()
    sink = SyslogAuditSink("127.0.0.1", port, protocol="tcp", app_name="wh-audit", facility=16)
    n = 300
    for i in range(n):
        # an embedded newline would break newline framing; octet counting does not care
        sink.emit({"event": "tool_call", "i": i, "sql": "select 1\nfrom t", "level": "warning"})
    assert sink.close()
    t.join(10)
    server.close()

    frames = []
    buf = bytes(received)
    while buf:
        length, _, rest = buf.partition(b" ")
        assert length.isdigit(), buf[:40]
        size = int(length)
        frames.append(rest[:size])
        buf = rest[size:]
    assert len(frames) == n
    for i, frame in enumerate(frames):
        pri, event = check_syslog(frame, app="wh-audit")
        assert pri == 16 * 8 + 4
        assert event["i"] == i
        assert event["sql"] == "select 1\nfrom t"
    assert RFC5424.match(frames[0].decode())["msgid"] == "tool_call"  # type: ignore[index]


def test_syslog_tcp_unreachable_spools_then_delivers(tmp_path: Path) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens here now
    metrics = Metrics()
    sink = SyslogAuditSink(
        "127.0.0.1",
        port,
        protocol="tcp",
        on_drop=metrics.audit_dropped.inc,
        spool_dir=str(tmp_path / "spool"),
        drain_timeout_s=0.2,
    )
    sink.emit({"event": "tool_call", "n": 1})
    sink.emit({"event": "tool_call", "n": 2})
    assert not sink.flush(timeout=0.5)  # not delivered: nobody listens
    assert sink.health().startswith("unavailable")
    assert sink.close()
    assert sink.dropped == 0  # kept in the spool, not lost
    assert metrics.registry.get_sample_value("wellhead_audit_dropped_total") == 0

    server = socket.create_server(("127.0.0.1", port))
    received = bytearray()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            while chunk := conn.recv(65536):
                received.extend(chunk)

    t = threading.Thread(target=serve)
    t.start()
    again = SyslogAuditSink("127.0.0.1", port, protocol="tcp", spool_dir=str(tmp_path / "spool"))
    assert again.flush(timeout=10)
    assert again.close()
    t.join(10)
    server.close()
    assert received.count(b'"event":"tool_call"') == 2
    assert received.index(b'"n":1') < received.index(b'"n":2')


def test_multi_sink_fans_out(tmp_path: Path) -> None:
    a = JsonlFileAuditSink(tmp_path / "a.jsonl", max_bytes=0, backup_count=0)
    b = JsonlFileAuditSink(tmp_path / "b.jsonl", max_bytes=0, backup_count=0)
    multi = MultiAuditSink([a, b])
    for i in range(10):
        multi.emit({"i": i})
    assert multi.flush(timeout=5)
    assert multi.close()
    a, b = read_lines(tmp_path / "a.jsonl"), read_lines(tmp_path / "b.jsonl")
    assert unchained(a) == unchained(b)
    assert len(read_lines(tmp_path / "b.jsonl")) == 10
    assert multi.dropped == 0


def test_invalid_configuration_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="protocol"):
        SyslogAuditSink("127.0.0.1", 514, protocol="quic")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        JsonlFileAuditSink(tmp_path / "x", max_bytes=-1, backup_count=1)
