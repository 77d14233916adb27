"""`export_query` of all 1,000,000 demo orders over streamable HTTP: time and server RSS.

    python bench/bench_export.py [--runs 3] [--jsonl] [--postgres]

Serves the demo DuckDB dataset with `python -m wellhead serve --transport http` and calls
`export_query("SELECT * FROM orders", format=...)` through a real MCP client. Per format it
prints the call's wall time, rows/s, file size, and the server process's RSS growth during
the call (peak RSS sampled every 10 ms, minus RSS just before the call), then the same for
downloading the file through the signed URL. Targets (issue 12): under 5 s and under 150 MB
of RSS growth for Parquet and CSV.

Baseline in the same run: DuckDB itself writing the same result (`COPY (SELECT * FROM
orders) TO ...`) in a fresh process, so the ratio shows what wellhead adds. `--postgres`
also exports PostgreSQL's 1,000,000-row `orders` fixture (needs WELLHEAD_TEST_PG_DSN, see
.ci/postgres.sh). Figures, not tests: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("FASTMCP_CHECK_FOR_UPDATES", "off")
os.environ.setdefault("FASTMCP_SHOW_SERVER_BANNER", "false")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402
import yaml  # noqa: E402
from fastmcp import Client  # noqa: E402

from bench._server import ServerSubprocess, free_port  # noqa: E402

SQL = "SELECT * FROM orders"
MIB = 2**20


class RssSampler:
    """Peak RSS of a process, sampled every 10 ms in a thread while a block runs."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        self.before = self.process.memory_info().rss
        self.peak = self.before
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.01)

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.before) / MIB


def duckdb_baseline(demo: Path, fmt: str, out: Path) -> float:
    """Seconds for DuckDB alone to write the result (a fresh process, like a cold server)."""
    options = "(FORMAT parquet, COMPRESSION zstd)" if fmt == "parquet" else "(FORMAT csv)"
    code = (
        "import duckdb, time, sys\n"
        f"c = duckdb.connect({str(demo)!r}, read_only=True)\n"
        "c.execute('SET enable_progress_bar = false')\n"
        "t = time.perf_counter()\n"
        f"c.execute(\"COPY ({SQL}) TO '{out}' {options}\")\n"
        "print(time.perf_counter() - t)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


async def export_once(url: str, pid: int, sql: str, fmt: str, source: str | None) -> dict:
    arguments: dict[str, Any] = {"sql": sql, "format": fmt}
    if source:
        arguments["source"] = source
    async with Client(url, timeout=600) as client:
        with RssSampler(pid) as call_rss:
            started = time.perf_counter()
            result = await client.call_tool("export_query", arguments)
            seconds = time.perf_counter() - started
    info = result.structured_content
    async with httpx.AsyncClient(timeout=600) as http:
        with RssSampler(pid) as download_rss:
            started = time.perf_counter()
            size = 0
            async with http.stream("GET", info["download_url"]) as response:
                response.raise_for_status()
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
            download_s = time.perf_counter() - started
    assert size == info["size_bytes"], (size, info["size_bytes"])
    return {
        "seconds": seconds,
        "rows": info["row_count"],
        "bytes": info["size_bytes"],
        "rss_growth_mib": call_rss.growth_mib,
        "download_s": download_s,
        "download_rss_growth_mib": download_rss.growth_mib,
    }


def report(label: str, runs: list[dict], baseline: float | None) -> None:
    best = min(runs, key=lambda r: r["seconds"])
    median = statistics.median(r["seconds"] for r in runs)
    growth = max(r["rss_growth_mib"] for r in runs)
    print(
        f"  {label:<16} {best['rows']:>9,} rows  {best['bytes'] / MIB:7.1f} MiB  "
        f"best {best['seconds']:5.2f} s  median {median:5.2f} s  "
        f"{best['rows'] / best['seconds']:>10,.0f} rows/s  RSS growth (max) {growth:6.1f} MiB"
    )
    if baseline is not None:
        print(
            f"  {'':<16} DuckDB COPY alone {baseline:5.2f} s  -> wellhead/DuckDB "
            f"{best['seconds'] / baseline:4.2f}x"
        )
    download = min(r["download_s"] for r in runs)
    download_growth = max(r["download_rss_growth_mib"] for r in runs)
    print(
        f"  {'':<16} download (signed URL) best {download:5.2f} s "
        f"({best['bytes'] / MIB / download:6.0f} MiB/s)  RSS growth (max) "
        f"{download_growth:6.1f} MiB"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jsonl", action="store_true", help="also JSON Lines")
    parser.add_argument("--postgres", action="store_true", help="also PostgreSQL's orders")
    args = parser.parse_args()

    from wellhead.demo import ensure_demo_database

    demo = ensure_demo_database()
    print(f"load average before: {os.getloadavg()[0]:.2f}  (cores: {os.cpu_count()})")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sources: dict[str, Any] = {"demo": {"kind": "duckdb", "path": str(demo)}}
        if args.postgres:
            sources["pg"] = {"kind": "postgres", "dsn": os.environ["WELLHEAD_TEST_PG_DSN"]}
        config = work / "wellhead.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "sources": sources,
                    "default_source": "demo",
                    "cursor": {"secret": "bench-export-secret-0123456789abcdef"},
                    "exports": {
                        "directory": str(work / "exports"),
                        "max_owner_bytes": 8 << 30,
                        "max_total_bytes": 8 << 30,
                    },
                    "logging": {"level": "WARNING"},
                }
            )
        )
        port = free_port()
        server = ServerSubprocess(
            [sys.executable, "-m", "wellhead", "serve", "--config", str(config)]
            + ["--transport", "http", "--port", str(port)],
            port,
            work / "server.log",
            "/readyz",
        )
        url = f"{server.url}/mcp"
        pid = server.process.pid
        try:
            await export_once(url, pid, "SELECT 1 AS warm_up", "parquet", None)  # imports pyarrow
            rss = psutil.Process(pid).memory_info().rss / MIB
            print(f"server RSS after warm-up: {rss:.0f} MiB")
            formats = ["parquet", "csv"] + (["jsonl"] if args.jsonl else [])
            print(f"DuckDB demo, `{SQL}`, over streamable HTTP, {args.runs} runs each:")
            for fmt in formats:
                runs = [await export_once(url, pid, SQL, fmt, None) for _ in range(args.runs)]
                baseline = None
                if fmt != "jsonl":
                    baseline = duckdb_baseline(demo, fmt, work / f"baseline.{fmt}")
                report(fmt, runs, baseline)
            if args.postgres:
                print(f"PostgreSQL fixture `{SQL}`:")
                for fmt in ("parquet", "csv"):
                    runs = [await export_once(url, pid, SQL, fmt, "pg") for _ in range(args.runs)]
                    report(fmt, runs, None)
        finally:
            server.stop()
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
