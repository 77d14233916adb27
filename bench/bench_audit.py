"""What the audit trail costs a tool call (issue 14), against the same server without audit.

    python bench/bench_audit.py [--rounds 30] [--per-round 100]

One in-memory server per side, each with the trivial `echo` tool (`bench.trivial_plugin`),
every guard, JSON `tool_call` lines to /dev/null:

- `none`: no audit.
- `jsonl`: the hash-chained JSONL file.
- `otlp`: OTLP/HTTP to a live receiver (the test receiver, decoding protobuf).
- `otlp-down`: OTLP to a port where nothing listens: every event goes to the spool.
- `tls-syslog`: syslog over TLS to a live receiver with a client certificate.

Sides run in interleaved rounds (order rotated each round). Per side it prints the median
over rounds of two figures per call: the CPU of the thread that runs client and server
(`time.thread_time`: the hot path, what a call pays), and the CPU of the whole process
(`time.process_time`: with the writer and forwarder threads, what the machine pays); and the
ratio of each median to `none`'s. Figures, not tests.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

os.environ.setdefault("FASTMCP_CHECK_FOR_UPDATES", "off")
os.environ.setdefault("FASTMCP_SHOW_SERVER_BANNER", "false")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402
from fastmcp import Client  # noqa: E402

from tests.audit_receivers import OtlpReceiver, TlsSyslogReceiver, free_port, make_pki  # noqa: E402
from wellhead.app import build_server  # noqa: E402
from wellhead.config import parse_settings  # noqa: E402
from wellhead.observe.logs import configure_logging  # noqa: E402


def settings(db: Path, audit: dict[str, Any] | None) -> Any:
    raw: dict[str, Any] = {
        "sources": {"db": {"kind": "duckdb", "path": str(db)}},
        "plugins": ["bench.trivial_plugin:register"],
        "cursor": {"secret": "bench-audit-secret-0123456789abcdef"},
    }
    if audit:
        raw["audit"] = audit
    return parse_settings(raw)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--per-round", type=int, default=100)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    configure_logging("INFO", stream=open(os.devnull, "w"))  # noqa: SIM115, ASYNC230
    logging.getLogger("wellhead.audit").setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    pki = make_pki(work / "pki")
    otlp = OtlpReceiver().start()
    syslog = TlsSyslogReceiver(pki, require_client_cert=True).start()
    spool = {"directory": str(work / "spool")}
    sides: dict[str, Any] = {
        "none": None,
        "jsonl": {"path": str(work / "audit.jsonl")},
        "otlp": {"otlp": {"endpoint": otlp.endpoint}, "spool": {"directory": str(work / "s1")}},
        "otlp-down": {
            "otlp": {"endpoint": f"http://127.0.0.1:{free_port()}/v1/logs"},
            "spool": spool,
        },
        "tls-syslog": {
            "syslog": {
                "host": "localhost",
                "port": syslog.port,
                "protocol": "tls",
                "ca_file": str(pki.ca),
                "cert_file": str(pki.client_cert),
                "key_file": str(pki.client_key),
            },
            "spool": {"directory": str(work / "s2")},
        },
    }
    thread_cpu: dict[str, list[float]] = {name: [] for name in sides}
    process_cpu: dict[str, list[float]] = {name: [] for name in sides}
    async with AsyncExitStack() as stack:
        clients = {}
        for name, audit in sides.items():
            db = work / f"{name}.duckdb"  # one file per server: DuckDB opens a file once
            connection = duckdb.connect(str(db))
            connection.execute("CREATE TABLE t AS SELECT 1 AS n")
            connection.close()
            client = Client(build_server(settings(db, audit)))
            clients[name] = await stack.enter_async_context(client)
            for _ in range(20):  # warm-up
                await clients[name].call_tool("echo", {"x": 1})
        names = list(sides)
        for round_ in range(args.rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                client = clients[name]
                t0, p0 = time.thread_time(), time.process_time()
                for i in range(args.per_round):
                    await client.call_tool("echo", {"x": i})
                thread_cpu[name].append((time.thread_time() - t0) / args.per_round)
                process_cpu[name].append((time.process_time() - p0) / args.per_round)
    otlp.stop()
    syslog.stop()
    base_t = statistics.median(thread_cpu["none"])
    base_p = statistics.median(process_cpu["none"])
    print(f"{args.rounds} rounds x {args.per_round} calls per side")
    print(f"{'side':12} {'call CPU µs':>12} {'ratio':>6} {'process CPU µs':>15} {'ratio':>6}")
    for name in sides:
        t = statistics.median(thread_cpu[name])
        p = statistics.median(process_cpu[name])
        print(f"{name:12} {t * 1e6:12.0f} {t / base_t:6.3f} {p * 1e6:15.0f} {p / base_p:6.3f}")
    print(f"events received: otlp {len(otlp.records)}, tls-syslog {len(syslog.messages)}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    asyncio.run(main())
