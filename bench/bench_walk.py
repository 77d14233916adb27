"""Walking all 1,000,000 orders over streamable HTTP, page by page (issue 12 items 1 and 4).

    . .ci/postgres.sh start && eval "$(bash .ci/postgres.sh env)"     # optional, for PostgreSQL
    python -m bench.bench_walk [--engines duckdb,sqlite,postgres] [--modes offset,snapshot]
                               [--offset-pages 0] [--pages 0]

The data is bench_http's: 1,000,000 demo orders with the customer's country (7 columns), as a
DuckDB file and a SQLite file under `<cache dir>/bench/`, and in schema `bench` of the
PostgreSQL database named by WELLHEAD_TEST_PG_ADMIN_DSN (`--drop-pg-schema` drops it after).

For each engine and mode a `wellhead serve --transport http` subprocess serves the source with
the default limits; the client walks `SELECT * FROM orders` with the largest page a call may
ask for (max_rows 2,000, budget_bytes 262,144), following next_cursor to the end, and checks
that the walk returned order_id 1..1,000,000 exactly once, in order. Modes:

- `offset`: `snapshots.enabled: false`, main's path (every page re-runs the ordered statement
  with a growing OFFSET); `--offset-pages N` stops it after N pages (it is quadratic);
- `snapshot`: the default, the first page spills the result once and pages read the snapshot.

The client is a minimal JSON-RPC client over HTTP (httpx, the handshake era with a session id):
it parses each response but does not re-validate the rows against the tool's output schema, as
fastmcp.Client does in pure-Python jsonschema (about 20 ms a 2,000-row page, see
docs/benchmarks.md); the figures are the server and the transport. Printed per engine and mode:
pages, rows, seconds, rows/s, page 1 and page 400 (median of pages 399-401) in milliseconds and
their ratio, and the server's RSS peak.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
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

SQL = "SELECT * FROM orders"
PAGE = {"max_rows": 2_000, "budget_bytes": 262_144}
PROTOCOL = "2025-06-18"


class McpHttp:
    """The smallest honest MCP client: initialize, initialized, tools/call over one session."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(timeout=120)
        self.session: str | None = None
        self.ids = 0
        self.rpc("initialize", {
            "protocolVersion": PROTOCOL,
            "capabilities": {},
            "clientInfo": {"name": "bench-walk", "version": "1"},
        })
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


def walk(client: McpHttp, limit: int) -> Walk:
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
        if limit and done.pages >= limit:
            break
        arguments = {"cursor": cursor, **PAGE}
    return done


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
        "plugin_entry_points": False,
    }
    if mode == "offset":
        settings["snapshots"] = {"enabled": False}
    else:
        settings["snapshots"] = {"dir": str(run_dir / "snapshots")}
    config.write_text(json.dumps(settings, indent=2))  # JSON is YAML
    args = [*wellhead_command(), "serve", "--config", str(config)]
    return ServerSubprocess(args, port, run_dir / f"{engine.name}-{mode}.log", "/readyz")


def page_400(page_ms: list[float]) -> float | None:
    if len(page_ms) < 401:
        return None
    return statistics.median(page_ms[398:401])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engines", default="duckdb,sqlite,postgres")
    parser.add_argument("--modes", default="offset,snapshot")
    parser.add_argument("--offset-pages", type=int, default=0, help="0: walk to the end")
    parser.add_argument("--pages", type=int, default=0, help="snapshot mode; 0: to the end")
    parser.add_argument("--drop-pg-schema", action="store_true")
    args = parser.parse_args()

    demo = ensure_demo_database()
    duckdb_path = build_duckdb(demo)
    sqlite_path = build_sqlite(duckdb_path)
    chosen = engines(args.engines.split(","), sqlite_path, duckdb_path)
    print(f"{'engine':<9} {'mode':<9} {'pages':>5} {'rows':>9} {'s':>7} {'rows/s':>8} "
          f"{'p1 ms':>7} {'p400 ms':>8} {'p400/p1':>7} {'RSS MiB':>8} exact")
    try:
        with tempfile.TemporaryDirectory(prefix="wellhead-bench-walk-") as tmp:
            for engine in chosen:
                for mode in args.modes.split(","):
                    server = serve(engine, mode, Path(tmp))
                    try:
                        client = McpHttp(server.url + "/mcp")
                        limit = args.offset_pages if mode == "offset" else args.pages
                        done = walk(client, limit)
                        client.close()
                        rss = rss_peak_mib(server.process.pid)
                    finally:
                        server.stop()
                    p1 = done.page_ms[0]
                    p400 = page_400(done.page_ms)
                    ratio = f"{p400 / p1:7.2f}" if p400 is not None else "      -"
                    p400s = f"{p400:8.1f}" if p400 is not None else "       -"
                    exact = "yes" if done.exact else "NO"
                    if not done.complete:
                        exact += f" (stopped after {done.pages} pages)"
                    print(
                        f"{engine.name:<9} {mode:<9} {done.pages:>5} {done.rows:>9,} "
                        f"{done.seconds:>7.1f} {done.rows / done.seconds:>8,.0f} {p1:>7.1f} "
                        f"{p400s} {ratio} {rss:>8.0f} {exact}",
                        flush=True,
                    )
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
