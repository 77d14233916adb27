"""Time a cold build of the demo database and print its size (issue 2: first run under 10 s).

Usage: python bench/bench_demo_build.py [--runs N] [--steps]
Each run builds into a fresh temporary directory, so nothing cached is reused.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from wellhead.demo import DEMO_TABLES, ensure_demo_database


def _load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        return "n/a"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="cold builds to time (default 1)")
    parser.add_argument("--steps", action="store_true", help="also print each build step's time")
    args = parser.parse_args()
    if args.steps:
        logging.basicConfig(level=logging.DEBUG, format="  %(message)s")
        logging.getLogger("wellhead.demo").setLevel(logging.DEBUG)

    print(f"cpus={os.cpu_count()} duckdb={duckdb.__version__} loadavg(before)={_load_average()}")
    times: list[float] = []
    for run in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory(prefix="wellhead-demo-bench-") as tmp:
            wall, cpu = time.perf_counter(), time.process_time()
            path = ensure_demo_database(Path(tmp))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            times.append(wall)
            size = path.stat().st_size
            con = duckdb.connect(str(path), read_only=True)
            try:
                counts = {
                    t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
                    for t in DEMO_TABLES
                }
            finally:
                con.close()
            again = time.perf_counter()
            ensure_demo_database(Path(tmp))
            reuse_ms = (time.perf_counter() - again) * 1000
        print(
            f"run {run}: build {wall:.2f} s wall, {cpu:.2f} s cpu (this process); "
            f"file {size / 2**20:.1f} MiB; reuse {reuse_ms:.2f} ms; "
            + ", ".join(f"{t}={n:,}" for t, n in counts.items())
        )
    print(
        f"build seconds: min {min(times):.2f} max {max(times):.2f} "
        f"(target < 10 s); loadavg(after)={_load_average()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
