"""Shared test setup: no network, no update checks, anyio on asyncio."""

from __future__ import annotations

import os

os.environ["FASTMCP_CHECK_FOR_UPDATES"] = "off"
os.environ["FASTMCP_SHOW_SERVER_BANNER"] = "false"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The generated demo DuckDB file, built once per test session."""
    from wellhead.demo import ensure_demo_database

    cache = os.environ.get("WELLHEAD_TEST_DEMO_CACHE")
    directory = Path(cache) if cache else tmp_path_factory.mktemp("demo-cache")
    return ensure_demo_database(directory)


def settings_for(path, **limits):  # type: ignore[no-untyped-def]
    """Settings serving one DuckDB file as source `demo`, with limit overrides."""
    from wellhead.config import parse_settings

    return parse_settings(
        {
            "sources": {"demo": {"kind": "duckdb", "path": str(path)}},
            "limits": limits,
            "cursor": {"secret": "test-secret-test-secret-0123456789"},
        }
    )
