"""What governance costs per query: the cost guard's EXPLAIN, and SET LOCAL ROLE.

    .ci/postgres.sh start && eval "$(.ci/postgres.sh env)"
    python bench/bench_governance.py [--n 400] [--rounds 3] [--duckdb PATH]

Through the query layer (`QueryExecutor.run`, as the `query` tool calls it), on the fixtures'
1,000,000-row `public.orders`, rounds interleaved so machine noise hits every variant alike:

- point lookups `WHERE id = :id` with the cost guard off, on with a cold estimate every time
  (`cache_ttl_s: 0`, one EXPLAIN round trip per call), and on with the estimate cached (the
  same statement and values again: no EXPLAIN);
- the same lookups on a source with `roles` (the login role `wellhead_gov` becomes
  `wh_tenant_a` by `SET LOCAL ROLE`, sent in the BEGIN round trip) against the plain reader.

With `--duckdb PATH` (the demo file) the guard's price on DuckDB is measured the same way.
Prints medians and ratios against the unguarded baseline of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

from wellhead.config import LimitsConfig
from wellhead.governance.principal import Principal, acting_as
from wellhead.governance.roles import RolesConfig
from wellhead.sources.base import Source
from wellhead.sql.cost import CostGuard, CostGuardConfig
from wellhead.sql.executor import PageRequest, QueryExecutor
from wellhead.sql.paging import CursorCodec

LOOKUP = "SELECT * FROM public.orders WHERE id = :id"
CPU: list[float] = []
"""Python CPU time of the last call (this process only: not the engine's)."""


async def once(executor: QueryExecutor, source: str, sql: str, value: int, guard: bool) -> float:
    request = PageRequest(
        tool="query", source=source, sql=sql, params={"id": value}, cost_check=guard
    )
    c0, t0 = time.process_time(), time.perf_counter()
    page = await executor.run(request)
    elapsed = time.perf_counter() - t0
    CPU.append(time.process_time() - c0)
    assert len(page.rows) == 1
    return elapsed


def line(label: str, samples: list[float], base: float | None, cpu: list[float]) -> float:
    median = statistics.median(samples) * 1e6
    ratio = f"  x{median / base:5.2f} of baseline" if base else ""
    python = statistics.median(cpu) * 1e6
    print(
        f"{label:<56} wall median {median:7.0f} us  python cpu {python:6.0f} us"
        f"  n={len(samples)}{ratio}"
    )
    return median


async def bench(
    sources: dict[str, Source],
    source: str,
    sql: str,
    n: int,
    rounds: int,
    label: str,
    role_source: str | None = None,
) -> None:
    """Every variant once per step, in rotating order: load on the machine hits all alike."""
    limits = LimitsConfig()
    codec = CursorCodec(b"0123456789abcdef0123")
    cold = QueryExecutor(sources, limits, codec, CostGuard(CostGuardConfig(cache_ttl_s=0)))
    warm = QueryExecutor(sources, limits, codec, CostGuard(CostGuardConfig()))
    variants: dict[str, Any] = {
        "off, new value each call": lambda i: once(warm, source, sql, i, False),
        "on, new value each call (EXPLAIN each)": lambda i: once(cold, source, sql, i, True),
        "off, same value each call": lambda i: once(warm, source, sql, 1, False),
        "on, same value each call (estimate cached)": lambda i: once(warm, source, sql, 1, True),
    }
    if role_source:

        async def as_role(i: int) -> float:
            with acting_as(Principal(client_id="bench")):
                return await once(warm, role_source, sql, i, False)

        variants["off, new value, roles: SET LOCAL ROLE wh_tenant_a"] = as_role
    results: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for _ in range(rounds):
        for i in range(1, n + 1):
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                results[name].append(await variants[name](i))
                cpu[name].append(CPU.pop())
    print(f"-- {label}")
    base = line("guard " + names[0] + " (baseline)", results[names[0]], None, cpu[names[0]])
    line("guard " + names[1], results[names[1]], base, cpu[names[1]])
    same = line("guard " + names[2] + " (baseline 2)", results[names[2]], None, cpu[names[2]])
    line("guard " + names[3], results[names[3]], same, cpu[names[3]])
    if role_source:
        line("guard " + names[4], results[names[4]], base, cpu[names[4]])


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duckdb", default=None)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    from wellhead.sources.postgres import PostgresSource

    dsn = os.environ["WELLHEAD_TEST_PG_DSN"]
    gov = dsn.replace("//wellhead_ro:", "//wellhead_gov:", 1)
    roles = RolesConfig(rules=[], default="wh_tenant_a")
    sources: dict[str, Any] = {
        "pg": PostgresSource("pg", dsn=dsn, temp_file_limit=None),
        "pg_roles": PostgresSource(
            "pg_roles", dsn=gov, schemas=["public"], roles=roles, temp_file_limit=None
        ),
    }
    for src in sources.values():
        await src.start()
    try:
        await bench(
            sources, "pg", LOOKUP, args.n, args.rounds, "PostgreSQL point lookups", "pg_roles"
        )
    finally:
        for src in sources.values():
            await src.close()
    if args.duckdb:
        from wellhead.sources.duckdb import DuckDBSource

        duck = DuckDBSource("duck", path=args.duckdb)
        await duck.start()
        try:
            sql = "SELECT * FROM orders WHERE order_id = :id"
            await bench({"duck": duck}, "duck", sql, args.n, args.rounds, "DuckDB (demo) lookups")
        finally:
            await duck.close()
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    asyncio.run(main())
