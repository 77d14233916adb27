"""Point-lookup latency, first-page latency and peak RSS for `SELECT *` over 1M rows on PostgreSQL.

    .ci/postgres.sh start && eval "$(.ci/postgres.sh env)"
    taskset -c 0 python bench/bench_postgres.py [--runs 5] [--rows 200] [--lookups 2000]
        [--no-naive] [--baseline OLD_postgres.py]

Point lookups (`WHERE id = $1`, one row) compare wellhead with a plain asyncpg client on the
same database: PostgresSource.fetch, the query layer on top of it, and `conn.fetchrow` with
asyncpg's statement cache. The difference is wellhead's per-call price for read-only, deadline,
memory settings and a clean connection for the next caller. `--baseline` loads another
version of `wellhead/sources/postgres.py` (`git show REV:wellhead/sources/postgres.py > old.py`)
and measures its lookups in the same run, alternating rounds, for a like-for-like before/after.

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
LOOKUP = "SELECT * FROM public.orders WHERE id = $1"


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


def report_lookups(label: str, seconds: list[float]) -> None:
    us = sorted(s * 1e6 for s in seconds)
    p99 = us[min(len(us) - 1, int(len(us) * 0.99))]
    print(
        f"{label:<34} n={len(us):<6} point lookup: median {statistics.median(us):7.0f} us"
        f"  p99 {p99:7.0f} us"
    )


def load_baseline(path: str) -> type[PostgresSource]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("wellhead.sources._bench_baseline", path)
    assert spec and spec.loader, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PostgresSource  # type: ignore[no-any-return]


async def bench_before_after(dsn: str, baseline: str, n: int, rounds: int = 5) -> None:
    """Old and new PostgresSource.fetch on the same lookups, rounds interleaved."""
    old_cls = load_baseline(baseline)
    new, old = PostgresSource("pg", dsn=dsn, pool_max=2), old_cls("pg_old", dsn=dsn, pool_max=2)
    await new.start()
    await old.start()
    per: dict[str, list[float]] = {"before (baseline)": [], "after (this tree)": []}
    try:
        for _ in range(rounds):
            for label, src in (("before (baseline)", old), ("after (this tree)", new)):
                for i in range(n // rounds):
                    t0 = time.perf_counter()
                    await src.fetch(LOOKUP, [1 + i * 7 % 999_000], max_rows=200, timeout=10)
                    per[label].append(time.perf_counter() - t0)
    finally:
        await new.close()
        await old.close()
    for label, times in per.items():
        report_lookups(f"fetch {label}", times)


async def bench_lookups(src: PostgresSource, dsn: str, n: int) -> None:
    import asyncpg

    times = []
    for i in range(n):
        t0 = time.perf_counter()
        batch = await src.fetch(LOOKUP, [1 + i * 7 % 999_000], max_rows=200, timeout=10)
        times.append(time.perf_counter() - t0)
        assert len(batch.rows) == 1
    report_lookups("PostgresSource.fetch", times)
    try:
        from wellhead.config import LimitsConfig
        from wellhead.sql.executor import PageRequest, QueryExecutor
        from wellhead.sql.paging import CursorCodec
    except ImportError as exc:
        print(f"query layer not available ({exc}); skipped")
    else:
        executor = QueryExecutor(
            {"pg": src}, LimitsConfig.model_validate({}), CursorCodec(b"bench-secret-0123456789")
        )
        times = []
        for i in range(n):
            request = PageRequest(
                tool="query",
                source="pg",
                sql="SELECT * FROM public.orders WHERE id = :id",
                params={"id": 1 + i * 7 % 999_000},
            )
            t0 = time.perf_counter()
            page = await executor.run(request)
            times.append(time.perf_counter() - t0)
            assert len(page.rows) == 1
        report_lookups("query layer", times)
    conn = await asyncpg.connect(dsn)
    try:
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            row = await conn.fetchrow(LOOKUP, 1 + i * 7 % 999_000)
            times.append(time.perf_counter() - t0)
            assert row is not None
        report_lookups("plain asyncpg fetchrow (contrast)", times)
    finally:
        await conn.close()


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
    parser.add_argument("--lookups", type=int, default=2000, help="point lookups; 0 skips them")
    parser.add_argument("--no-naive", action="store_true")
    parser.add_argument("--baseline", help="another postgres.py to compare lookups with")
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
        if args.lookups:
            await bench_lookups(src, args.dsn, args.lookups)
            if args.baseline:
                await bench_before_after(args.dsn, args.baseline, args.lookups)
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
