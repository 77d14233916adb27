"""wellhead against a bare FastMCP server over streamable HTTP, driven by wrk (issue 10 part 6).

    . .ci/postgres.sh start && eval "$(bash .ci/postgres.sh env)"     # optional, for PostgreSQL
    python -m bench.bench_http [--quick] [--duration 6] [--engines sqlite,duckdb,postgres]
                               [--connections 1,10,50] [--workloads lookup,aggregate,list_tables]
                               [--no-workers]

Both servers serve the same data: 1,000,000 demo orders (wellhead/demo) with the customer's
country copied onto each order, built once into `<cache dir>/bench/` as a SQLite file and a
DuckDB file, and loaded into schema `bench` of the PostgreSQL test database when the
WELLHEAD_TEST_PG_* variables are set (`.ci/postgres.sh env`).

- wellhead: `wellhead serve --transport http --stateless --config <generated yaml>` with the
  full chassis (JSON log lines to a file, metrics, output validation, result budgets: defaults);
- bare: `bench/bare_server.py`, FastMCP 4.1.2 stateless with JSON responses, an async
  `query(sql)` running the engine's driver in a worker thread, `list_tables()`.

Each server is pinned to core 0 and wrk (one thread, `bench/lua/mcp_call.lua`) to core 1. Every
response is checked (HTTP 200, JSON-RPC result, not a tool error); any bad one fails the run.
Printed per engine, workload and connection count: calls/s, p50 and p99 of each server and the
ratios wellhead/bare. Then wellhead `--workers 2` against 1 worker, if the flag exists (both
unpinned: the servers get both cores and wrk shares them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("FASTMCP_CHECK_FOR_UPDATES", "off")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402

from bench._server import ServerSubprocess, free_port  # noqa: E402
from wellhead.demo.build import (  # noqa: E402
    DEMO_COUNTS,
    DEMO_SCHEMA_VERSION,
    demo_cache_dir,
    ensure_demo_database,
)

BENCH_DATA_VERSION = 2
LUA = ROOT / "bench" / "lua" / "mcp_call.lua"
PG_SCHEMA = "bench"
PG_MARKER = f"wellhead-bench:v{BENCH_DATA_VERSION}:demo-v{DEMO_SCHEMA_VERSION}"
CUSTOMERS = DEMO_COUNTS["customers"]

# The same SQL text for both servers and all three engines.
WORKLOADS: dict[str, tuple[str, str]] = {
    # ~20 rows: 1,000,000 orders over 50,000 customers; `{id}` is drawn per request in Lua.
    "lookup": ("query", "SELECT * FROM orders WHERE customer_id = {id}"),
    "aggregate": (
        "query",
        "SELECT status, count(*), sum(total) FROM orders WHERE country = 'DE' GROUP BY status",
    ),
    "list_tables": ("list_tables", ""),
}

ORDERS_SELECT = """
SELECT o.order_id, o.customer_id, o.ordered_at, o.status, o.total, o.channel, c.country
FROM demo.orders o JOIN demo.customers c USING (customer_id) ORDER BY o.order_id
"""


# --------------------------------------------------------------------------------------- data


def bench_dir() -> Path:
    path = demo_cache_dir() / "bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _stem() -> str:
    return f"orders-v{BENCH_DATA_VERSION}-demo-v{DEMO_SCHEMA_VERSION}"


def build_duckdb(demo: Path) -> Path:
    final = bench_dir() / f"{_stem()}.duckdb"
    if final.is_file():
        return final
    print(f"building {final} from {demo} ...", flush=True)
    tmp = final.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    try:
        con.execute(f"ATTACH '{demo}' AS demo (READ_ONLY)")
        con.execute("CREATE TABLE customers AS SELECT * FROM demo.customers ORDER BY customer_id")
        con.execute(f"CREATE TABLE orders AS {ORDERS_SELECT}")
        con.execute("ALTER TABLE customers ADD PRIMARY KEY (customer_id)")
        con.execute("ALTER TABLE orders ADD PRIMARY KEY (order_id)")
        con.execute("CREATE INDEX orders_customer ON orders (customer_id)")
        con.execute("DETACH demo")
        con.execute("CHECKPOINT")
    finally:
        con.close()
    tmp.rename(final)
    return final


def build_sqlite(source: Path) -> Path:
    final = bench_dir() / f"{_stem()}.sqlite"
    if final.is_file():
        return final
    print(f"building {final} ...", flush=True)
    tmp = final.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    src = duckdb.connect(str(source), read_only=True)
    dst = sqlite3.connect(tmp)
    try:
        dst.executescript(
            """
            PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
            CREATE TABLE customers (
                customer_id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL,
                country TEXT NOT NULL, region TEXT NOT NULL, signup_date TEXT NOT NULL,
                segment TEXT NOT NULL);
            CREATE TABLE orders (
                order_id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL,
                ordered_at TEXT NOT NULL, status TEXT NOT NULL, total REAL NOT NULL,
                channel TEXT NOT NULL, country TEXT NOT NULL);
            """
        )
        for table, sql, marks in (
            (
                "customers",
                "SELECT customer_id, name, email, country, region, CAST(signup_date AS VARCHAR),"
                " segment FROM customers ORDER BY customer_id",
                7,
            ),
            (
                "orders",
                "SELECT order_id, customer_id, strftime(ordered_at, '%Y-%m-%d %H:%M:%S'), status,"
                " CAST(total AS DOUBLE), channel, country FROM orders ORDER BY order_id",
                7,
            ),
        ):
            cur = src.execute(sql)
            insert = f"INSERT INTO {table} VALUES ({', '.join('?' * marks)})"
            while batch := cur.fetchmany(100_000):
                dst.executemany(insert, batch)
        dst.execute("CREATE INDEX orders_customer ON orders (customer_id)")
        # Covers the aggregate (an index range over the ~8% of orders from DE, like PostgreSQL's
        # index-only scan); without it each call is a 200 ms scan of the whole table.
        dst.execute("CREATE INDEX orders_country ON orders (country, status, total)")
        dst.execute("ANALYZE")
        dst.commit()
    finally:
        dst.close()
        src.close()
    tmp.rename(final)
    return final


def load_postgres(source: Path, admin_dsn: str) -> None:
    """Orders and customers into schema `bench`, readable by the read-only test role."""
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            marker = await conn.fetchval(
                "SELECT obj_description(to_regclass($1), 'pg_class')", f"{PG_SCHEMA}.orders"
            )
            if marker == PG_MARKER:
                return
            print(f"loading the orders into PostgreSQL schema {PG_SCHEMA} ...", flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                files = {}
                src = duckdb.connect(str(source), read_only=True)
                try:
                    for table in ("customers", "orders"):
                        files[table] = Path(tmp) / f"{table}.csv"
                        src.execute(
                            f"COPY (SELECT * FROM {table} ORDER BY 1) TO '{files[table]}'"
                            " (HEADER false)"
                        )
                finally:
                    src.close()
                async with conn.transaction():
                    await conn.execute(
                        f"""
                        SET client_min_messages = warning;
                        DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE;
                        CREATE SCHEMA {PG_SCHEMA};
                        CREATE TABLE {PG_SCHEMA}.customers (
                            customer_id integer PRIMARY KEY, name text NOT NULL,
                            email text NOT NULL, country text NOT NULL, region text NOT NULL,
                            signup_date date NOT NULL, segment text NOT NULL);
                        CREATE TABLE {PG_SCHEMA}.orders (
                            order_id bigint PRIMARY KEY, customer_id integer NOT NULL,
                            ordered_at timestamp NOT NULL, status text NOT NULL,
                            total numeric(12, 2) NOT NULL, channel text NOT NULL,
                            country text NOT NULL);
                        """
                    )
                    for table, path in files.items():
                        await conn.copy_to_table(
                            table, schema_name=PG_SCHEMA, source=path, format="csv"
                        )
                    await conn.execute(
                        f"""
                        CREATE INDEX orders_customer ON {PG_SCHEMA}.orders (customer_id);
                        CREATE INDEX orders_country
                            ON {PG_SCHEMA}.orders (country, status, total);
                        GRANT USAGE ON SCHEMA {PG_SCHEMA} TO wellhead_ro;
                        GRANT SELECT ON ALL TABLES IN SCHEMA {PG_SCHEMA} TO wellhead_ro;
                        COMMENT ON TABLE {PG_SCHEMA}.orders IS '{PG_MARKER}';
                        """
                    )
            # VACUUM sets the visibility map, so the aggregate can be an index-only scan.
            await conn.execute(f"VACUUM ANALYZE {PG_SCHEMA}.orders")
            await conn.execute(f"VACUUM ANALYZE {PG_SCHEMA}.customers")
        finally:
            await conn.close()

    asyncio.run(run())


# ------------------------------------------------------------------------------------ servers


@dataclass
class Engine:
    name: str
    wellhead_source: dict
    bare_args: list[str]


def engines(wanted: list[str], sqlite_path: Path, duckdb_path: Path) -> list[Engine]:
    out = []
    for name in wanted:
        if name == "sqlite":
            out.append(
                Engine(
                    "sqlite",
                    {"kind": "sqlite", "path": str(sqlite_path)},
                    ["--engine", "sqlite", "--path", str(sqlite_path)],
                )
            )
        elif name == "duckdb":
            out.append(
                Engine(
                    "duckdb",
                    {"kind": "duckdb", "path": str(duckdb_path)},
                    ["--engine", "duckdb", "--path", str(duckdb_path)],
                )
            )
        elif name == "postgres":
            dsn = os.environ.get("WELLHEAD_TEST_PG_DSN")
            admin = os.environ.get("WELLHEAD_TEST_PG_ADMIN_DSN")
            if not dsn or not admin:
                print(
                    "postgres: skipped (WELLHEAD_TEST_PG_DSN / _ADMIN_DSN unset; run "
                    '`bash .ci/postgres.sh start && eval "$(bash .ci/postgres.sh env)"`)'
                )
                continue
            load_postgres(duckdb_path, admin)
            # Unqualified `orders` must mean bench.orders on both servers (the test database has
            # a public.orders of its own): asyncpg passes unknown DSN parameters as settings.
            dsn += ("&" if "?" in dsn else "?") + f"search_path={PG_SCHEMA}"
            out.append(
                Engine(
                    "postgres",
                    {"kind": "postgres", "dsn": dsn, "schemas": [PG_SCHEMA]},
                    ["--engine", "postgres", "--dsn", dsn, "--schema", PG_SCHEMA],
                )
            )
        else:
            raise SystemExit(f"unknown engine {name!r}: choose from sqlite, duckdb, postgres")
    return out


def wellhead_command() -> list[str]:
    script = Path(sys.executable).parent / "wellhead"
    return [str(script)] if script.exists() else [sys.executable, "-m", "wellhead"]


def has_workers_flag() -> bool:
    out = subprocess.run(
        [*wellhead_command(), "serve", "--help"], capture_output=True, text=True, check=False
    )
    return "--workers" in out.stdout


def taskset(cores: str | None) -> list[str]:
    return ["taskset", "-c", cores] if cores else []


class Server:
    """One server process; `kind` is `wellhead` or `bare`."""

    def __init__(
        self,
        kind: str,
        engine: Engine,
        run_dir: Path,
        cores: str | None,
        workers: int = 1,
        redis_url: str | None = None,
    ) -> None:
        self.kind = kind
        port = free_port()
        tag = f"{kind}-{engine.name}" + ("" if cores else f"-unpinned-w{workers}")
        self.log = run_dir / f"{tag}.stderr.log"
        if kind == "wellhead":
            config = run_dir / f"{tag}.yaml"
            extra: dict = {}
            if redis_url:  # what several workers need: shared state, one cursor key
                extra = {
                    "state": {"backend": "redis", "redis_url": redis_url},
                    "cursor": {"secret": "bench-http-cursor-secret-0123456789"},
                }
            config.write_text(
                json.dumps(  # JSON is YAML
                    {
                        "server": {"transport": "http", "port": port, "stateless": True},
                        "sources": {engine.name: engine.wellhead_source},
                        "logging": {"level": "INFO"},
                        "metrics": {"enabled": True},
                        "plugin_entry_points": False,
                        **extra,
                    },
                    indent=2,
                )
            )
            args = [*wellhead_command(), "serve", "--transport", "http", "--stateless"]
            args += ["--config", str(config), "--port", str(port)]
            if workers > 1:
                args += ["--workers", str(workers)]
            ready = "/readyz"
        else:
            args = [sys.executable, "-m", "bench.bare_server", *engine.bare_args]
            args += ["--port", str(port)]
            ready = "/"
        self.proc = ServerSubprocess([*taskset(cores), *args], port, self.log, ready)
        self.url = self.proc.url

    def tool_call_lines(self) -> int:
        with self.log.open("rb") as fh:
            return sum(1 for line in fh if b'"tool_call"' in line)

    def stop(self) -> None:
        self.proc.stop()


# ---------------------------------------------------------------------------------------- wrk


@dataclass
class Result:
    calls_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    sse: int


class BadResponses(RuntimeError):
    pass


def wrk(
    url: str,
    workload: str,
    connections: int,
    seconds: float,
    cores: str | None,
    warmup: bool = False,
) -> Result:
    tool, sql = WORKLOADS[workload]
    args = [*taskset(cores), "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    args += ["--timeout", "30s", "-s", str(LUA), url, "--", "/mcp", tool, sql, str(CUSTOMERS)]
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKRESULT ")), None)
    if out.returncode != 0 or line is None:
        raise BadResponses(f"wrk failed ({out.returncode}): {out.stdout[-1500:]}{out.stderr}")
    r = json.loads(line[len("WRKRESULT ") :], strict=False)
    bad = {
        k: r[k]
        for k in (
            "bad_status",
            "rpc_error",
            "tool_error",
            "unparsed",
            "connect_errors",
            "read_errors",
            "write_errors",
            "timeouts",
            "status_errors",
        )
        if r[k]
    }
    if bad or (r["ok"] == 0 and not warmup):
        raise BadResponses(
            f"{url} {workload} c={connections}: {r['ok']} ok, errors {bad}; first bad response: "
            f"{r['first_bad']}"
        )
    return Result(
        calls_s=r["ok"] / (r["duration_us"] / 1e6),
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        requests=r["requests"],
        sse=r["sse"],
    )


# ------------------------------------------------------------------------------------- report


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def header() -> None:
    print(
        "| engine | workload | conns | bare calls/s | p50 ms | p99 ms "
        "| wellhead calls/s | p50 ms | p99 ms | ratio calls/s | ratio p99 |"
    )
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")


def row(engine: str, workload: str, conns: int, bare: Result, well: Result) -> None:
    print(
        f"| {engine} | {workload} | {conns} | {bare.calls_s:.0f} | {bare.p50_ms:.1f} "
        f"| {bare.p99_ms:.1f} | {well.calls_s:.0f} | {well.p50_ms:.1f} | {well.p99_ms:.1f} "
        f"| {well.calls_s / bare.calls_s:.2f}x | {well.p99_ms / bare.p99_ms:.2f}x |",
        flush=True,
    )


def machine() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"nproc={os.cpu_count()} cpu={model!r}"


def git_head() -> str:
    out = subprocess.run(
        ["git", "log", "-1", "--format=%h %cI %s"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip()[:100]


# --------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s, 1 and 10 conns")
    parser.add_argument("--duration", type=float, help="seconds per measurement (default 6)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per server and workload")
    parser.add_argument("--engines", default="sqlite,duckdb,postgres")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--connections", help="comma-separated (default 1,10,50)")
    parser.add_argument("--no-workers", action="store_true", help="skip --workers 2 vs 1")
    args = parser.parse_args()
    duration = args.duration or (2.0 if args.quick else 6.0)
    warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    conns = [int(c) for c in (args.connections or ("1,10" if args.quick else "1,10,50")).split(",")]
    workloads = [w for w in args.workloads.split(",") if w]
    for w in workloads:
        if w not in WORKLOADS:
            raise SystemExit(f"unknown workload {w!r}: choose from {', '.join(WORKLOADS)}")
    if not shutil.which("wrk") or not shutil.which("taskset"):
        raise SystemExit("needs wrk and taskset: apt-get install -y wrk util-linux")
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs two cores: the server on core 0, wrk on core 1")

    print(f"bench_http: {machine()} duckdb={duckdb.__version__} git={git_head()!r}")
    print(f"duration={duration:g}s warmup={warmup:g}s connections={conns} loadavg={load()}")
    demo = ensure_demo_database()
    duck = build_duckdb(demo)
    lite = build_sqlite(duck)
    run_dir = bench_dir() / time.strftime("run-%Y%m%dT%H%M%S")
    run_dir.mkdir()
    print(f"data: {lite.name}, {duck.name}; server logs and configs: {run_dir}")
    print("servers pinned to core 0, wrk (1 thread) to core 1; ratio = wellhead / bare\n")

    failures = 0
    selected = engines([e for e in args.engines.split(",") if e], lite, duck)
    header()
    for engine in selected:
        servers = {k: Server(k, engine, run_dir, "0") for k in ("bare", "wellhead")}
        sent = 0
        try:
            for workload in workloads:
                if warmup > 0:
                    for srv in servers.values():
                        done = wrk(srv.url, workload, 10, warmup, "1", warmup=True).requests
                        sent += done if srv.kind == "wellhead" else 0
                for c in conns:
                    res = {}
                    for kind, srv in servers.items():
                        res[kind] = wrk(srv.url, workload, c, duration, "1")
                    sent += res["wellhead"].requests
                    row(engine.name, workload, c, res["bare"], res["wellhead"])
                    for kind, r in res.items():
                        if r.sse:
                            print(f"  ({kind}: {r.sse} of {r.requests} responses were SSE)")
        except BadResponses as exc:
            failures += 1
            print(f"FAILED {engine.name}: {exc}", flush=True)
        finally:
            for srv in servers.values():
                srv.stop()
        lines = servers["wellhead"].tool_call_lines()
        if lines < sent:
            print(f"  WARNING {engine.name}: {lines} tool_call log lines for {sent} calls")
    print(f"\nloadavg={load()}")

    if not args.no_workers:
        print("\nwellhead --workers 2 against 1 worker (sqlite)")
        if not has_workers_flag():
            print("  skipped: `wellhead serve --help` has no --workers flag on this checkout")
        elif not any(e.name == "sqlite" for e in selected):
            print("  skipped: needs the sqlite engine")
        elif not os.environ.get("WELLHEAD_TEST_REDIS_URL"):
            print(
                "  skipped: several workers need Redis state; run `bash .ci/redis.sh start &&"
                ' eval "$(bash .ci/redis.sh env)"`'
            )
        else:
            redis_url = os.environ["WELLHEAD_TEST_REDIS_URL"]
            print(
                "  nothing pinned: the server processes get both cores and wrk shares them,"
                " so wrk's own CPU is taken from the servers; both runs with state in Redis"
                " and a fixed cursor secret (required by --workers 2)"
            )
            engine = next(e for e in selected if e.name == "sqlite")
            print(
                "| workload | conns | 1 worker calls/s | p99 ms "
                "| 2 workers calls/s | p99 ms | ratio |"
            )
            print("|---|--:|--:|--:|--:|--:|--:|")
            for workload in [w for w in workloads if w != "list_tables"] or workloads:
                res = {}
                try:
                    for workers in (1, 2):
                        srv = Server(
                            "wellhead", engine, run_dir, None, workers=workers, redis_url=redis_url
                        )
                        try:
                            if warmup > 0:
                                wrk(srv.url, workload, 10, warmup, None, warmup=True)
                            res[workers] = {
                                c: wrk(srv.url, workload, c, duration, None) for c in conns if c > 1
                            }
                        finally:
                            srv.stop()
                except BadResponses as exc:
                    failures += 1
                    print(f"FAILED workers {workload}: {exc}", flush=True)
                    continue
                for c, one in res[1].items():
                    two = res[2][c]
                    print(
                        f"| {workload} | {c} | {one.calls_s:.0f} | {one.p99_ms:.1f} "
                        f"| {two.calls_s:.0f} | {two.p99_ms:.1f} "
                        f"| {two.calls_s / one.calls_s:.2f}x |",
                        flush=True,
                    )
    print(f"\nloadavg(after)={load()}")
    if failures:
        print(f"{failures} part(s) FAILED: see above")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
