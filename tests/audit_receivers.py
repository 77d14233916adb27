"""Real audit receivers for tests: a TLS syslog server (the standard library's ssl module)
and an OTLP/HTTP logs receiver decoding the protobuf payloads, plus certificates made here.

Both can be stopped and started again on the same port, as a collector restarting would.
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

# -- certificates -----------------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here: verification against it must fail


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _ca(common: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common: str,
    usage: x509.ObjectIdentifier,
    names: list[x509.GeneralName],
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    """A CA, a server certificate for localhost/127.0.0.1, a client certificate, another CA."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("wellhead test CA")
    _, other = _ca("some other CA")
    server_key, server_cert = _leaf(
        ca_key,
        ca_cert,
        "localhost",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client_key, client_cert = _leaf(
        ca_key, ca_cert, "wellhead-audit", ExtendedKeyUsageOID.CLIENT_AUTH, []
    )
    pem = serialization.Encoding.PEM
    pki = Pki(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        other_ca=directory / "other-ca.pem",
    )
    pki.ca.write_bytes(ca_cert.public_bytes(pem))
    pki.other_ca.write_bytes(other.public_bytes(pem))
    pki.server_cert.write_bytes(server_cert.public_bytes(pem))
    pki.client_cert.write_bytes(client_cert.public_bytes(pem))
    _write_key(server_key, pki.server_key)
    _write_key(client_key, pki.client_key)
    return pki


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# -- TLS syslog (RFC 5425) --------------------------------------------------------------------


class TlsSyslogReceiver:
    """Accepts TLS connections, splits RFC 5425 octet-counted frames, keeps the messages.

    `stop()` is a collector going away gracefully: it stops listening, half-closes every
    connection (so the sender sees the close) and reads what is still in flight.
    """

    def __init__(self, pki: Pki, port: int | None = None, require_client_cert: bool = False):
        self.pki = pki
        self.port = port or free_port()
        self.require_client_cert = require_client_cert
        self.messages: list[bytes] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._conns: list[ssl.SSLSocket] = []
        self._running = False

    def start(self) -> TlsSyslogReceiver:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.pki.server_cert, self.pki.server_key)
        if self.require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.pki.ca)
        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        listener.settimeout(0.1)
        self._listener, self._context, self._running = listener, context, True
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads = [thread]
        return self

    def _accept(self) -> None:
        assert self._listener is not None
        while self._running:
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                raw.settimeout(5)
                conn = self._context.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError):
                raw.close()
                continue
            with self._lock:
                self.connections += 1
                self._conns.append(conn)
            thread = threading.Thread(target=self._read, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _read(self, conn: ssl.SSLSocket) -> None:
        buffer = b""
        conn.settimeout(None)
        try:
            while True:
                try:
                    chunk = conn.recv(65536)
                except (OSError, ssl.SSLError):
                    break
                if not chunk:
                    break
                buffer += chunk
                while True:
                    length, space, rest = buffer.partition(b" ")
                    if not space or not length.isdigit() or len(rest) < int(length):
                        break
                    size = int(length)
                    with self._lock:
                        self.messages.append(rest[:size])
                    buffer = rest[size:]
        finally:
            conn.close()

    def stop(self) -> None:
        self._running = False
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_WR)  # the sender sees the close; we read on
            except OSError:
                pass
        self._threads[0].join(10)  # readers end when their sender hangs up

    def join(self, timeout: float = 10) -> None:
        """Wait for every connection to be closed by its sender (all in flight read)."""
        for thread in self._threads:
            thread.join(timeout)

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            messages = list(self.messages)
        out = []
        for message in messages:
            # <PRI>1 TS HOST APP PROCID MSGID SD MSG: the JSON event follows the seventh space
            out.append(json.loads(message.split(b" ", 7)[7]))
        return out


# -- OTLP/HTTP logs ---------------------------------------------------------------------------


def any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    return getattr(value, kind)


class OtlpReceiver:
    """An OTLP/HTTP logs endpoint: decodes each ExportLogsServiceRequest, keeps the records.

    `status` makes it answer with another HTTP status (a collector refusing or overloaded).
    """

    def __init__(self, port: int | None = None, pki: Pki | None = None) -> None:
        self.port = port or free_port()
        self.pki = pki  # serve HTTPS with the server certificate
        self.records: list[Any] = []
        self.resources: list[dict[str, Any]] = []
        self.requests = 0
        self.status = 200
        self.rejected = 0  # partial_success.rejected_log_records to report
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        if self.pki is not None:
            return f"https://localhost:{self.port}/v1/logs"
        return f"http://127.0.0.1:{self.port}/v1/logs"

    def start(self) -> OtlpReceiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.status
                response = b""
                if self.path != "/v1/logs":
                    status = 404
                elif self.headers.get("Content-Type") != "application/x-protobuf":
                    status = 415
                elif status == 200:
                    request = ExportLogsServiceRequest()
                    request.ParseFromString(body)
                    with receiver._lock:
                        receiver.requests += 1
                        for resource_logs in request.resource_logs:
                            attrs = {
                                kv.key: any_value(kv.value)
                                for kv in resource_logs.resource.attributes
                            }
                            for scope_logs in resource_logs.scope_logs:
                                for record in scope_logs.log_records:
                                    receiver.records.append(record)
                                    receiver.resources.append(attrs)
                    reply = ExportLogsServiceResponse()
                    if receiver.rejected:
                        reply.partial_success.rejected_log_records = receiver.rejected
                        reply.partial_success.error_message = "test rejects some"
                    response = reply.SerializeToString()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(response)))
                self.end_headers()
                self.wfile.write(response)

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        if self.pki is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.pki.server_cert, self.pki.server_key)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [any_value(record.body) for record in self.records]
