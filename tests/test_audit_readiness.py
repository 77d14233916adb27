"""An unreachable or misconfigured audit receiver, seen by an operator: real `wellhead serve`
processes, a real OTLP receiver, `/readyz` over HTTP, the exit status and stderr."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx
import pytest

from tests.audit_receivers import OtlpReceiver, free_port, make_pki
from tests.server_process import REPO


@pytest.fixture(scope="module")
def small_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("db") / "small.duckdb"
    connection = duckdb.connect(str(path))
    connection.execute("CREATE TABLE t AS SELECT 1 AS n")
    connection.close()
    return path


def serve(config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FASTMCP_CHECK_FOR_UPDATES": "off", "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "wellhead", "serve", "--config", str(config)]
    args += ["--transport", "http", "--port", str(port)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log.open("wb"), env=env)


def readyz(port: int, timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            if response.json().get("status") != "starting":
                return response
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def test_an_unreachable_receiver_makes_readyz_fail_until_it_answers(
    tmp_path: Path, small_db: Path
) -> None:
    receiver = OtlpReceiver(port=free_port())  # not started yet: nothing listens
    config = tmp_path / "wellhead.yaml"
    config.write_text(
        f"sources:\n  db:\n    kind: duckdb\n    path: {small_db}\n"
        f"audit:\n  otlp:\n    endpoint: {receiver.endpoint}\n"
        f"  spool:\n    directory: {tmp_path / 'spool'}\n"
    )
    port = free_port()
    log = tmp_path / "server.log"
    process = serve(config, port, log)
    try:
        response = readyz(port)
        assert response.status_code == 503
        body = response.json()
        assert body["sources"] == {"db": "ok"}
        (state,) = body["audit"].values()
        assert state.startswith("unavailable:") and "refused" in state
        assert f"audit receiver otlp {receiver.endpoint} is unreachable" in log.read_text()
        receiver.start()
        deadline = time.monotonic() + 30
        while (response := readyz(port)).status_code != 200:
            assert time.monotonic() < deadline, response.json()
            time.sleep(0.2)
        assert response.json()["audit"] == {f"otlp {receiver.endpoint}": "ok"}
    finally:
        process.terminate()
        process.wait(20)
        receiver.stop()


def start_fails(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wellhead", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "FASTMCP_CHECK_FOR_UPDATES": "off", "PYTHONPATH": str(REPO)},
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_a_receiver_that_can_never_work_stops_the_start(tmp_path: Path, small_db: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    receiver = OtlpReceiver(pki=pki).start()  # HTTPS, certificate from our test CA
    base = f"sources:\n  db:\n    kind: duckdb\n    path: {small_db}\n"
    spool = f"  spool:\n    directory: {tmp_path / 'spool'}\n"
    try:
        wrong_ca = tmp_path / "wrong-ca.yaml"
        wrong_ca.write_text(
            base + f"audit:\n  otlp:\n    endpoint: {receiver.endpoint}\n"
            f"    ca_file: {pki.other_ca}\n" + spool
        )
        result = start_fails(wrong_ca)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "certificate check failed" in result.stderr

        right = tmp_path / "right-ca.yaml"  # the same receiver, the right CA: it starts
        right.write_text(
            base + f"audit:\n  otlp:\n    endpoint: {receiver.endpoint}\n"
            f"    ca_file: {pki.ca}\n" + spool
        )
        port = free_port()
        process = serve(right, port, tmp_path / "right.log")
        try:
            assert readyz(port).status_code == 200
        finally:
            process.terminate()
            process.wait(20)
    finally:
        receiver.stop()

    missing = tmp_path / "missing.yaml"
    missing.write_text(
        base + "audit:\n  otlp:\n    endpoint: https://localhost:4318/v1/logs\n"
        f"    ca_file: {tmp_path / 'missing-ca.pem'}\n"
    )
    result = start_fails(missing)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "audit TLS files" in result.stderr and "missing-ca.pem" in result.stderr
