"""Lookup and aggregate latency on MariaDB: wellhead against a plain asyncmy client, same run.

    .ci/mariadb.sh start && eval "$(.ci/mariadb.sh env)"
    python -m bench.bench_mysql [--lookups 2000] [--aggregates 20] [--drivers]

Three ways to run the same statement on the same 1,000,000-order fixture database
(tests/mysql_fixtures.sql):
- `asyncmy` — one connection, `cursor.execute` + `fetchall`: the floor;
- `MySQLSource.fetch` — wellhead's source: pool, `START TRANSACTION READ ONLY`,
  `SET STATEMENT max_statement_time ... FOR`, streamed rows, reset after the call;
- `query tool` — the whole chassis in memory (`fastmcp.Client(build_server(...))`): the
  safety check (cached), paging, budgets, the guards, the call log.
The lookup is `SELECT * FROM orders WHERE order_id = N` (primary key, one row; through the tool
once with `:id` as a parameter, as SQL tools send it, and once with a new SQL text each call,
which pays the safety check and page compilation every time); the aggregate
is `SELECT status, count(*), sum(total) FROM orders GROUP BY status` (a full scan). Ratios are
wellhead / asyncmy medians from the same run, the paths interleaved call by call.
`list_tables` on the 5,000-table database is timed too. `--drivers` first compares asyncmy
with aiomysql (why asyncmy is pinned).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

LOOKUP = "SELECT * FROM orders WHERE order_id = {id}"
LOOKUP_PARAM = "SELECT * FROM orders WHERE order_id = :id"
AGGREGATE = "SELECT status, count(*) AS n, sum(total) AS revenue FROM orders GROUP BY status"


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


async def timed(n: int, call: Callable[[int], Awaitable[Any]]) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await call(i)
        out.append(time.perf_counter() - t0)
    return out


def kwargs(dsn: str) -> dict[str, Any]:
    from wellhead.sources._mysql import parse_dsn

    return parse_dsn(dsn, "bench").connect_kwargs()


async def drivers(dsn: str, n: int) -> None:
    import aiomysql
    import asyncmy
    from aiomysql.cursors import SSCursor as AioSS
    from asyncmy.cursors import SSCursor as AsyncmySS

    args = kwargs(dsn)
    aio_args = dict(args)
    aio_args["db"] = aio_args.pop("database")
    aio_args.pop("ssl")
    for name, connect, ss, cargs in (
        ("asyncmy 0.2.18", asyncmy.connect, AsyncmySS, args),
        ("aiomysql 0.3.2", aiomysql.connect, AioSS, aio_args),
    ):
        conn = await connect(**cargs)

        async def cursor(cls: Any = None, conn: Any = conn) -> Any:
            made = conn.cursor(cls) if cls else conn.cursor()
            return await made if hasattr(made, "__await__") else made

        async def lookup(i: int, cursor: Any = cursor) -> None:
            cur = await cursor()
            await cur.execute(LOOKUP.format(id=1 + i * 37))
            await cur.fetchall()
            await cur.close()

        async def stream(_: int, cursor: Any = cursor, ss: Any = ss) -> None:
            cur = await cursor(ss)
            await cur.execute("SELECT * FROM orders LIMIT 100000")
            while await cur.fetchmany(1000):
                pass
            await cur.close()

        lookups = await timed(n, lookup)
        streams = await timed(3, stream)
        conn.close()
        print(
            f"driver {name:<16} lookup median {median_us(lookups):7.0f} us   "
            f"stream 100k rows median {statistics.median(streams) * 1000:7.0f} ms"
        )


async def main(args: argparse.Namespace) -> None:
    import asyncmy
    from fastmcp import Client

    from wellhead.app import build_server
    from wellhead.config import parse_settings
    from wellhead.sources.mysql import MySQLSource

    dsn = args.dsn
    if not dsn:
        raise SystemExit('set WELLHEAD_TEST_MYSQL_DSN: eval "$(bash .ci/mariadb.sh env)"')
    if args.drivers:
        await drivers(dsn, args.lookups)

    conn = await asyncmy.connect(**kwargs(dsn))

    async def plain(sql: str) -> None:
        async with conn.cursor() as cur:
            await cur.execute(sql)
            await cur.fetchall()

    src = MySQLSource("shop", dsn=dsn, pool_max=2)
    await src.start()
    settings = parse_settings(
        {
            "sources": {"shop": {"kind": "mysql", "dsn": dsn}},
            "cursor": {"secret": "bench-secret-bench-secret-0123456789"},
            "logging": {"level": "WARNING"},
        }
    )
    results: dict[str, dict[str, float]] = {}
    async with Client(build_server(settings)) as client:
        for workload, n, make in (
            ("lookup", args.lookups, lambda i: LOOKUP.format(id=1 + (i * 7919) % 1_000_000)),
            ("aggregate", args.aggregates, lambda i: AGGREGATE),
        ):
            paths: dict[str, Callable[[int], Awaitable[Any]]] = {
                "asyncmy": lambda i, make=make: plain(make(i)),
                "MySQLSource.fetch": lambda i, make=make: src.fetch(
                    make(i), [], max_rows=200, timeout=60
                ),
            }
            if workload == "lookup":  # a parameter: the compiled statement is reused
                paths["query tool"] = lambda i: client.call_tool(
                    "query", {"sql": LOOKUP_PARAM, "params": {"id": 1 + (i * 7919) % 1_000_000}}
                )
                paths["query tool, new SQL text"] = lambda i, make=make: client.call_tool(
                    "query", {"sql": make(i)}
                )
            else:
                paths["query tool"] = lambda i, make=make: client.call_tool(
                    "query", {"sql": make(i)}
                )
            for call in paths.values():  # warm every path
                await call(0)
            samples: dict[str, list[float]] = {label: [] for label in paths}
            for i in range(n):  # interleaved, so every path sees the same machine load
                for label, call in paths.items():
                    t0 = time.perf_counter()
                    await call(i + 1)
                    samples[label].append(time.perf_counter() - t0)
            results[workload] = {label: median_us(v) for label, v in samples.items()}
    await src.close()
    conn.close()

    many = MySQLSource("many", dsn=dsn, schemas=["wellhead_many"])
    await many.start()
    listing = await timed(5, lambda _: many.list_tables())
    count = len(await many.list_tables())
    await many.close()

    print(f"\nMariaDB, medians (n: lookup {args.lookups}, aggregate {args.aggregates}):")
    for workload, row in results.items():
        base = row["asyncmy"]
        unit, scale = ("us", 1.0) if workload == "lookup" else ("ms", 1e-3)
        for label, value in row.items():
            ratio = "" if label == "asyncmy" else f"  {value / base:5.2f}x asyncmy"
            print(f"{workload:<10} {label:<26} median {value * scale:9.1f} {unit}{ratio}")
    print(
        f"list_tables on {count} tables: median {statistics.median(listing) * 1000:.0f} ms "
        f"(min {min(listing) * 1000:.0f} ms)"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("WELLHEAD_TEST_MYSQL_DSN"))
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--aggregates", type=int, default=20)
    parser.add_argument("--drivers", action="store_true", help="compare asyncmy and aiomysql")
    return parser.parse_args()


if __name__ == "__main__":
    os.environ.setdefault("FASTMCP_CHECK_FOR_UPDATES", "off")
    logging.disable(logging.WARNING)
    asyncio.run(main(parse_args()))
