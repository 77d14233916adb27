"""Syslog to a SIEM collector: RFC 5424 messages over UDP, TCP or TLS (RFC 5425).

The MSG is the event's JSON, ASCII-only (so no BOM is needed). UDP: one datagram per
event (an event over 64 KiB cannot be sent and is counted as dropped). TCP (RFC 6587) and
TLS (RFC 5425): octet-counting frames over one connection, reconnected on failure.
Syslog has no acknowledgement: before each send the connection is checked for a close
by the receiver, so a collector that restarts loses nothing; a batch that failed mid-send
is resent whole (at-least-once), but what the network ate after the receiver vanished
without closing cannot be known. OTLP (`otlp.py`) is acknowledged.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from wellhead.observe.audit.fields import syslog_severity
from wellhead.observe.audit.forward import ForwardingSink, misconfigured, unreachable
from wellhead.observe.audit.tls import client_context

_MAX_UDP_PAYLOAD = 65_507
Protocol = Literal["udp", "tcp", "tls"]


def _header_field(value: str, max_len: int) -> str:
    """RFC 5424 header fields are 1..N printable US-ASCII characters (33..126), or '-'."""
    cleaned = "".join(c for c in value if 33 <= ord(c) <= 126)[:max_len]
    return cleaned or "-"


def _timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class SyslogAuditSink(ForwardingSink):
    """RFC 5424 syslog; TLS checks the receiver's certificate against `ca_file` (or the
    system CAs) and its name against `server_name` (default `host`), and presents
    `cert_file`/`key_file` when the receiver asks for a client certificate."""

    ensure_ascii = True
    kind = "syslog"

    def __init__(
        self,
        host: str,
        port: int = 514,
        protocol: Protocol = "udp",
        app_name: str = "wellhead",
        *,
        facility: int = 13,
        hostname: str | None = None,
        connect_timeout: float = 5.0,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        server_name: str | None = None,
        **kw: Any,
    ) -> None:
        if protocol not in ("udp", "tcp", "tls"):
            raise ValueError(f"syslog protocol must be 'udp', 'tcp' or 'tls', not {protocol!r}")
        if not 0 <= facility <= 23:
            raise ValueError("syslog facility must be between 0 and 23")
        self.host, self.port, self.protocol = host, port, protocol
        self.facility = facility
        self.app_name = _header_field(app_name, 48)
        self.hostname = _header_field(hostname or socket.gethostname(), 255)
        self.procid = str(os.getpid())
        self.connect_timeout = connect_timeout
        self.server_name = server_name or host
        self._tls = client_context(ca_file, cert_file, key_file) if protocol == "tls" else None
        self._sock: socket.socket | None = None
        self._addr: Any = None
        super().__init__(**kw)

    def describe(self) -> str:
        return f"syslog+{self.protocol}://{self.host}:{self.port}"

    def _encode(self, line: str, event: Mapping[str, Any]) -> bytes:
        pri = self.facility * 8 + syslog_severity(event)
        msgid = _header_field(str(event.get("event") or "audit"), 32)
        header = f"<{pri}>1 {_timestamp()} {self.hostname} {self.app_name} {self.procid} {msgid} -"
        msg = f"{header} {line}".encode("ascii")
        if self.protocol != "udp":
            return str(len(msg)).encode("ascii") + b" " + msg
        return msg

    def probe(self, timeout: float = 5.0) -> None:
        """Connect (and for TLS, complete the handshake) once, in the forwarder's place."""
        what = self.describe()
        try:
            sock = self._open(timeout)
        except ssl.SSLCertVerificationError as exc:
            raise misconfigured(what, f"certificate check failed: {exc.verify_message}") from None
        except ssl.SSLError as exc:
            raise misconfigured(what, f"TLS handshake failed: {exc}") from None
        except socket.gaierror as exc:
            raise misconfigured(what, f"host name does not resolve: {exc}") from None
        except OSError as exc:
            raise unreachable(what, exc) from None
        sock.close()

    def _open(self, timeout: float) -> socket.socket:
        if self.protocol == "udp":
            family, kind, proto, _, addr = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_DGRAM
            )[0]
            self._addr = addr
            return socket.socket(family, kind, proto)
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self.server_name)
                _refused_after_handshake(sock)
        except BaseException:
            sock.close()
            raise
        return sock

    def _connect(self) -> socket.socket:
        sock = self._sock
        if sock is not None and self.protocol != "udp" and _peer_closed(sock, self.connect_timeout):
            self._disconnect()
        if self._sock is None:
            self._sock = self._open(self.connect_timeout)
        return self._sock

    def _send(self, batch: Sequence[bytes]) -> int:
        sock = self._connect()
        if self.protocol != "udp":
            sock.sendall(b"".join(batch))
            return 0
        too_big = 0
        for datagram in batch:
            if len(datagram) > _MAX_UDP_PAYLOAD:
                too_big += 1
                continue
            sock.sendto(datagram, self._addr)
        return too_big

    def _disconnect(self) -> None:
        if self._sock is not None:
            sock, self._sock = self._sock, None
            sock.close()


def _refused_after_handshake(sock: socket.socket, wait: float = 0.2) -> None:
    """Raise if the receiver ends the session just after the handshake.

    With TLS 1.3 a server checks the client certificate after the client considers the
    handshake done: a missing or untrusted one shows up as an alert a moment later, and
    events written meanwhile would be lost. A connection is made rarely, so it waits a bit.
    """
    readable, _, _ = select.select([sock], [], [], wait)
    if not readable:
        return
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        data = sock.recv(1024)
    except (BlockingIOError, ssl.SSLWantReadError):
        return
    except ssl.SSLError as exc:
        raise ssl.SSLError(f"the receiver refused the TLS session: {exc.reason or exc}") from None
    finally:
        sock.settimeout(timeout)
    if data == b"":
        raise ssl.SSLError("the receiver closed the TLS session right after the handshake")


def _peer_closed(sock: socket.socket, timeout: float) -> bool:
    """True if the receiver closed the connection (or reset it) since the last send.

    A syslog receiver never writes back, so anything readable is a close: seen here, the
    next batch goes to a new connection instead of into a socket the peer no longer reads.
    """
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        sock.setblocking(False)
        try:
            return sock.recv(1024) == b""
        finally:
            sock.settimeout(timeout)  # a receiver that stops reading fails the send
    except (BlockingIOError, ssl.SSLWantReadError):
        return False
    except (OSError, ValueError):
        return True
