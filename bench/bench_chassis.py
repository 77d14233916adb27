"""Overhead of wellhead's full chassis against bare FastMCP on a trivial tool (issue 4).

    python bench/bench_chassis.py [--rounds 60] [--per-round 40] [--http] [--breakdown]
                                  [--profile] [--log-file PATH]

Every server exposes the same trivial `async def echo(x: int) -> int`, registered the same
way (`mcp.tool(echo)`; on wellhead through the plugin hook `bench.trivial_plugin:register`):

- `bare`: FastMCP with echo alone.
- `bare+tools`: FastMCP with echo and wellhead's own tools (query, list_tables,
  describe_table, read_more), no guard and no `$ref` rewriting. FastMCP's client lists the
  tools before every call over streamable HTTP (once per session in memory), so over HTTP
  the size of the tool list is paid on each call; this baseline lists what wellhead lists,
  and the difference to wellhead is exactly the chassis.
- `wellhead`: `build_server` with a one-table DuckDB source, every guard, JSON `tool_call`
  lines (to /dev/null unless --log-file), metrics and the loop watchdog.

The sides run in interleaved rounds of `--per-round` calls (the order flips every round).
The figure per round is CPU per call of the thread that does the work: in memory the one
thread runs client and server (`time.thread_time`); over HTTP it is the server process's
main thread (`/proc/PID/schedstat`, in ns). Per side it prints the median over rounds and
the minimum (the least disturbed round: other load on the machine only ever adds); per
baseline the median of the paired per-round ratios (the verdict), and the ratios of the
medians and of the minima. The target is at most 1.05. Figures, not tests.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import logging
import os
import pstats
import statistics
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
from fastmcp import Client, FastMCP  # noqa: E402

from bench._server import ServerSubprocess, free_port  # noqa: E402
from wellhead.guards.chain import GuardChain  # noqa: E402

PLUGIN = "bench.trivial_plugin:register"
MOUNTED = "bench.trivial_plugin"
TARGET = 1.05


def bare_server(
    middleware: list[Any] | None = None,
    *,
    mount: bool = False,
    same_tools: Path | None = None,
) -> FastMCP:
    """Bare FastMCP with `echo`; optionally some of wellhead's guards, or echo mounted.

    `same_tools` (a directory for a tiny database) also registers wellhead's own tools with
    no guard and no `$ref` rewriting at all (the cheapest listing FastMCP can do)."""
    from bench.trivial_plugin import echo, plugin_server

    mcp: FastMCP = FastMCP("bare", middleware=middleware, dereference_schemas=same_tools is None)
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

        config = wellhead_config(same_tools, "bare-tools")
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
    path = directory / f"tiny-{name.replace(':', '-')}.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE IF NOT EXISTS t AS SELECT 1 AS one")
    con.close()
    return path


def wellhead_config(directory: Path, plugin: str = PLUGIN) -> dict[str, Any]:
    database = tiny_database(directory, plugin)
    return {
        "sources": {"tiny": {"kind": "duckdb", "path": str(database)}},
        "plugins": [plugin],
        "cursor": {"secret": "bench-chassis-secret-0123456789abcdef"},
    }


def wellhead_server(directory: Path, plugin: str = PLUGIN) -> FastMCP:
    from wellhead.app import build_server
    from wellhead.config import parse_settings

    return build_server(parse_settings(wellhead_config(directory, plugin)))


Call = Callable[[int], Awaitable[Any]]


def caller(client: Client) -> Call:
    async def call(i: int) -> Any:
        result = await client.call_tool("echo", {"x": i})
        if result.data != i:  # a broken echo would make the timing meaningless
            raise RuntimeError(f"echo returned {result.data!r} for {i}")
        return result

    return call


async def interleaved(
    calls: dict[str, Call],
    rounds: int,
    per_round: int,
    clocks: dict[str, Callable[[], float]] | None = None,
) -> dict[str, list[float]]:
    """CPU seconds per call, one figure per side per round; the order flips every round.

    The collector runs between rounds, not inside them, so a collection triggered by one
    side's garbage is not charged to the other."""
    per_call: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    try:
        for round_no in range(rounds):
            gc.collect()
            gc.disable()
            for name in names if round_no % 2 == 0 else reversed(names):
                call, clock = calls[name], (clocks or {}).get(name, time.thread_time)
                started = clock()
                for i in range(per_round):
                    await call(i)
                per_call[name].append((clock() - started) / per_round)
            gc.enable()
    finally:
        gc.enable()
    return per_call


def report(per_call: dict[str, list[float]], where: str) -> None:
    """Per side: median and minimum over rounds. Per baseline: the ratio of the medians, of
    the minima, and the median (with quartiles) of the paired per-round ratios: the two sides
    of one round ran back to back, so slow drift in the machine's speed cancels out."""
    us = {name: [x * 1e6 for x in values] for name, values in per_call.items()}
    for name, values in us.items():
        print(
            f"  {name:<28} CPU per call ({where}): median {statistics.median(values):7.0f} us"
            f"   min {min(values):7.0f} us   ({len(values)} rounds)"
        )
    chassis = us["wellhead"]
    for baseline in (n for n in us if n.startswith("bare")):
        base = us[baseline]
        paired = [w / b for w, b in zip(chassis, base, strict=True)]
        low, middle, high = statistics.quantiles(paired, n=4)
        extra = statistics.median(chassis) - statistics.median(base)
        verdict = "within" if middle <= TARGET else "ABOVE"
        print(
            f"  wellhead/{baseline}: paired median {middle:.3f} (quartiles {low:.3f}-{high:.3f}), "
            f"ratio of medians {statistics.median(chassis) / statistics.median(base):.3f}, "
            f"of minima {min(chassis) / min(base):.3f}; {extra:+.0f} us per call; "
            f"{verdict} the {TARGET} target"
        )


async def in_memory(args: argparse.Namespace, directory: Path) -> None:
    print(
        f"in memory (client and server in one thread): {args.rounds} interleaved rounds "
        f"of {args.per_round} calls per side"
    )
    servers = {
        "bare": bare_server(),
        "bare+tools": bare_server(same_tools=directory),
        "wellhead": wellhead_server(directory),
    }
    async with AsyncExitStack() as stack:
        calls = {
            name: caller(await stack.enter_async_context(Client(server)))
            for name, server in servers.items()
        }
        await interleaved(calls, 2, args.warmup)
        report(await interleaved(calls, args.rounds, args.per_round), "client+server")
        if args.profile:
            await profile(calls, args.profile_calls)


async def breakdown(args: argparse.Namespace, directory: Path) -> None:
    """CPU per call of bare FastMCP plus one guard at a time, and of a mounted plugin."""
    wellhead = wellhead_server(directory)
    chain = next(m for m in wellhead.middleware if isinstance(m, GuardChain))
    servers = {
        "bare": bare_server(),
        "bare, echo mounted": bare_server(mount=True),
        **{f"bare + {type(g).__name__}": bare_server([g]) for g in chain.guards},
        "bare + GuardChain(all guards)": bare_server([GuardChain(chain.guards)]),
        "wellhead": wellhead,
        "wellhead, echo mounted": wellhead_server(directory, MOUNTED),
    }
    print(f"\nbreakdown (in memory, {args.rounds} rounds of {args.per_round} calls, interleaved):")
    async with AsyncExitStack() as stack:
        calls = {}
        for name, server in servers.items():
            calls[name] = caller(await stack.enter_async_context(Client(server)))
        await interleaved(calls, 2, args.warmup)
        per_call = await interleaved(calls, args.rounds, args.per_round)
    base = statistics.median(per_call["bare"]) * 1e6
    for name, values in per_call.items():
        cpu = statistics.median(values) * 1e6
        print(f"  {name:<32} median CPU {cpu:7.0f} us  ({cpu - base:+5.0f} us, x{cpu / base:.3f})")


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
    """Own CPU time per call by module, wellhead minus bare: where the overhead lives."""
    own: dict[str, dict[str, float]] = {}
    for name in ("bare", "wellhead"):
        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
        for i in range(count):
            await calls[name](i)
        profiler.disable()
        own[name] = own_time_by_module(profiler)
    totals = {name: sum(values.values()) / count * 1e6 for name, values in own.items()}
    print(
        f"\n  cProfile, {count} calls each (profiling inflates times several-fold): "
        f"bare {totals['bare']:.0f} us, wellhead {totals['wellhead']:.0f} us per call"
    )
    print("  extra own time per wellhead call, by module (top 15):")
    modules = set(own["bare"]) | set(own["wellhead"])
    extra = {
        m: (own["wellhead"].get(m, 0.0) - own["bare"].get(m, 0.0)) / count * 1e6 for m in modules
    }
    for module, us in sorted(extra.items(), key=lambda item: -item[1])[:15]:
        print(f"    {us:8.1f} us  {module}")


def start_http_servers(directory: Path) -> dict[str, ServerSubprocess]:
    """Bare FastMCP (alone and with wellhead's tools) and `wellhead serve`, each in a process."""
    import yaml

    config = directory / "wellhead.yaml"
    config.write_text(yaml.safe_dump(wellhead_config(directory)))
    script = str(Path(__file__).resolve())
    commands = {
        "bare": ([sys.executable, script, "--serve-bare"], "/mcp"),
        "bare+tools": (
            [sys.executable, script, "--same-tools", str(directory), "--serve-bare"],
            "/mcp",
        ),
        "wellhead": (
            [sys.executable, "-m", "wellhead", "serve", "--config", str(config)]
            + ["--transport", "http", "--port"],
            "/healthz",
        ),
    }
    servers: dict[str, ServerSubprocess] = {}
    try:
        for name, (command, ready) in commands.items():
            port = free_port()
            log = directory / f"{name}.log"
            servers[name] = ServerSubprocess([*command, str(port)], port, log, ready)
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return servers


async def over_http(args: argparse.Namespace, servers: dict[str, ServerSubprocess]) -> None:
    print(
        f"\nstreamable HTTP, one server process each: {args.rounds} interleaved rounds of "
        f"{args.per_round} calls per side"
    )
    async with AsyncExitStack() as stack:
        calls = {
            name: caller(await stack.enter_async_context(Client(f"{server.url}/mcp")))
            for name, server in servers.items()
        }
        await interleaved(calls, 2, args.warmup)
        clocks = {name: server.main_thread_cpu for name, server in servers.items()}
        report(await interleaved(calls, args.rounds, args.per_round, clocks), "server thread")


def serve_bare(port: int, same_tools: Path | None) -> None:
    """Bare FastMCP over streamable HTTP, as `mcp.run(transport="http")` serves it."""
    mcp = bare_server(same_tools=same_tools)
    mcp.run(transport="http", host="127.0.0.1", port=port, show_banner=False)


async def run(args: argparse.Namespace, directory: Path) -> None:
    await in_memory(args, directory)
    if args.breakdown:
        await breakdown(args, directory)
    if not args.http:
        return
    servers = await asyncio.to_thread(start_http_servers, directory)
    try:
        await over_http(args, servers)
    finally:
        for server in servers.values():
            await asyncio.to_thread(server.stop)
    text = await asyncio.to_thread(servers["wellhead"].log.read_text)
    lines = text.count('"event": "tool_call"')
    print(f"  wellhead wrote {lines} tool_call log lines (one per call, warm-up included)")


def load() -> str:
    """Other processes share the cores: a busy machine blurs wall figures, not ratios."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60, help="interleaved rounds")
    parser.add_argument("--per-round", type=int, default=40, help="calls per side per round")
    parser.add_argument("--warmup", type=int, default=200, help="untimed calls per side")
    parser.add_argument("--http", action="store_true", help="also over streamable HTTP")
    parser.add_argument("--breakdown", action="store_true", help="each guard alone, and mount")
    parser.add_argument("--profile", action="store_true", help="cProfile wellhead's calls")
    parser.add_argument("--profile-calls", type=int, default=500)
    parser.add_argument("--log-file", help="append wellhead's JSON logs here (default: devnull)")
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--same-tools", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare, args.same_tools)
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
