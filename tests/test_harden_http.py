"""Slow and idle clients against a real `wellhead serve --transport http`, over raw sockets.

Each slowloris variant must be closed (with a 408 where a response is still possible) once
`server.header_timeout_s` / `server.body_timeout_s` / `server.keep_alive_s` pass, while
/healthz keeps answering; a client within its deadlines is served; connections above
`server.max_connections` are answered 503 instead of queueing without bound. And what a POST
gets back: JSON for a call that sends no notification, an event stream for one that reports
progress (docs/deployment.md, "What a POST gets back").
"""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server_process import ServerProcess

HEADER_TIMEOUT = 1.5
BODY_TIMEOUT = 1.5
KEEP_ALIVE = 1.0
MAX_CONNECTIONS = 40
SLACK = 3.0  # the server checks deadlines on its event loop; this bounds "soon after"


def write_config(tmp_path: Path) -> Path:
    db = tmp_path / "tiny.sqlite"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE t (x INTEGER)")
        connection.execute("INSERT INTO t VALUES (1)")
    config = tmp_path / "wellhead.yaml"
    config.write_text(
        f"sources:\n  tiny:\n    kind: sqlite\n    path: {db}\n"
        "cursor:\n  secret: harden-http-secret-0123456789abcdef\n"
        "plugins: [wellhead.plugins.conformance:register, tests.plugins.header_param]\n"
        "server:\n"
        "  stateless: true\n"
        f"  header_timeout_s: {HEADER_TIMEOUT}\n"
        f"  body_timeout_s: {BODY_TIMEOUT}\n"
        f"  keep_alive_s: {KEEP_ALIVE}\n"
        f"  max_connections: {MAX_CONNECTIONS}\n"
    )
    return config


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(write_config(tmp_path_factory.mktemp("harden-http")))
    yield process
    process.stop()


def connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=HEADER_TIMEOUT + SLACK)
    return sock


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and when it closed (monotonic)."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        except TimeoutError:
            raise AssertionError(f"server did not close the connection; got {received!r}") from None
        if not chunk:
            break
        received += chunk
    return received, time.monotonic()


def assert_closed_after(sock: socket.socket, started: float, timeout: float) -> bytes:
    received, closed = read_until_closed(sock)
    elapsed = closed - started
    assert elapsed >= timeout * 0.8, f"closed after {elapsed:.2f} s, before the {timeout} s bound"
    assert elapsed < timeout + SLACK, f"held {elapsed:.2f} s"
    return received


def healthz_ok(server: ServerProcess) -> None:
    response = httpx.get(f"{server.url}/healthz", timeout=2)
    assert response.status_code == 200 and response.json() == {"status": "ok"}


HOST = b"Host: 127.0.0.1\r\n"


def read_response(sock: socket.socket) -> bytes:
    """One whole response (headers and a Content-Length body) from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_no_bytes_at_all_is_closed_with_408(server: ServerProcess) -> None:
    sock = connect(server)
    started = time.monotonic()
    received = assert_closed_after(sock, started, HEADER_TIMEOUT)
    assert received.startswith(b"HTTP/1.1 408 ")
    assert b"request headers not complete within 1.5 s" in received
    healthz_ok(server)


def test_partial_request_line_is_closed(server: ServerProcess) -> None:
    sock = connect(server)
    started = time.monotonic()
    sock.sendall(b"POST /mc")
    received = assert_closed_after(sock, started, HEADER_TIMEOUT)
    assert received.startswith(b"HTTP/1.1 408 ")


def test_headers_trickled_one_byte_at_a_time_are_closed(server: ServerProcess) -> None:
    """Bytes keep arriving, so an idle timeout never fires; the header deadline does."""
    sock = connect(server)
    request = b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-Slow: " + b"a" * 200 + b"\r\n\r\n"
    started = time.monotonic()
    sent = 0
    closed_while_sending = False
    for byte in request:
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            closed_while_sending = True
            break
        sent += 1
        if time.monotonic() - started > HEADER_TIMEOUT + SLACK:
            break
        time.sleep(0.5 if sent < 3 else 0.25)  # the brief's one byte per second, compressed
    if not closed_while_sending:
        received = assert_closed_after(sock, started, HEADER_TIMEOUT)
        assert received.startswith(b"HTTP/1.1 408 ")
    assert sent < len(request), "the whole trickled request was accepted"
    healthz_ok(server)


def test_body_never_sent_is_closed_with_408(server: ServerProcess) -> None:
    sock = connect(server)
    sock.sendall(
        b"POST /mcp HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"
        b"Accept: application/json, text/event-stream\r\nContent-Length: 500\r\n\r\n{"
    )
    started = time.monotonic()
    received = assert_closed_after(sock, started, BODY_TIMEOUT)
    assert received.startswith(b"HTTP/1.1 408 ")
    assert b"request body not complete within 1.5 s" in received


def test_second_request_trickled_on_a_kept_alive_connection_is_closed(
    server: ServerProcess,
) -> None:
    """The header clock restarts for each request, not only for the connection's first."""
    sock = connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\n" + HOST + b"\r\n")
    first = read_response(sock)
    assert first.startswith(b"HTTP/1.1 200 ")
    started = time.monotonic()
    for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: aaaaaaaaaaaa":
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        time.sleep(0.2)
        if time.monotonic() - started > HEADER_TIMEOUT + SLACK:
            break
    received, closed = read_until_closed(sock)
    assert closed - started < HEADER_TIMEOUT + SLACK
    assert received == b"" or received.startswith(b"HTTP/1.1 408 ")


def test_idle_kept_alive_connection_is_closed_after_keep_alive(server: ServerProcess) -> None:
    sock = connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\n" + HOST + b"\r\n")
    assert read_response(sock).startswith(b"HTTP/1.1 200 ")
    started = time.monotonic()
    received = assert_closed_after(sock, started, KEEP_ALIVE)
    assert received == b""


def test_many_idle_connections_are_closed_and_healthz_stays_responsive(
    server: ServerProcess,
) -> None:
    idle = [connect(server) for _ in range(30)]
    started = time.monotonic()
    # While they are held, the server still answers.
    for _ in range(5):
        healthz_ok(server)
        time.sleep(0.1)
    results: list[bytes] = []
    lock = threading.Lock()

    def drain(sock: socket.socket) -> None:
        received, _ = read_until_closed(sock)
        with lock:
            results.append(received)

    threads = [threading.Thread(target=drain, args=(sock,)) for sock in idle]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HEADER_TIMEOUT + SLACK)
    assert time.monotonic() - started < HEADER_TIMEOUT + SLACK + 1
    assert len(results) == 30
    assert all(r.startswith(b"HTTP/1.1 408 ") for r in results)
    healthz_ok(server)


def test_a_slow_but_timely_client_is_served(server: ServerProcess) -> None:
    """The bound is not over-eager: headers in pieces within the deadline get an answer."""
    sock = connect(server)
    for piece in (b"GET /heal", b"thz HTTP/1.1\r\n", HOST, b"\r\n"):
        sock.sendall(piece)
        time.sleep(HEADER_TIMEOUT / 8)
    assert read_response(sock).startswith(b"HTTP/1.1 200 ")
    sock.close()


def test_connections_above_max_connections_get_503_until_they_go(server: ServerProcess) -> None:
    held = [connect(server) for _ in range(MAX_CONNECTIONS)]
    time.sleep(0.2)  # let the server accept them all
    refused = httpx.get(f"{server.url}/healthz", timeout=2)
    assert refused.status_code == 503
    for sock in held:
        sock.close()
    deadline = time.monotonic() + SLACK
    while time.monotonic() < deadline:
        if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
            break
        time.sleep(0.1)
    healthz_ok(server)


def test_timeouts_are_logged_without_flooding(server: ServerProcess) -> None:
    lines = [
        line
        for line in server.log_lines()
        if str(line.get("message", "")).startswith("closed a connection:")
    ]
    assert lines, "no slow client was reported"
    assert {line["limit"] for line in lines} <= {"server.header_timeout_s", "server.body_timeout_s"}
    # Dozens of connections were closed by now; the log says so a few times, with counts.
    assert len(lines) < 20


def modern_call(
    server: ServerProcess,
    tool: str,
    meta: dict | None = None,
    arguments: dict | None = None,
    headers: dict | None = None,
) -> httpx.Response:
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {
            "name": tool,
            "arguments": arguments or {},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                **(meta or {}),
            },
        },
    }
    headers = {
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": tool,
        **(headers or {}),
    }
    return httpx.post(server.mcp_url, json=body, headers=headers, timeout=10)


def test_a_call_without_notifications_is_answered_as_json(server: ServerProcess) -> None:
    response = modern_call(server, "test_simple_text")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["result"]["isError"] is False


def test_a_call_that_reports_progress_streams_it_before_the_result(server: ServerProcess) -> None:
    response = modern_call(server, "test_tool_with_progress", {"progressToken": "p-1"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    text = response.text
    assert text.count('"method":"notifications/progress"') == 3
    assert text.index("notifications/progress") < text.index('"id":7')
    assert "Tool with progress executed successfully" in text


def test_mcp_param_headers_are_still_validated_against_the_body(server: ServerProcess) -> None:
    """wellhead looks tool schemas up instead of listing every tool per call: the SDK must
    still see the schemas that declare x-mcp-header parameters."""
    matching = modern_call(
        server, "regional", arguments={"region": "eu"}, headers={"Mcp-Param-Region": "eu"}
    )
    assert matching.status_code == 200 and matching.json()["result"]["isError"] is False
    mismatched = modern_call(
        server, "regional", arguments={"region": "eu"}, headers={"Mcp-Param-Region": "us"}
    )
    assert mismatched.status_code == 400
    assert "Mcp-Param-Region" in mismatched.json()["error"]["message"]
    missing = modern_call(server, "regional", arguments={"region": "eu"})
    assert missing.status_code == 400
