"""First-page latency and peak RSS for `SELECT *` over 1M rows on PostgreSQL.

    .ci/postgres.sh start && eval "$(.ci/postgres.sh env)"
    python bench/bench_postgres.py [--runs 5] [--rows 200] [--no-naive]

Measures PostgresSource.fetch (server-side portal, max_rows + 1 rows) and, when present, the
query layer (wellhead.sql.executor: safety check, LIMIT 0 probe, ordered page, cheap count).
Peak RSS is the process maximum (getrusage), so the naive fetchall comparison runs in a child
process: it shows what "never materialise a big result" saves.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import time

from wellhead.sources.postgres import PostgresSource

SQL = "SELECT * FROM public.orders"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def report(label: str, seconds: list[float], rows: int) -> None:
    ms = sorted(s * 1000 for s in seconds)
    print(
        f"{label:<34} rows={rows:<6} first page: median {statistics.median(ms):8.1f} ms"
        f"  min {ms[0]:8.1f} ms  max {ms[-1]:8.1f} ms   peak RSS {peak_rss_mib():7.1f} MiB"
    )


async def bench_source(src: PostgresSource, runs: int, rows: int) -> None:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        batch = await src.fetch(SQL, [], max_rows=rows, timeout=60)
        times.append(time.perf_counter() - t0)
        assert len(batch.rows) == rows and batch.more
    report("PostgresSource.fetch", times, rows)


async def bench_executor(src: PostgresSource, runs: int, rows: int) -> None:
    try:
        from wellhead.config import LimitsConfig
        from wellhead.sql.executor import PageRequest, QueryExecutor
        from wellhead.sql.paging import CursorCodec
    except ImportError as exc:
        print(f"query layer not available ({exc}); skipped")
        return
    executor = QueryExecutor(
        {"pg": src}, LimitsConfig.model_validate({}), CursorCodec(b"bench-secret-0123456789")
    )
    times = []
    page = None
    for _ in range(runs):
        t0 = time.perf_counter()
        page = await executor.run(
            PageRequest(tool="query", source="pg", sql=SQL, params={}, max_rows=rows)
        )
        times.append(time.perf_counter() - t0)
    assert page is not None
    report("query layer (probe+page+count)", times, len(page.rows))
    print(
        f"{'':<34} total_rows={page.total_rows} next_cursor={'yes' if page.next_cursor else 'no'}"
    )
    if page.next_cursor:
        state = executor.resume(page.next_cursor, tool="query", sql=None, source=None)
        t0 = time.perf_counter()
        second = await executor.run(
            PageRequest(
                tool="query",
                source="pg",
                sql=SQL,
                params={},
                offset=state.offset,
                total=state.total,
                max_rows=rows,
            )
        )
        print(
            f"{'query layer, second page':<34} rows={len(second.rows):<6} "
            f"{(time.perf_counter() - t0) * 1000:8.1f} ms   peak RSS {peak_rss_mib():7.1f} MiB"
        )


async def naive(dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    t0 = time.perf_counter()
    records = await conn.fetch(SQL)
    elapsed = time.perf_counter() - t0
    await conn.close()
    report("naive asyncpg fetchall (contrast)", [elapsed], len(records))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("WELLHEAD_TEST_PG_DSN"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--no-naive", action="store_true")
    parser.add_argument("--naive-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.dsn:
        sys.exit('set WELLHEAD_TEST_PG_DSN (eval "$(.ci/postgres.sh env)") or pass --dsn')
    return args


async def main(args: argparse.Namespace) -> None:
    print(f"python {sys.version.split()[0]}, baseline peak RSS {peak_rss_mib():.1f} MiB")
    src = PostgresSource("pg", dsn=args.dsn, pool_max=2)
    await src.start()
    try:
        await bench_source(src, args.runs, args.rows)
        await bench_executor(src, args.runs, args.rows)
    finally:
        await src.close()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.naive_child:
        asyncio.run(naive(arguments.dsn))
    else:
        asyncio.run(main(arguments))
        if not arguments.no_naive:  # its own process: peak RSS is per process
            subprocess.run(
                [sys.executable, __file__, "--naive-child", "--dsn", arguments.dsn], check=True
            )
