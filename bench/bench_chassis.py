"""Overhead of wellhead's full chassis against bare FastMCP on a trivial tool (issue 4).

    python bench/bench_chassis.py [--calls 2000] [--rounds 20] [--http] [--http-calls 600]
                                  [--profile] [--log-file PATH]

Two servers expose the same `async def echo(x: int) -> int`: a bare `FastMCP`, and wellhead
(`build_server`, a tiny DuckDB source, every guard, JSON logs, metrics, watchdog) with the
tool loaded as the plugin `bench.trivial_plugin`. Both are driven by real MCP clients, in
one run, in interleaved rounds (the order flips every round) so drift and warm-up hit both
alike. Prints per-call latency (mean, median, p95) and the ratio wellhead/bare; the target
is at most 1.05. `--http` repeats it over streamable HTTP against two server subprocesses.
`--profile` prints cProfile's top costs of wellhead calls (in memory). Figures, not tests.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import logging
import os
import pstats
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

os.environ.setdefault("FASTMCP_CHECK_FOR_UPDATES", "off")
os.environ.setdefault("FASTMCP_SHOW_SERVER_BANNER", "false")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `bench.trivial_plugin` must import when run as a script
    sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402
import fastmcp  # noqa: E402
import httpx  # noqa: E402
from fastmcp import Client, FastMCP  # noqa: E402

from wellhead.guards.chain import GuardChain  # noqa: E402

PLUGIN = "bench.trivial_plugin"
TARGET = 1.05


def bare_server(
    middleware: list[Any] | None = None,
    *,
    mount: bool = False,
    same_tools: Path | None = None,
    dereference_once: bool = False,
) -> FastMCP:
    """Bare FastMCP with `echo`; optionally some of wellhead's guards, or echo mounted.

    `same_tools` (a directory for a tiny database) also registers wellhead's own tools
    (query, list_tables, describe_table, read_more) with no guard at all: MCP clients list
    tools before every call, so a fair baseline for the chassis lists the same tools."""
    from bench.trivial_plugin import echo, plugin_server

    if dereference_once:  # wellhead's cached schema rewrite instead of FastMCP's per-listing one
        from wellhead.guards.schemas import DereferenceOnce

        middleware = [*(middleware or []), DereferenceOnce()]
    mcp: FastMCP = FastMCP("bare", middleware=middleware, dereference_schemas=not dereference_once)
    if mount:
        mcp.mount(plugin_server())
    else:
        mcp.tool(echo)
    if same_tools is not None:
        from key_value.aio.stores.memory import MemoryStore

        from wellhead.app import build_runtime
        from wellhead.config import parse_settings
        from wellhead.guards.budget import OverflowStore
        from wellhead.tools.core import register_core_tools
        from wellhead.tools.read_more import register_read_more

        config = wellhead_config(same_tools, "bench.trivial_plugin")
        config["plugins"] = []
        settings = parse_settings(config)
        runtime = build_runtime(settings)
        register_core_tools(mcp, runtime.executor, settings.primary_source, settings.limits)
        overflow = OverflowStore(MemoryStore(), runtime.executor.codec)
        register_read_more(mcp, overflow, settings.limits.result_budget_bytes)
    return mcp


def tiny_database(directory: Path, name: str) -> Path:
    """A one-table DuckDB file: wellhead needs a source, the benchmark does not query it.

    One file per server: DuckDB refuses a second locked-down connection to the same file."""
    path = directory / f"tiny-{name}.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE IF NOT EXISTS t AS SELECT 1 AS one")
    con.close()
    return path


def wellhead_config(directory: Path, plugin: str = PLUGIN) -> dict[str, Any]:
    database = tiny_database(directory, plugin.replace(":", "-"))
    return {
        "sources": {"tiny": {"kind": "duckdb", "path": str(database)}},
        "plugins": [plugin],
        "cursor": {"secret": "bench-chassis-secret-0123456789abcdef"},
    }


def wellhead_server(directory: Path, plugin: str = PLUGIN) -> FastMCP:
    from wellhead.app import build_server
    from wellhead.config import parse_settings

    return build_server(parse_settings(wellhead_config(directory, plugin)))


def summary(label: str, seconds: list[float]) -> tuple[float, float]:
    us = sorted(s * 1e6 for s in seconds)
    mean, median = statistics.fmean(us), statistics.median(us)
    p95 = us[int(len(us) * 0.95) - 1]
    print(
        f"  {label:<9} n={len(us):<6} mean {mean:8.1f} us  median {median:8.1f} us  "
        f"p95 {p95:8.1f} us  ({1e6 / mean:7.0f} calls/s)"
    )
    return mean, median


def same_tools_ratio(timings: Timings) -> None:
    """Baselines that list the same tools as wellhead (clients list tools before each call).

    `same`: bare FastMCP as configured by default, with wellhead's tools and no guard.
    `lean`: the same, plus wellhead's cached schema dereferencing: the difference to
    wellhead is then exactly the guards and observability."""
    cpu = {name: timings.cpu[name] / len(timings.wall[name]) * 1e6 for name in timings.cpu}
    wall = {name: statistics.median(timings.wall[name]) * 1e6 for name in timings.wall}
    labels = {
        "same": "bare FastMCP, same tool list",
        "lean": "same, with wellhead's cached $ref inlining (guards/observability alone)",
    }
    for name, label in labels.items():
        if name not in cpu:
            continue
        ratio = cpu["wellhead"] / cpu[name]
        verdict = "within" if ratio <= TARGET else "ABOVE"
        print(
            f"  vs {label}: CPU {cpu[name]:.0f} us -> ratio wellhead/it CPU {ratio:.3f}, "
            f"median wall {wall['wellhead'] / wall[name]:.3f} ({verdict} the {TARGET} target)"
        )


def report(timings: Timings, cpu_label: str) -> None:
    bare = summary("bare", timings.wall["bare"])
    wellhead = summary("wellhead", timings.wall["wellhead"])
    mean_ratio, median_ratio = wellhead[0] / bare[0], wellhead[1] / bare[1]
    verdict = "within" if mean_ratio <= TARGET else "ABOVE"
    print(
        f"  ratio wellhead/bare (wall): mean {mean_ratio:.3f}  median {median_ratio:.3f}  "
        f"(+{wellhead[0] - bare[0]:.0f} us per call; {verdict} the {TARGET} target)"
    )
    cpu = {name: timings.cpu[name] / len(timings.wall[name]) * 1e6 for name in timings.cpu}
    print(
        f"  {cpu_label} CPU per call: bare {cpu['bare']:.0f} us, wellhead "
        f"{cpu['wellhead']:.0f} us, ratio {cpu['wellhead'] / cpu['bare']:.3f} "
        "(robust to other load on the machine)"
    )


Call = Callable[[int], Awaitable[Any]]


class Timings:
    """Per-call wall latencies and this process's CPU seconds, by side."""

    def __init__(self, names: list[str]) -> None:
        self.wall: dict[str, list[float]] = {name: [] for name in names}
        self.cpu: dict[str, float] = dict.fromkeys(names, 0.0)


async def interleaved(
    calls: dict[str, Call],
    total: int,
    rounds: int,
    cpu_clocks: dict[str, Callable[[], float]] | None = None,
) -> Timings:
    """Each round runs every side back to back, the order flipping, so drift hits both.

    CPU is this process's by default, or per side from `cpu_clocks` (server processes)."""
    per_round = max(total // rounds, 1)
    names = list(calls)
    timings = Timings(names)
    for round_no in range(rounds):
        gc.collect()
        for name in names if round_no % 2 == 0 else reversed(names):
            call, sink = calls[name], timings.wall[name]
            clock = (cpu_clocks or {}).get(name, time.process_time)
            cpu = clock()
            for i in range(per_round):
                started = time.perf_counter()
                await call(i)
                sink.append(time.perf_counter() - started)
            timings.cpu[name] += clock() - cpu
    return timings


def caller(client: Client) -> Call:
    async def call(i: int) -> Any:
        result = await client.call_tool("echo", {"x": i})
        if result.data != i:  # a broken echo would make the timing meaningless
            raise RuntimeError(f"echo returned {result.data!r} for {i}")
        return result

    return call


async def in_memory(args: argparse.Namespace, directory: Path) -> None:
    print(f"in-memory clients: {args.calls} calls per server in {args.rounds} interleaved rounds")
    bare, wellhead = bare_server(), wellhead_server(directory)
    for name in ("same", "lean"):
        (directory / name).mkdir(exist_ok=True)
    same = bare_server(mount=True, same_tools=directory / "same")
    lean = bare_server(mount=True, same_tools=directory / "lean", dereference_once=True)
    async with (
        Client(bare) as bare_client,
        Client(wellhead) as wellhead_client,
        Client(same) as same_client,
        Client(lean) as lean_client,
    ):
        calls = {
            "bare": caller(bare_client),
            "wellhead": caller(wellhead_client),
            "same": caller(same_client),
            "lean": caller(lean_client),
        }
        await interleaved(calls, args.warmup * 2, 2)
        timings = await interleaved(calls, args.calls, args.rounds)
        report(timings, "client+server (one process)")
        same_tools_ratio(timings)
        if args.profile:
            await profile(calls, args.profile_calls)


async def breakdown(args: argparse.Namespace, directory: Path) -> None:
    """CPU per call of bare FastMCP plus one piece of the chassis at a time."""
    wellhead = wellhead_server(directory)
    guards = next(m for m in wellhead.middleware if isinstance(m, GuardChain)).guards
    servers = {
        "bare": bare_server(),
        "bare, echo mounted": bare_server(mount=True),
        **{f"bare + {type(g).__name__}": bare_server([g]) for g in guards},
        "bare + all guards": bare_server(guards),
        "wellhead, echo via register()": wellhead_server(directory, PLUGIN + ":register"),
        "wellhead, echo mounted": wellhead,
    }
    print(
        f"\nbreakdown (in memory, {args.breakdown_calls} calls each, interleaved; "
        "CPU of client+server per call):"
    )
    async with AsyncExitStack() as stack:
        calls = {}
        for name, server in servers.items():
            calls[name] = caller(await stack.enter_async_context(Client(server)))
        await interleaved(calls, args.warmup * 2, 2)
        timings = await interleaved(calls, args.breakdown_calls, args.rounds)
    base = timings.cpu["bare"] / len(timings.wall["bare"]) * 1e6
    for name in servers:
        cpu = timings.cpu[name] / len(timings.wall[name]) * 1e6
        wall = statistics.median(timings.wall[name]) * 1e6
        print(
            f"  {name:<32} cpu {cpu:7.0f} us  (+{cpu - base:5.0f} us, x{cpu / base:.2f})  "
            f"median wall {wall:7.0f} us"
        )


def where(filename: str) -> str:
    """A profiled function's home: a wellhead module, a package, or the standard library."""
    if "/wellhead/" in filename and "site-packages" not in filename:
        return "wellhead/" + filename.split("/wellhead/", 1)[1]
    if "site-packages/" in filename:
        parts = filename.split("site-packages/", 1)[1].split("/")
        return "/".join(parts[:2]) if parts[0] in ("fastmcp", "mcp") else parts[0]
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins"
    path = Path(filename)
    return "stdlib:" + (path.parent.name if path.name == "__init__.py" else path.stem)


def own_time_by_module(profiler: cProfile.Profile) -> dict[str, float]:
    totals: dict[str, float] = {}
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    for (filename, _, _), (_, _, tottime, _, _) in stats.items():
        key = where(filename)
        totals[key] = totals.get(key, 0.0) + tottime
    return totals


async def profile(calls: dict[str, Call], count: int) -> None:
    """Own (exclusive) time per call by module, wellhead minus bare: where the overhead lives."""
    own: dict[str, dict[str, float]] = {}
    for name in ("bare", "wellhead"):
        profiler = cProfile.Profile()
        profiler.enable()
        for i in range(count):
            await calls[name](i)
        profiler.disable()
        own[name] = own_time_by_module(profiler)
    totals = {name: sum(values.values()) / count * 1e6 for name, values in own.items()}
    print(
        f"\n  cProfile, {count} calls each (profiling inflates times about 2x): "
        f"bare {totals['bare']:.0f} us, wellhead {totals['wellhead']:.0f} us per call"
    )
    print("  extra own time per wellhead call, by module (top 15):")
    modules = set(own["bare"]) | set(own["wellhead"])
    extra = {
        m: (own["wellhead"].get(m, 0.0) - own["bare"].get(m, 0.0)) / count * 1e6 for m in modules
    }
    for module, us in sorted(extra.items(), key=lambda item: -item[1])[:15]:
        print(f"    {us:8.1f} us  {module}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Subprocess:
    def __init__(self, args: list[str], port: int, log: Path, ready_path: str) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "FASTMCP_CHECK_FOR_UPDATES": "off",
        }
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
                httpx.get(self.url + ready_path, timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"server on port {port} did not start")

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process, from /proc (Linux)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_http_servers(directory: Path) -> tuple[Subprocess, Subprocess]:
    """Bare FastMCP and `wellhead serve`, each over streamable HTTP in its own process."""
    import yaml

    config = directory / "wellhead.yaml"
    config.write_text(yaml.safe_dump(wellhead_config(directory)))
    bare_port, wellhead_port = free_port(), free_port()
    bare = Subprocess(
        [sys.executable, str(Path(__file__).resolve()), "--serve-bare", str(bare_port)],
        bare_port,
        directory / "bare.log",
        "/mcp",
    )
    try:
        wellhead = Subprocess(
            [sys.executable, "-m", "wellhead", "serve", "--config", str(config)]
            + ["--transport", "http", "--port", str(wellhead_port)],
            wellhead_port,
            directory / "wellhead.log",
            "/healthz",
        )
    except BaseException:
        bare.stop()
        raise
    return bare, wellhead


async def over_http(args: argparse.Namespace, bare: Subprocess, wellhead: Subprocess) -> None:
    print(
        f"\nstreamable HTTP, server subprocesses: {args.http_calls} calls per server in "
        f"{args.rounds} interleaved rounds"
    )
    async with (
        Client(f"{bare.url}/mcp") as bare_client,
        Client(f"{wellhead.url}/mcp") as wellhead_client,
    ):
        calls = {"bare": caller(bare_client), "wellhead": caller(wellhead_client)}
        await interleaved(calls, args.warmup, 2)
        clocks = {"bare": bare.cpu_seconds, "wellhead": wellhead.cpu_seconds}
        report(await interleaved(calls, args.http_calls, args.rounds, clocks), "server process")


def serve_bare(port: int) -> None:
    """Bare FastMCP over streamable HTTP, as `mcp.run(transport="http")` serves it."""
    bare_server().run(transport="http", host="127.0.0.1", port=port, show_banner=False)


async def run(args: argparse.Namespace, directory: Path) -> None:
    await in_memory(args, directory)
    if args.breakdown:
        await breakdown(args, directory)
    if not args.http:
        return
    bare, wellhead = await asyncio.to_thread(start_http_servers, directory)
    try:
        await over_http(args, bare, wellhead)
    finally:
        await asyncio.to_thread(bare.stop)
        await asyncio.to_thread(wellhead.stop)
    text = await asyncio.to_thread(wellhead.log.read_text)
    lines = text.count('"event": "tool_call"')
    print(f"  wellhead wrote {lines} tool_call log lines (one per call, warm-up included)")


def load() -> str:
    """Other processes share the cores: a busy machine blurs wall figures, not ratios."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per server")
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds")
    parser.add_argument("--warmup", type=int, default=200, help="untimed calls per server")
    parser.add_argument("--http", action="store_true", help="also over streamable HTTP")
    parser.add_argument("--http-calls", type=int, default=600, help="timed HTTP calls per server")
    parser.add_argument(
        "--breakdown", action="store_true", help="CPU per call of each guard alone, and mount"
    )
    parser.add_argument("--breakdown-calls", type=int, default=1000)
    parser.add_argument("--profile", action="store_true", help="cProfile wellhead's calls")
    parser.add_argument("--profile-calls", type=int, default=500)
    parser.add_argument("--log-file", help="append wellhead's JSON logs here (default: devnull)")
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return 0
    from wellhead.observe.logs import configure_logging

    with open(args.log_file or os.devnull, "a") as log_stream:
        configure_logging("INFO", stream=log_stream)  # as `wellhead serve`; lines go to a sink
        print(
            f"cpus={os.cpu_count()} python={sys.version.split()[0]} "
            f"fastmcp={fastmcp.__version__} loadavg={load()} "
            f"logs -> {args.log_file or os.devnull}"
        )
        with tempfile.TemporaryDirectory(prefix="wellhead-bench-chassis-") as tmp:
            asyncio.run(run(args, Path(tmp)))
        print(f"loadavg(after)={load()}")
        logging.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
