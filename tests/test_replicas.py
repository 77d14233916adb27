"""Two replicas of wellhead sharing a cursor secret and a Redis state store.

A cursor issued by one replica continues on the other (cursors are self-contained and
signed), and an over-budget result kept by one replica is read back through the other
(the overflow lives in Redis). A real Redis, started by .ci/redis.sh; missing Redis skips
locally and fails under CI=true.
"""

from __future__ import annotations

import shutil

import pytest

from tests.helpers import client_for, service_env
from wellhead.config import parse_settings

pytestmark = pytest.mark.anyio


def redis_url() -> str:
    return service_env("WELLHEAD_TEST_REDIS_URL", "Redis", ".ci/redis.sh")


def replica(demo_db, url: str):  # type: ignore[no-untyped-def]
    return parse_settings(
        {
            "sources": {"demo": {"kind": "duckdb", "path": str(demo_db)}},
            "cursor": {"secret": "shared-by-every-replica-0123456789"},
            "state": {"backend": "redis", "redis_url": url},
            "plugins": ["tests.plugins.big_output"],
            "limits": {"result_budget_bytes": 4096},
        }
    )


async def test_cursors_and_overflow_continue_on_another_replica(demo_db, tmp_path):
    url = redis_url()
    # Each replica has its own copy of the data: one process cannot open one DuckDB file
    # twice with a locked configuration, and real replicas are separate processes anyway.
    copy = tmp_path / "replica.duckdb"
    shutil.copy(demo_db, copy)
    async with (
        client_for(replica(demo_db, url)) as first,
        client_for(replica(copy, url)) as second,
    ):
        page = await first.call_tool("query", {"sql": "SELECT order_id FROM orders ORDER BY 1"})
        following = await second.call_tool(
            "query", {"cursor": page.structured_content["next_cursor"]}
        )
        assert following.structured_content["offset"] == page.structured_content["row_count"]
        assert following.structured_content["rows"][0] == [page.structured_content["row_count"] + 1]

        big = await first.call_tool("big_text", {"size": 20_000})
        text = big.content[0].text
        assert "read_more" in text
        cursor = text.rsplit("cursor=", 1)[1].split()[0]
        pieces = [text.split("\n[truncated by wellhead")[0]]
        while cursor:
            chunk = await second.call_tool("read_more", {"cursor": cursor})
            pieces.append(chunk.structured_content["chunk"])
            cursor = chunk.structured_content["next_cursor"]
    # The whole text, re-assembled from chunks served by the other replica.
    assert "".join(pieces[1:]) == "x" * 20_000
