"""The event loop never stalls: pathological input over real HTTP while a probe times /healthz.

Each input once froze a server for seconds (a quadratic redaction regex, parsing a huge IN
list on the loop, compiling a huge glob, encoding a huge cell, deep nesting). They run one
after another against one real server; a second client probes `/healthz` every 20 ms the
whole time, and its p99 must stay under 100 ms.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastmcp import Client

from tests.server_process import ServerProcess

pytestmark = pytest.mark.anyio

IN_LIST = (
    "SELECT count(*) FROM orders WHERE order_id IN ("
    + ", ".join(str(i) for i in range(3_000))
    + ")"
)  # ~17 KiB: over the 4 KiB threshold, so it is checked in a worker thread, then run

PATHOLOGICAL: list[tuple[str, dict[str, Any]]] = [
    ("query", {"sql": "/* " + "a://b:" * 7_000 + " */ SELECT 1"}),  # redaction, 41 KiB
    ("query", {"sql": "/* " + "a://b:" * 600_000 + " */ SELECT 1"}),  # 3.6 MB: refused, logged
    ("query", {"sql": IN_LIST}),
    ("query", {"sql": IN_LIST + " OR order_id IN (" + IN_LIST[48:] * 9}),  # ~160 KiB: too big
    ("query", {"sql": "SELECT " + "(" * 45 + "1" + ")" * 45}),
    ("query", {"sql": "SELECT " + "CASE WHEN 1=1 THEN " * 60 + "1" + " END" * 60}),
    ("list_tables", {"pattern": "[a-z]*" * 50_000}),
    ("query", {"sql": "SELECT repeat('x', 150000000) AS huge"}),
    ("query", {"sql": "SELECT 1", "params": {"p" * 4_000: "v" * 100_000}}),
    ("describe_table", {"table": "t" * 200_000}),
]


async def _probe(url: str, stop: asyncio.Event, samples: list[float]) -> None:
    async with httpx.AsyncClient() as http:
        while not stop.is_set():
            started = time.perf_counter()
            response = await http.get(f"{url}/healthz", timeout=30)
            samples.append(time.perf_counter() - started)
            assert response.status_code == 200
            await asyncio.sleep(0.02)


async def test_pathological_inputs_never_stall_the_loop(tmp_path: Path, demo_db: Path):
    config = tmp_path / "wellhead.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "sources": {"demo": {"kind": "duckdb", "path": str(demo_db)}},
                "logging": {"arguments": "redacted"},
            }
        )
    )
    server = ServerProcess(config)
    samples: list[float] = []
    outcomes = []
    try:
        stop = asyncio.Event()
        probe = asyncio.create_task(_probe(server.url, stop, samples))
        async with Client(server.mcp_url, timeout=120) as client:
            await asyncio.sleep(0.5)
            for tool, arguments in PATHOLOGICAL:
                result = await client.call_tool(tool, arguments, raise_on_error=False)
                text = result.content[0].text if result.content else ""
                outcomes.append((tool, result.is_error, len(text.encode())))
            await asyncio.sleep(0.3)
        stop.set()
        await probe
    finally:
        server.stop()
    assert len(samples) > 20
    p99 = statistics.quantiles(samples, n=100)[98]
    assert p99 < 0.1, f"/healthz p99 {p99 * 1000:.0f} ms, max {max(samples) * 1000:.0f} ms"
    # Every pathological call got a small, clear answer (errors fit the smallest budget).
    for tool, _is_error, size in outcomes:
        assert size <= 4_096, (tool, size)
