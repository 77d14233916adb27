"""What column policies cost per query: none configured, configured on another table, and on
the table queried (masking projection + qualify).

    python bench/bench_policies.py [--calls 400] [--engine duckdb|sqlite]

Builds a small people table (10,000 rows, 7 columns) in a temp dir and runs statements through
`QueryExecutor.run` (the path every tool takes, without MCP around it) under three configs:

  * baseline: no `column_policies` at all;
  * elsewhere: policies on another table of the same source (the query reads none of them);
  * policed: policies (deny, hash, partial, redact, null) on the table the query reads.

For each it prints medians in microseconds, with the ratio to the baseline of the same run:
the CPU of compiling a statement cold (a new SQL text: check, policy rewrite, page templates)
and warm (the compiled-statement cache answers), and the wall time of a whole call, cold and
warm, for a point lookup (the engine's share small, so the policy layer's share shows).
Figures, not tests: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("FASTMCP_CHECK_FOR_UPDATES", "off")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402

from wellhead.app import build_runtime  # noqa: E402
from wellhead.config import parse_settings  # noqa: E402
from wellhead.sql.executor import PageRequest  # noqa: E402

DDL = [
    "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, city TEXT, ssn TEXT, "
    "email TEXT, phone TEXT, salary INTEGER)",
    "CREATE TABLE other (id INTEGER PRIMARY KEY, secret TEXT)",
]
POLICED = {
    "ssn": "deny",
    "email": "hash",
    "phone": {"policy": "partial", "keep": 4},
    "name": "redact",
    "salary": "null",
}
CONFIGS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "elsewhere": {"other": {"secret": "deny"}},
    "policed": {"people": POLICED},
}
SQL = "SELECT id, city, email, phone FROM people WHERE id = {i}"
"""A point lookup: the engine's share is small, so the policy layer's share shows."""


def build(engine: str, directory: Path) -> Path:
    rows = [
        (i, f"name{i}", f"city{i % 20}", f"{i:03d}-00-0000", f"u{i}@x.org", f"+1 555 {i:06d}", i)
        for i in range(10_000)
    ]
    if engine == "duckdb":
        path = directory / "people.duckdb"
        con = duckdb.connect(str(path))
        for ddl in DDL:
            con.execute(ddl)
        con.executemany("INSERT INTO people VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        con.close()
    else:
        path = directory / "people.sqlite"
        lite = sqlite3.connect(path)
        for ddl in DDL:
            lite.execute(ddl)
        lite.executemany("INSERT INTO people VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        lite.commit()
        lite.close()
    return path


async def runtimes(engine: str, path: Path) -> dict[str, Any]:
    out = {}
    for name, policies in CONFIGS.items():
        copy = path.with_name(f"{name}-{path.name}")  # DuckDB: one configuration per file
        shutil.copy(path, copy)
        settings = parse_settings(
            {
                "sources": {"s": {"kind": engine, "path": str(copy)}},
                "column_policies": {"s": policies} if policies else {},
            }
        )
        runtime = build_runtime(settings)
        await runtime.sources["s"].start()
        await runtime.executor.compile(runtime.sources["s"], SQL.format(i=-1), {})  # catalog
        out[name] = runtime
    return out


async def measure(engine: str, path: Path, calls: int) -> dict[str, list[float]]:
    """Median [compile cold, compile warm, call cold, call warm] in microseconds per config.
    Configs take turns call by call, so a busy machine slows them alike; compile is the
    thread's CPU time (pure Python on the event loop)."""
    running = await runtimes(engine, path)
    figures: dict[str, list[list[float]]] = {name: [[], [], [], []] for name in running}
    try:
        for i in range(calls):
            for name, runtime in running.items():
                source, executor, sql = runtime.sources["s"], runtime.executor, SQL.format(i=i)
                for slot in (0, 1):
                    started = time.thread_time()
                    await executor.compile(source, sql, {})
                    figures[name][slot].append(time.thread_time() - started)
        for i in range(calls):
            for name, runtime in running.items():
                sql = SQL.format(i=calls + i)
                for slot in (2, 3):
                    started = time.perf_counter()
                    await runtime.executor.run(
                        PageRequest(tool="bench", source="s", sql=sql, params={})
                    )
                    figures[name][slot].append(time.perf_counter() - started)
    finally:
        for runtime in running.values():
            await runtime.sources["s"].close()
    return {name: [statistics.median(f) * 1e6 for f in rows] for name, rows in figures.items()}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--engine", choices=["duckdb", "sqlite"], default="duckdb")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        path = build(args.engine, Path(tmp))
        results = await measure(args.engine, path, args.calls)
    base = results["baseline"]
    print(f"engine {args.engine}, {args.calls} calls per figure, median us per call")
    print("compile: thread CPU of executor.compile (cold: new SQL text; warm: cache hit)")
    print("call: wall time of executor.run (cold: compile + engine; warm: engine only)")
    header = ["compile cold", "compile warm", "call cold", "call warm"]
    print(f"{'config':<10} " + " ".join(f"{h:>20}" for h in header))
    for name, row in results.items():
        cells = [f"{v:>10.0f} ({v / b:>4.2f}x)" for v, b in zip(row, base, strict=True)]
        print(f"{name:<10} " + " ".join(f"{c:>20}" for c in cells))
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
