"""What quotas cost per call: off, in memory, and in Redis (issue 11 item 4).

    eval "$(bash .ci/redis.sh env)"          # for the redis side (or --redis-url URL)
    python -m bench.bench_quotas [--rounds 30] [--per-round 100]

Wellhead servers in this process, identical but for `quotas`: `off` (the default, no guard
in the chain), `memory` (quotas on, one process), `redis` (quotas in Redis through
`quotas.redis_url`: one Lua script per call and one ZREM when it ends) and `redis-rate` (the
same with no concurrency cap: the script alone). Session state stays in memory on every
side. The limits are set so high that no call is refused (any refusal fails the run): what is
measured is admission itself. Each side calls the trivial `echo` tool
(bench.trivial_plugin) through an in-memory MCP client, in interleaved rounds of
`--per-round` calls (the order rotates every round). Per side: the median over rounds of
CPU per call of the one thread that runs client and server (`time.thread_time`), of wall
time per call (Redis is mostly waiting, which CPU does not show), and the paired per-round
ratios to `off`. Then the in-memory admission alone (MemoryBackend.try_acquire).
Figures, not tests.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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
os.environ.setdefault("FASTMCP_LOG_ENABLED", "false")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import sqlite3  # noqa: E402

from fastmcp import Client  # noqa: E402

from wellhead.app import build_server  # noqa: E402
from wellhead.config import parse_settings  # noqa: E402
from wellhead.guards.quotas import Lease, MemoryBackend, Rule  # noqa: E402
from wellhead.observe.logs import configure_logging  # noqa: E402

GENEROUS = {"rate_per_s": 1e9, "burst": 1_000_000_000, "max_concurrent": 1_000}


def raw_settings(db: Path, quotas: dict[str, Any] | None, redis_url: str | None) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "sources": {"s": {"kind": "sqlite", "path": str(db)}},
        "plugins": ["bench.trivial_plugin:register"],
        "plugin_entry_points": False,
    }
    if quotas is not None:
        raw["quotas"] = {"enabled": True, **GENEROUS, **quotas}
    if redis_url:  # quotas only: session state stays in memory on every side
        raw["quotas"]["redis_url"] = redis_url
    return raw


async def round_of(client: Client, calls: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per call for `calls` sequential calls."""
    gc.collect()
    cpu, wall = time.thread_time(), time.perf_counter()
    for i in range(calls):
        result = await client.call_tool("echo", {"x": i}, raise_on_error=False)
        if result.is_error:
            raise SystemExit(f"a call failed, the figures would be wrong: {result.content}")
    return (
        (time.thread_time() - cpu) / calls * 1e6,
        (time.perf_counter() - wall) / calls * 1e6,
    )


def side_settings(directory: Path, redis_url: str | None) -> dict[str, dict[str, Any]]:
    db = directory / "bench.sqlite"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
    prefix = f"wellhead-bench:{os.urandom(4).hex()}"
    sides = {"off": raw_settings(db, None, None), "memory": raw_settings(db, {}, None)}
    if redis_url:
        sides["redis"] = raw_settings(db, {"key_prefix": prefix}, redis_url)
        rate_only = {"key_prefix": prefix, "max_concurrent": None}
        sides["redis-rate"] = raw_settings(db, rate_only, redis_url)
    else:
        print("redis: skipped (set WELLHEAD_TEST_REDIS_URL or pass --redis-url)")
    return sides


async def interleaved(
    clients: dict[str, Client], rounds: int, per_round: int, clocks: dict[str, Any] | None
) -> dict[str, list[tuple[float, float]]]:
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
    for client in clients.values():  # warm-up: caches, script load, connections
        await round_of(client, per_round)
    names = list(clients)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            before = clocks[name]() if clocks else 0.0
            cpu, wall = await round_of(clients[name], per_round)
            if clocks:  # the server process's event-loop thread, not this one
                cpu = (clocks[name]() - before) / per_round * 1e6
            figures[name].append((cpu, wall))
    return figures


async def run(rounds: int, per_round: int, redis_url: str | None, http: bool) -> None:
    directory = Path(tempfile.mkdtemp())
    sides = side_settings(directory, redis_url)
    async with AsyncExitStack() as stack:
        if http:
            servers = start_servers(directory, sides)
            for server in servers.values():
                stack.callback(server.stop)
            clients = {
                name: await stack.enter_async_context(Client(f"{server.url}/mcp"))
                for name, server in servers.items()
            }
            clocks = {name: server.main_thread_cpu for name, server in servers.items()}
            where = "streamable HTTP, one server process each; CPU of its event-loop thread"
        else:
            clients = {
                name: await stack.enter_async_context(Client(build_server(parse_settings(raw))))
                for name, raw in sides.items()
            }
            clocks = None
            where = "in-memory MCP client; CPU of the one thread running client and server"
        figures = await interleaved(clients, rounds, per_round, clocks)
    print_figures(figures, f"{rounds} rounds x {per_round} calls of echo, {where}")


def start_servers(directory: Path, sides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    import yaml

    from bench._server import ServerSubprocess, free_port

    servers: dict[str, Any] = {}
    try:
        for name, raw in sides.items():
            config = directory / f"{name}.yaml"
            config.write_text(yaml.safe_dump(raw))
            port = free_port()
            command = [sys.executable, "-m", "wellhead", "serve", "--config", str(config)]
            command += ["--transport", "http", "--port", str(port)]
            servers[name] = ServerSubprocess(command, port, directory / f"{name}.log", "/healthz")
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return servers


def print_figures(figures: dict[str, list[tuple[float, float]]], title: str) -> None:
    base = figures["off"]
    print(title)
    print(
        f"{'side':8} {'cpu µs/call':>12} {'wall µs/call':>13} {'cpu ratio':>10} {'wall ratio':>11}"
    )
    for name, rows in figures.items():
        cpu = statistics.median(c for c, _ in rows)
        wall = statistics.median(w for _, w in rows)
        cpu_ratio = statistics.median(c / b[0] for (c, _), b in zip(rows, base, strict=True))
        wall_ratio = statistics.median(w / b[1] for (_, w), b in zip(rows, base, strict=True))
        print(f"{name:10} {cpu:12.1f} {wall:13.1f} {cpu_ratio:10.3f} {wall_ratio:11.3f}")


def admission_alone() -> None:
    backend = MemoryBackend()
    rule = Rule(rate_per_s=1e9, burst=1_000_000_000, max_concurrent=1_000)
    n = 200_000
    started = time.perf_counter()
    for _ in range(n):
        lease = backend.try_acquire("k", rule)
        if isinstance(lease, Lease):
            backend.release_now(lease)
    print(f"memory admission + release alone: {(time.perf_counter() - started) / n * 1e9:.0f} ns")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--redis-url", default=os.environ.get("WELLHEAD_TEST_REDIS_URL"))
    parser.add_argument("--http", action="store_true", help="over HTTP, a process per side")
    args = parser.parse_args()
    configure_logging("WARNING")  # no tool_call lines: the same on every side
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    asyncio.run(run(args.rounds, args.per_round, args.redis_url, args.http))
    admission_alone()
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
