"""A server in its own process for the HTTP benchmarks: start, wait until it answers, stop.

Shared by bench_query.py and bench_chassis.py. (tests/server_process.py is the tests' own
richer version; a benchmark does not import the test package.)
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerSubprocess:
    """`args` serving HTTP on `port`; ready once `ready_path` answers below 500 (so a
    `/readyz` still at 503 is waited for). stderr goes to `log`."""

    def __init__(self, args: list[str], port: int, log: Path, ready_path: str) -> None:
        env = {
            **os.environ,
            # `bench.*` plugins must import in the child, whatever its working directory.
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "FASTMCP_CHECK_FOR_UPDATES": "off",
        }
        self.port = port
        self.log = log
        self.process = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb")
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + ready_path, timeout=1).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server on port {port} did not become ready")

    def main_thread_cpu(self) -> float:
        """CPU seconds of the server's main thread (the event loop), from schedstat's ns."""
        fields = Path(f"/proc/{self.process.pid}/schedstat").read_text().split()
        return int(fields[0]) / 1e9

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
