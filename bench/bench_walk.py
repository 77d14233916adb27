"""Walking all 1,000,000 orders over streamable HTTP, page by page (issue 12 items 1 and 4).

    . .ci/postgres.sh start && eval "$(bash .ci/postgres.sh env)"     # optional, for PostgreSQL
    python -m bench.bench_walk [--engines duckdb,sqlite,postgres] [--modes offset,snapshot]
                               [--offset-pages 20] [--pages 0] [--drop-pg-schema]

The data is bench_http's: 1,000,000 demo orders with the customer's country (7 columns), as a
DuckDB file and a SQLite file under `<cache dir>/bench/`, and in schema `bench` of the
PostgreSQL database named by WELLHEAD_TEST_PG_ADMIN_DSN (`--drop-pg-schema` drops it after).

For each engine and mode a `wellhead serve --transport http` subprocess serves the source with
the default limits; the client walks `SELECT * FROM orders` with the largest page a call may
ask for (max_rows 2,000, budget_bytes 262,144), following next_cursor to the end, and checks
that the walk returned order_id 1..1,000,000 exactly once, in order. Modes:

- `offset`: `snapshots.enabled: false`, main's path (every page re-runs the ordered statement
  with a growing OFFSET). The walk stops after `--offset-pages` pages (20; 0: to the end, which
  takes many minutes), and page 400 is asked directly three times with a cursor for offset
  798,000 signed with the server's secret (the bench sets `cursor.secret`);
- `snapshot`: the default, the first page spills the result once and pages read the snapshot;
  the walk goes to the end and page 400 is the median of pages 399-401.

The client is a minimal JSON-RPC client over HTTP (httpx, the handshake era with a session id):
it parses each response but does not re-validate the rows against the tool's output schema, as
fastmcp.Client does in pure-Python jsonschema (about 20 ms a 2,000-row page, see
docs/benchmarks.md); the figures are the server and the transport. Printed per engine and mode:
pages, rows, seconds, rows/s, page 1, the median page after it and page 400 in milliseconds,
p400/p1, the server's CPU seconds for the walk (user + system, all threads) and rows per CPU
second, its RSS peak, and the 1-minute load average when the walk began (the machine is
shared: wall-clock figures move with it, CPU seconds much less).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("FASTMCP_CHECK_FOR_UPDATES", "off")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench._server import ServerSubprocess, free_port  # noqa: E402
from bench.bench_http import (  # noqa: E402
    PG_SCHEMA,
    build_duckdb,
    build_sqlite,
    engines,
    wellhead_command,
)
from wellhead.demo.build import DEMO_COUNTS, ensure_demo_database  # noqa: E402
from wellhead.sql.paging import CursorCodec  # noqa: E402

SQL = "SELECT * FROM orders"
PAGE = {"max_rows": 2_000, "budget_bytes": 262_144}
PROTOCOL = "2025-06-18"
SECRET = "bench-walk-cursor-secret-0123456789"


class McpHttp:
    """The smallest honest MCP client: initialize, initialized, tools/call over one session."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(timeout=120)
        self.session: str | None = None
        self.ids = 0
        self.rpc(
            "initialize",
            {
                "protocolVersion": PROTOCOL,
                "capabilities": {},
                "clientInfo": {"name": "bench-walk", "version": "1"},
            },
        )
        self.notify("notifications/initialized")

    def _headers(self) -> dict[str, str]:
        headers = {
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
            "mcp-protocol-version": PROTOCOL,
        }
        if self.session:
            headers["mcp-session-id"] = self.session
        return headers

    def notify(self, method: str) -> None:
        body = {"jsonrpc": "2.0", "method": method}
        self.http.post(self.url, json=body, headers=self._headers()).raise_for_status()

    def rpc(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.ids += 1
        body = {"jsonrpc": "2.0", "id": self.ids, "method": method, "params": params}
        response = self.http.post(self.url, json=body, headers=self._headers())
        response.raise_for_status()
        self.session = response.headers.get("mcp-session-id", self.session)
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            message = None
            for line in response.text.splitlines():
                if line.startswith("data:"):
                    candidate = json.loads(line[5:])
                    if candidate.get("id") == self.ids:
                        message = candidate
            if message is None:
                raise RuntimeError(f"no response to {method} in the event stream")
        else:
            message = response.json()
        if "error" in message:
            raise RuntimeError(f"{method}: {message['error']}")
        return dict(message["result"])

    def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        result = self.rpc("tools/call", {"name": name, "arguments": arguments})
        if result.get("isError"):
            raise RuntimeError(f"tool error: {result['content'][0]['text'][:500]}")
        return dict(result["structuredContent"])

    def close(self) -> None:
        self.http.close()


@dataclass
class Walk:
    pages: int = 0
    rows: int = 0
    seconds: float = 0.0
    exact: bool = True
    complete: bool = False
    page_ms: list[float] = field(default_factory=list)
    cursors: list[str] = field(default_factory=list)


def walk(client: McpHttp, limit: int) -> Walk:
    """Follow next_cursor from the first page (to the end, or for `limit` pages)."""
    done = Walk()
    expected = 1
    arguments: dict[str, Any] = {"sql": SQL, **PAGE}
    while True:
        started = time.perf_counter()
        page = client.call("query", arguments)
        elapsed = time.perf_counter() - started
        done.seconds += elapsed
        done.page_ms.append(elapsed * 1000)
        done.pages += 1
        ids = [row[0] for row in page["rows"]]
        done.exact &= ids == list(range(expected, expected + len(ids)))
        expected += len(ids)
        done.rows += len(ids)
        cursor = page.get("next_cursor")
        if not cursor:
            done.complete = True
            done.exact &= done.rows == DEMO_COUNTS["orders"]
            break
        done.cursors.append(cursor)
        if limit and done.pages >= limit:
            break
        arguments = {"cursor": cursor, **PAGE}
    return done


def timed_page(client: McpHttp, cursor: str, offset: int) -> float:
    """Milliseconds for the page at `offset`, asked with a cursor signed like the server's
    own (same secret): page 400 of an OFFSET walk without walking 399 pages first."""
    codec = CursorCodec(SECRET.encode())
    state = replace(codec.decode(cursor), offset=offset)
    started = time.perf_counter()
    page = client.call("query", {"cursor": codec.encode(state), **PAGE})
    elapsed = (time.perf_counter() - started) * 1000
    assert page["rows"][0][0] == offset + 1, "page 400 does not start where it should"
    return elapsed


def server_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def serve(engine: Any, mode: str, run_dir: Path) -> ServerSubprocess:
    port = free_port()
    config = run_dir / f"{engine.name}-{mode}.yaml"
    settings: dict[str, Any] = {
        "server": {"transport": "http", "port": port},
        "sources": {engine.name: engine.wellhead_source},
        "cursor": {"secret": SECRET},
        "plugin_entry_points": False,
        "snapshots": {"enabled": mode == "snapshot", "dir": str(run_dir / "snapshots")},
    }
    config.write_text(json.dumps(settings, indent=2))  # JSON is YAML
    args = [*wellhead_command(), "serve", "--config", str(config)]
    return ServerSubprocess(args, port, run_dir / f"{engine.name}-{mode}.log", "/readyz")


def run(engine: Any, mode: str, run_dir: Path, args: argparse.Namespace) -> None:
    server = serve(engine, mode, run_dir)
    try:
        client = McpHttp(server.url + "/mcp")
        cpu = server_cpu_s(server.process.pid)
        load = os.getloadavg()[0]
        if mode == "offset":
            done = walk(client, args.offset_pages)
            deep = [timed_page(client, done.cursors[0], 399 * PAGE["max_rows"]) for _ in range(3)]
            p400 = statistics.median(deep)
        else:
            done = walk(client, args.pages)
            p400 = statistics.median(done.page_ms[398:401]) if done.pages > 400 else float("nan")
        cpu = server_cpu_s(server.process.pid) - cpu
        rss = rss_peak_mib(server.process.pid)
        client.close()
    finally:
        server.stop()
    p1 = done.page_ms[0]
    steady = statistics.median(done.page_ms[1:]) if done.pages > 1 else float("nan")
    exact = "yes" if done.exact else "NO"
    if not done.complete:
        exact += f" ({done.pages} pages)"
    print(
        f"{engine.name:<9} {mode:<9} {done.pages:>5} {done.rows:>9,} {done.seconds:>7.1f} "
        f"{done.rows / done.seconds:>8,.0f} {p1:>8.1f} {steady:>8.1f} {p400:>8.1f} "
        f"{p400 / p1:>7.2f} {cpu:>6.1f} {done.rows / max(cpu, 1e-9):>9,.0f} {rss:>7.0f} "
        f"{load:>5.1f} {exact}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engines", default="duckdb,sqlite,postgres")
    parser.add_argument("--modes", default="offset,snapshot")
    parser.add_argument("--offset-pages", type=int, default=20, help="0: walk to the end")
    parser.add_argument("--pages", type=int, default=0, help="snapshot mode; 0: to the end")
    parser.add_argument("--drop-pg-schema", action="store_true")
    args = parser.parse_args()

    demo = ensure_demo_database()
    duckdb_path = build_duckdb(demo)
    sqlite_path = build_sqlite(duckdb_path)
    chosen = engines(args.engines.split(","), sqlite_path, duckdb_path)
    print(
        f"{'engine':<9} {'mode':<9} {'pages':>5} {'rows':>9} {'s':>7} {'rows/s':>8} "
        f"{'p1 ms':>8} {'page ms':>8} {'p400 ms':>8} {'p400/p1':>7} {'CPU s':>6} "
        f"{'rows/CPU s':>9} {'RSS MiB':>7} {'load':>5} exact"
    )
    try:
        with tempfile.TemporaryDirectory(prefix="wellhead-bench-walk-") as tmp:
            for engine in chosen:
                for mode in args.modes.split(","):
                    run(engine, mode, Path(tmp), args)
    finally:
        if args.drop_pg_schema:
            drop_pg_schema()
    return 0


def drop_pg_schema() -> None:
    import asyncio

    import asyncpg

    admin = os.environ.get("WELLHEAD_TEST_PG_ADMIN_DSN")
    if not admin:
        return

    async def run() -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE")
        finally:
            await conn.close()

    asyncio.run(run())


if __name__ == "__main__":
    raise SystemExit(main())
