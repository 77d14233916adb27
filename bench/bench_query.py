"""`query` on the demo data through a real MCP client: first page, memory, walk speed, tool list.

    python bench/bench_query.py [--runs 5] [--default-pages 25] [--walk-pages 0] [--http]
                                [--no-naive] [--no-walk]

On the demo DuckDB dataset (1,000,000 orders), prints:
  * the tool list in tokens (bytes/4 of the tools/list JSON: the three core tools, and all);
  * time to first page of `SELECT * FROM orders` (cold: the server's first query; warm: median);
  * RSS of the server process before/after the first page, its peak, and the Python heap peak
    (tracemalloc) — against a separate process that fetches the whole table with DuckDB's
    `fetchall()`, to show the page path never materialises the table (as a ratio);
  * rows/s walking pages with the default limits (a bounded number of pages), and walking every
    page with large limits (max_result_budget_bytes 1 MiB, max_rows_per_page 20,000), with the
    time spent inside the server (the tool_call log's execution_time_ms) and the RSS peak.
In memory (`fastmcp.Client(build_server(settings))`: one process holds client and server), and
with `--http` over streamable HTTP against `python -m wellhead serve --transport http` (RSS is
then the server process's alone). Figures, not tests: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("FASTMCP_CHECK_FOR_UPDATES", "off")
os.environ.setdefault("FASTMCP_SHOW_SERVER_BANNER", "false")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `bench._server` must import when run as a script
    sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402
import fastmcp  # noqa: E402
from fastmcp import Client  # noqa: E402

from bench._server import ServerSubprocess, free_port  # noqa: E402

SQL = "SELECT * FROM orders"
CORE_TOOLS = ("list_tables", "describe_table", "query")
WALK = {"max_rows": 20_000, "budget_bytes": 1_048_576}
LIMITS = {"max_result_budget_bytes": 1_048_576, "max_rows_per_page": 20_000}
SECRET = "bench-query-secret-0123456789abcdef"
MIB = 2**20


def config(demo: Path) -> dict[str, Any]:
    """The demo source with caps raised so a walk may ask for big pages; defaults unchanged."""
    return {
        "sources": {"demo": {"kind": "duckdb", "path": str(demo)}},
        "limits": LIMITS,
        "cursor": {"secret": SECRET},
    }


# -- memory of a process (Linux /proc) ---------------------------------------------------------


def memory(pid: int | str = "self") -> tuple[float, float]:
    """(current RSS, peak RSS since the last reset) in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def reset_peak(pid: int | str = "self") -> bool:
    """Reset VmHWM to the current RSS, so a peak belongs to one phase (Linux >= 4.0)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# -- the naive baseline: the whole table in Python, in its own process ------------------------

NAIVE = """
import json, sys, time, tracemalloc
from pathlib import Path
import duckdb

def memory():
    v = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        k, _, rest = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            v[k] = int(rest.split()[0]) / 1024
    return v["VmRSS"], v["VmHWM"]

con = duckdb.connect(sys.argv[1], read_only=True)
con.execute("SET enable_progress_bar = false")
con.execute("SELECT 1").fetchall()
before = memory()[0]
started = time.perf_counter()
rows = con.execute(sys.argv[2]).fetchall()
seconds = time.perf_counter() - started
after, peak = memory()
del rows
tracemalloc.start()
rows = con.execute(sys.argv[2]).fetchall()
heap = tracemalloc.get_traced_memory()[1] / 2**20
print(json.dumps({"rows": len(rows), "seconds": seconds, "before": before, "after": after,
                  "peak": peak, "heap": heap}))
"""


def naive_baseline(demo: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", NAIVE, str(demo), SQL], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- one MCP conversation, in memory or over HTTP ----------------------------------------------


@dataclass
class Side:
    """How to reach one server and how to read its memory and its own time per call."""

    label: str
    client: Client
    pid: int | str
    server_ms: Callable[[], list[float]]
    notes: list[str] = field(default_factory=list)


@dataclass
class Walk:
    pages: int = 0
    rows: int = 0
    seconds: float = 0.0
    server_ms: float = 0.0
    contiguous: bool = True
    complete: bool = False
    page_seconds: list[float] = field(default_factory=list)


async def call_query(client: Client, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool("query", arguments)
    return dict(result.structured_content or {})


async def walk(side: Side, first: dict[str, Any], extra: dict[str, Any], pages: int) -> Walk:
    """Follow next_cursor from a first call's arguments for `pages` pages (0: to the end)."""
    done = Walk()
    taken = len(side.server_ms())
    expected_id = 1
    arguments = {**first, **extra}
    while True:
        started = time.perf_counter()
        page = await call_query(side.client, arguments)
        elapsed = time.perf_counter() - started
        done.seconds += elapsed
        done.page_seconds.append(elapsed)
        done.pages += 1
        rows = page["rows"]
        done.rows += len(rows)
        if rows:  # orders.order_id runs 1..N; pages in order must continue it exactly
            ids = [row[0] for row in rows]
            done.contiguous &= ids == list(range(expected_id, expected_id + len(ids)))
            expected_id += len(ids)
        cursor = page.get("next_cursor")
        if not cursor:
            done.complete = True
            break
        if pages and done.pages >= pages:
            break
        arguments = {"cursor": cursor, **extra}
    done.server_ms = sum(side.server_ms()[taken:])
    return done


def tool_list_size(tools: list[Any]) -> tuple[int, int, int, int]:
    """(bytes of the core tools, their tokens, bytes of all tools, count of all)."""
    listing = [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in tools]
    core = [entry for entry in listing if entry["name"] in CORE_TOOLS]
    core_bytes = len(json.dumps(core, separators=(",", ":")))
    all_bytes = len(json.dumps(listing, separators=(",", ":")))
    return core_bytes, core_bytes // 4, all_bytes, len(listing)


async def run_side(side: Side, args: argparse.Namespace, naive: dict[str, float] | None) -> None:
    client = side.client
    print(f"\n== {side.label} ==")
    for note in side.notes:
        print(f"  {note}")

    tools = await client.list_tools()
    core_bytes, core_tokens, all_bytes, count = tool_list_size(tools)
    print(
        f"tool list: 3 core tools {core_bytes:,} bytes = {core_tokens:,} tokens (target <= 1,500); "
        f"all {count} tools {all_bytes:,} bytes = {all_bytes // 4:,} tokens"
    )

    gc.collect()
    rss_before, _ = memory(side.pid)
    peak_reset = reset_peak(side.pid)
    started = time.perf_counter()
    page = await call_query(client, {"sql": SQL})
    cold = time.perf_counter() - started
    rss_after, peak = memory(side.pid)
    warm = []
    for _ in range(args.runs):
        started = time.perf_counter()
        await call_query(client, {"sql": SQL})
        warm.append(time.perf_counter() - started)
    ms = sorted(s * 1000 for s in warm)
    print(
        f"first page of `{SQL}`: {page['row_count']} rows, total_rows={page['total_rows']:,}, "
        f"cold {cold * 1000:.0f} ms; warm median {statistics.median(ms):.0f} ms "
        f"(min {ms[0]:.0f}, max {ms[-1]:.0f}, n={len(ms)})"
    )
    growth = max(peak - rss_before, 0.0)
    print(
        f"server RSS: {rss_before:.0f} MiB before, {rss_after:.0f} MiB after, peak "
        f"{peak:.0f} MiB (+{growth:.0f} MiB{'' if peak_reset else '; peak not resettable'})"
    )
    heap = None
    if side.pid == "self":
        tracemalloc.start()
        await call_query(client, {"sql": SQL})
        heap = tracemalloc.get_traced_memory()[1] / MIB
        tracemalloc.stop()
        print(
            f"Python heap peak during one first page (tracemalloc, client included): {heap:.1f} MiB"
        )
    if naive:
        naive_growth = naive["peak"] - naive["before"]
        print(
            f"vs fetchall() of the whole table: RSS +{naive_growth:.0f} MiB, Python heap "
            f"{naive['heap']:.0f} MiB -> RSS growth x{naive_growth / max(growth, 1.0):.0f} "
            f"of wellhead's"
            + (f", Python heap x{naive['heap'] / max(heap, 0.1):.0f}" if heap else "")
        )

    if args.default_pages:
        done = await walk(side, {"sql": SQL}, {}, args.default_pages)
        print(
            f"walk, default limits: {done.pages} pages, {done.rows:,} rows in "
            f"{done.seconds:.2f} s = {done.rows / done.seconds:,.0f} rows/s "
            f"({done.seconds / done.pages * 1000:.0f} ms/page; server "
            f"{done.server_ms / done.pages:.0f} ms/page); rows in order: {done.contiguous}"
        )
    if args.no_walk:
        return
    gc.collect()
    rss_before, _ = memory(side.pid)
    reset_peak(side.pid)
    done = await walk(side, {"sql": SQL}, WALK, args.walk_pages)
    _, peak = memory(side.pid)
    per_page = statistics.median(done.page_seconds) * 1000
    print(
        f"walk, max_rows {WALK['max_rows']:,} / budget {WALK['budget_bytes']:,} B: "
        f"{done.pages} pages, {done.rows:,} rows in {done.seconds:.1f} s = "
        f"{done.rows / done.seconds:,.0f} rows/s (median {per_page:.0f} ms/page; inside the "
        f"server {done.server_ms / 1000:.1f} s = {done.server_ms / done.seconds / 10:.0f}%)"
    )
    print(
        f"  complete: {done.complete}; every row once, in order: {done.contiguous}; "
        f"server RSS peak during the walk {peak:.0f} MiB (+{max(peak - rss_before, 0):.0f} MiB)"
    )


# -- in memory -----------------------------------------------------------------------------------


class CallTimes(logging.Handler):
    """execution_time_ms of every `query` tool_call line, as the server logged it."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "tool_name", None) == "query":
            self.times.append(float(getattr(record, "execution_time_ms", 0.0)))


async def in_memory(demo: Path, args: argparse.Namespace, naive: dict[str, float] | None) -> None:
    from wellhead.app import build_server
    from wellhead.config import parse_settings

    times = CallTimes()
    logging.getLogger("wellhead.calls").addHandler(times)
    server = build_server(parse_settings(config(demo)))
    async with Client(server) as client:
        side = Side(
            "in memory: fastmcp.Client(build_server(settings))",
            client,
            "self",
            lambda: times.times,
            ["RSS below is this process: server and client together."],
        )
        await run_side(side, args, naive)


# -- over HTTP ----------------------------------------------------------------------------------


class HttpServer(ServerSubprocess):
    """`python -m wellhead serve --transport http` in its own process, JSON logs to a file."""

    def __init__(self, config_path: Path, log: Path) -> None:
        port = free_port()
        args = [sys.executable, "-m", "wellhead", "serve", "--config", str(config_path)]
        args += ["--transport", "http", "--port", str(port)]
        super().__init__(args, port, log, "/readyz")

    def query_times(self) -> list[float]:
        times = []
        for line in self.log.read_text().splitlines():
            if '"tool_call"' not in line:
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry.get("tool_name") == "query":
                times.append(float(entry.get("execution_time_ms", 0.0)))
        return times


async def over_http(server: HttpServer, args: argparse.Namespace, naive: dict[str, float] | None):  # type: ignore[no-untyped-def]
    async with Client(f"{server.url}/mcp") as client:
        side = Side(
            "streamable HTTP: python -m wellhead serve --transport http (subprocess)",
            client,
            server.process.pid,
            server.query_times,
            [f"RSS below is the server process alone (pid {server.process.pid})."],
        )
        await run_side(side, args, naive)


# -- main ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="warm first pages to time")
    parser.add_argument("--default-pages", type=int, default=25, help="pages at default limits")
    parser.add_argument("--walk-pages", type=int, default=0, help="big pages to walk; 0 = all")
    parser.add_argument("--no-walk", action="store_true", help="skip the big-page walk")
    parser.add_argument("--http", action="store_true", help="also over streamable HTTP")
    parser.add_argument("--no-memory", action="store_true", help="skip the in-memory client")
    parser.add_argument("--no-naive", action="store_true", help="skip the fetchall() baseline")
    args = parser.parse_args()

    from wellhead.demo import ensure_demo_database
    from wellhead.observe.logs import configure_logging

    demo = ensure_demo_database()
    con = duckdb.connect(str(demo), read_only=True)
    orders = con.execute("SELECT count(*) FROM orders").fetchall()[0][0]
    con.close()
    print(
        f"cpus={os.cpu_count()} python={sys.version.split()[0]} fastmcp={fastmcp.__version__} "
        f"duckdb={duckdb.__version__} loadavg={load()}"
    )
    print(f"demo: {demo} ({demo.stat().st_size / MIB:.0f} MiB), orders={orders:,}")

    naive = None
    if not args.no_naive:
        naive = naive_baseline(demo)
        print(
            f"baseline, another process: duckdb fetchall() of `{SQL}`: {naive['rows']:,} rows "
            f"in {naive['seconds']:.2f} s; RSS {naive['before']:.0f} -> {naive['after']:.0f} "
            f"MiB, peak {naive['peak']:.0f} MiB (+{naive['peak'] - naive['before']:.0f} MiB); "
            f"Python heap {naive['heap']:.0f} MiB"
        )

    with open(os.devnull, "w") as sink, tempfile.TemporaryDirectory(prefix="wh-bq-") as tmp:
        configure_logging("INFO", stream=sink)  # JSON log lines are formatted, as in `serve`
        if not args.no_memory:
            asyncio.run(in_memory(demo, args, naive))
        if args.http:
            import yaml

            config_path = Path(tmp) / "wellhead.yaml"
            config_path.write_text(yaml.safe_dump(config(demo)))
            server = HttpServer(config_path, Path(tmp) / "server.log")
            try:
                asyncio.run(over_http(server, args, naive))
            finally:
                server.stop()
        logging.shutdown()
    print(f"loadavg(after)={load()}")
    return 0


def load() -> str:
    """Other processes share the cores: a busy machine blurs wall figures."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
