"""The HTTP server under the ASGI app: uvicorn, bounded against slow clients, one or N workers.

uvicorn bounds idle keep-alive connections but not a client that opens a connection and then
never finishes its request: with no header timeout, a few hundred such sockets (slowloris) hold
the server's file descriptors forever. `HeaderDeadline` closes a connection whose request
headers are not complete within `server.header_timeout_s`, or whose declared body has not
arrived within `server.body_timeout_s` after them, with a 408. `server.max_connections` caps
concurrent connections (uvicorn answers 503 above it) and `server.keep_alive_s` bounds idle
ones. A reverse proxy in front (docs/deployment.md) should enforce the same.

`--workers N` runs N copies of the single-worker server, each its own process, accepting on
one listening socket the parent binds; the parent only supervises and forwards SIGTERM so that
every worker drains. Workers share nothing in memory, so it needs state and cursors that work
across processes (Redis, a fixed cursor secret) and the stateless protocol: `check_workers`
refuses anything else with the key to set.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from wellhead.config import Settings
from wellhead.errors import ConfigError

log = logging.getLogger("wellhead.serve")

WORKER_FD_ENV = "WELLHEAD_WORKER_FD"
WORKER_INDEX_ENV = "WELLHEAD_WORKER_INDEX"


class _Throttle:
    """At most one log line per `interval` seconds, with the count of those it held back."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self.last = float("-inf")
        self.held = 0

    def log(self, message: str, **extra: Any) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            self.held += 1
            return
        extra["suppressed_since_last"] = self.held
        self.last, self.held = now, 0
        log.info(message, extra=extra)


def _timeout_response(message: str) -> bytes:
    body = message.encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class HeaderDeadline:
    """Mixin for a uvicorn HTTP protocol: a deadline for each request's headers and body.

    The header clock starts when the connection opens, and again at the first byte of each
    further request on a kept-alive connection (an idle one is uvicorn's keep-alive timeout's
    business). It stops once uvicorn has parsed the headers, which it shows by starting a new
    request cycle. A request that declares a body must then deliver it within the body timeout.
    """

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    throttle: _Throttle = _Throttle()

    # Provided by the uvicorn protocol this is mixed into.
    cycle: Any
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    client: Any

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._seen_cycle: Any = None
        self._awaiting_headers = True
        self._body_timer: asyncio.TimerHandle | None = None
        self._header_timer: asyncio.TimerHandle | None = self.loop.call_later(
            self.header_timeout, self._headers_late
        )

    def data_received(self, data: bytes) -> None:
        if self._awaiting_headers and self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)
        super().data_received(data)  # type: ignore[misc]
        cycle = self.cycle
        if cycle is not None and cycle is not self._seen_cycle:
            self._headers_complete(cycle)
        if self._body_timer is not None and not self._seen_cycle.more_body:
            self._body_timer.cancel()
            self._body_timer = None

    def _headers_complete(self, cycle: Any) -> None:
        self._seen_cycle = cycle
        self._awaiting_headers = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if cycle.more_body and self._body_timer is None:
            self._body_timer = self.loop.call_later(self.body_timeout, self._body_late)

    def on_response_complete(self) -> None:
        done = self.cycle
        super().on_response_complete()  # type: ignore[misc]
        if self.cycle is not done:  # a pipelined request was parsed meanwhile
            self._headers_complete(self.cycle)
        elif not self.transport.is_closing():
            self._awaiting_headers = True  # the clock restarts at the next request's first byte

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)  # type: ignore[misc]

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self._awaiting_headers or self.transport.is_closing():
            return
        message = f"request headers not complete within {self.header_timeout:g} s"
        self.throttle.log(
            "closed a connection: " + message,
            limit="server.header_timeout_s",
            client=_peer(self.client),
        )
        self.transport.write(_timeout_response(message + "\n"))
        self.transport.close()

    def _body_late(self) -> None:
        self._body_timer = None
        cycle = self._seen_cycle
        if cycle is None or not cycle.more_body or self.transport.is_closing():
            return
        message = f"request body not complete within {self.body_timeout:g} s"
        self.throttle.log(
            "closed a connection: " + message,
            limit="server.body_timeout_s",
            client=_peer(self.client),
        )
        if not cycle.response_started:
            self.transport.write(_timeout_response(message + "\n"))
        self.transport.close()


def _peer(client: Any) -> str | None:
    return f"{client[0]}:{client[1]}" if client else None


def protocol_class(header_timeout: float, body_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with the deadlines above (one class per server)."""
    return type(
        "WellheadHTTPProtocol",
        (HeaderDeadline, HttpToolsProtocol),
        {
            "header_timeout": header_timeout,
            "body_timeout": body_timeout,
            "throttle": _Throttle(),
        },
    )


GIL_SWITCH_INTERVAL_S = 0.001
"""How long a worker thread (parsing a long statement, converting a page) may hold the GIL
before the event loop gets it back. CPython's default, 5 ms, is paid at every hand-over an
HTTP request makes, so a busy thread stretched a /healthz answer past 150 ms."""


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    server = settings.server
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    return uvicorn.Config(
        app,
        host=server.host,
        port=server.port,
        log_config=None,
        lifespan="on",
        loop="auto",  # uvloop where installed (pinned on Linux and macOS)
        http=protocol_class(server.header_timeout_s, server.body_timeout_s),
        # A connection above the cap is still accepted, and answered 503 at its first request.
        limit_concurrency=server.max_connections,
        backlog=min(server.max_connections, 2048),
        timeout_keep_alive=server.keep_alive_s,  # type: ignore[arg-type]  # a float works
        timeout_graceful_shutdown=int(server.shutdown_grace_s),
    )


class DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT: report not-ready at once, then uvicorn drains in-flight calls."""

    def __init__(self, config: uvicorn.Config, runtime: Any) -> None:
        super().__init__(config)
        self.runtime = runtime

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.runtime.draining = True
        log.info("draining: no new connections, finishing in-flight calls", extra={"signal": sig})
        super().handle_exit(sig, frame)
        # A drained shutdown is a clean exit (0), not death by the signal uvicorn would
        # otherwise raise again once it is done.
        self._captured_signals.clear()


def check_workers(settings: Settings) -> None:
    """Several workers share nothing in memory: refuse what would break across them."""
    server = settings.server
    if server.workers <= 1:
        return
    problems = []
    if server.transport != "http":
        problems.append(
            f"server.transport is {server.transport!r}: only streamable HTTP ('http') runs on "
            "several workers (stdio is one process; SSE keeps a stream on one worker)"
        )
    if not server.stateless:
        problems.append(
            "server.stateless is false: handshake-era sessions live in one worker, so set "
            "server.stateless: true (--stateless), or run one worker per replica behind a "
            "load balancer with session affinity"
        )
    if settings.state.backend != "redis":
        problems.append(
            "state.backend is 'memory': stored results and session state would exist only in "
            "the worker that made them; set state.backend: redis and state.redis_url"
        )
    if not settings.cursor.secret:
        problems.append(
            "cursor.secret is not set: each worker would sign cursors with its own random key; "
            "set cursor.secret (the same value everywhere)"
        )
    if settings.tasks.enabled and settings.tasks.backend != "redis":
        problems.append(
            "tasks.backend is 'memory': a task would exist only in the worker that made it; "
            "set tasks.backend: redis and tasks.redis_url"
        )
    if problems:
        raise ConfigError(
            f"server.workers is {server.workers}, which needs: " + "; ".join(problems)
        )


def inherited_socket() -> socket.socket | None:
    """The listening socket a supervising parent passed to this worker, if any."""
    fd = os.environ.pop(WORKER_FD_ENV, None)
    if fd is None:
        return None
    return socket.socket(fileno=int(fd))


def bind_socket(settings: Settings) -> socket.socket:
    server = settings.server
    family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((server.host, server.port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {server.host}:{server.port} (server.host/server.port): "
            f"{exc.strerror}"
        ) from None
    sock.listen(min(server.max_connections, 2048))
    sock.set_inheritable(True)
    return sock


def supervise(settings: Settings, argv: list[str]) -> int:
    """Run `server.workers` copies of this command, each serving the socket bound here.

    SIGTERM/SIGINT go to every worker, which drain as one would; a worker that dies is
    replaced (one that dies within a second of starting stops the whole server instead,
    since its replacements would fail the same way).
    """
    server = settings.server
    sock = bind_socket(settings)
    env = {**os.environ, WORKER_FD_ENV: str(sock.fileno())}
    shared_exports = None
    if settings.exports.enabled and not settings.exports.directory:
        # One export store for all workers: a link made by one is served by any of them.
        from wellhead.exports import SHARED_DIR_ENV

        shared_exports = tempfile.mkdtemp(prefix="wellhead-exports-")
        env[SHARED_DIR_ENV] = shared_exports
    command = [sys.executable, "-m", "wellhead", *argv]
    stopping = threading.Event()

    def start(index: int) -> tuple[subprocess.Popen[bytes], float]:
        child = subprocess.Popen(
            command, env={**env, WORKER_INDEX_ENV: str(index)}, pass_fds=(sock.fileno(),)
        )
        log.info("worker started", extra={"worker": index, "worker_pid": child.pid})
        return child, time.monotonic()

    def forward(signum: int, _: Any) -> None:
        stopping.set()
        for child, _started in workers:
            if child.poll() is None:
                child.send_signal(signum)

    workers = [start(index) for index in range(server.workers)]
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    log.info(
        "serving MCP over http on http://%s:%s%s with %d workers",
        server.host,
        server.port,
        server.path,
        server.workers,
        extra={"transport": "http", "stateless": server.stateless, "workers": server.workers},
    )
    status = 0
    while not stopping.wait(0.2):
        for index, (child, started) in enumerate(workers):
            code = child.poll()
            if code is None:
                continue
            if time.monotonic() - started < 1.0:
                log.error("worker %d exited at startup (code %s); stopping", index, code, extra={})
                status = code or 1
                forward(signal.SIGTERM, None)
                break
            log.warning("worker %d exited (code %s); starting another", index, code)
            workers[index] = start(index)
    deadline = time.monotonic() + server.shutdown_grace_s + 5
    for child, _started in workers:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("worker %d did not drain in time; killing it", child.pid)
            child.kill()
            child.wait()
    sock.close()
    if shared_exports is not None:
        shutil.rmtree(shared_exports, ignore_errors=True)
    log.info("all workers stopped")
    return status
