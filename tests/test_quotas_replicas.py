"""Three replicas sharing a real Redis enforce one quota, over real HTTP with a real MCP client.

Each replica is a `wellhead serve --transport http` process with the same config (static
tokens for two principals, quotas on, state in Redis under a key prefix of this run). The
test sends calls round-robin and at once across the replicas and checks what an operator and
an agent see: the admitted calls across replicas add up to one bucket, the concurrency cap
holds across replicas (and past the lease, which the replicas renew), a replica killed with
SIGKILL gives its slots back within lease_s, the refusals carry retry_after_s, and
/metrics and the tool_call lines count them. Missing Redis skips locally, fails in CI.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastmcp import Client

from tests.helpers import error_of, service_env
from tests.server_process import ServerProcess

pytestmark = pytest.mark.anyio

ALICE = "alice-quota-token-0123456789"
BOB = "bob-quota-token-0123456789-x"
BURST = 6
LEASE_S = 1.5
NAP_CAP = 2
BUSY_RETRY_S = 0.5


def write_config(tmp_path: Path, redis: str) -> Path:
    db = tmp_path / "tiny.sqlite"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE t (x INTEGER)")
    config = tmp_path / "wellhead.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "sources": {"s": {"kind": "sqlite", "path": str(db)}},
                "plugins": ["tests.plugins.napper"],
                "auth": {
                    "kind": "static",
                    "tokens": [
                        {"token": ALICE, "client_id": "alice"},
                        {"token": BOB, "client_id": "bob"},
                    ],
                },
                "state": {"backend": "redis", "redis_url": redis},
                "cursor": {"secret": "shared-by-every-replica-0123456789"},
                "quotas": {
                    "enabled": True,
                    "key_prefix": f"wellhead-test:{os.urandom(6).hex()}",
                    "lease_s": LEASE_S,
                    "busy_retry_after_s": BUSY_RETRY_S,
                    "per_tool": {
                        # One token per 100 s: the whole test sees the burst and no refill.
                        "query": {"rate_per_s": 0.01, "burst": BURST, "max_concurrent": None},
                        "nap": {"rate_per_s": None, "max_concurrent": NAP_CAP},
                    },
                },
            }
        )
    )
    return config


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Three replicas for this module (starting them is most of its time); the test that
    kills one runs last."""
    redis = service_env("WELLHEAD_TEST_REDIS_URL", "Redis", ".ci/redis.sh")
    config = write_config(tmp_path_factory.mktemp("quota-replicas"), redis)
    with ThreadPoolExecutor(3) as pool:
        servers = list(pool.map(lambda _: ServerProcess(config), range(3)))
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def clients(servers: list[ServerProcess], token: str) -> list[Client]:
    return [Client(server.mcp_url, auth=token) for server in servers]


async def call(client: Client, tool: str, arguments: dict[str, Any] | None = None) -> Any:
    return await client.call_tool(tool, arguments or {}, raise_on_error=False)


async def timed(client: Client, tool: str, arguments: dict[str, Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = await call(client, tool, arguments)
    return result, time.monotonic() - started


async def test_three_replicas_enforce_one_quota(replicas: list[ServerProcess]) -> None:
    first, second, third = alice = clients(replicas, ALICE)
    bob = clients(replicas, BOB)
    async with first, second, third, bob[0], bob[1], bob[2]:
        # -- the bucket: 18 calls at once, 6 per replica; one burst is admitted in all.
        sql = {"sql": "SELECT count(*) FROM t"}
        results = await asyncio.gather(*(call(alice[i % 3], "query", sql) for i in range(18)))
        admitted = [r for r in results if not r.is_error]
        refused = [error_of(r) for r in results if r.is_error]
        assert len(admitted) == BURST
        assert {e["error"] for e in refused} == {"rate_limited"}
        assert all(e["reason"] == "rate" and 90 < e["retry_after_s"] <= 100 for e in refused)
        # Round-robin, one at a time: still nothing left for alice on any replica.
        assert all([(await call(client, "query", sql)).is_error for client in alice])
        # Bob is another principal with his own bucket.
        bob_results = [await call(bob[i % 3], "query", sql) for i in range(BURST + 1)]
        assert [r.is_error for r in bob_results] == [False] * BURST + [True]

        # -- the cap: 6 naps at once (2 per replica), longer than the lease; 2 run.
        naps = [
            asyncio.create_task(timed(alice[i % 3], "nap", {"seconds": 2 * LEASE_S}))
            for i in range(6)
        ]
        await asyncio.sleep(LEASE_S * 1.4)  # past one lease: held only because it is renewed
        late = await call(third, "nap")
        done = await asyncio.gather(*naps)
        ran = [seconds for r, seconds in done if not r.is_error]
        busy = [error_of(r) for r, _ in done if r.is_error]
        assert len(ran) == NAP_CAP and min(ran) >= 2 * LEASE_S
        assert len(busy) == 6 - NAP_CAP
        # Refused at once, never queued behind the running naps.
        assert max(seconds for r, seconds in done if r.is_error) < LEASE_S
        assert all(
            e["reason"] == "concurrency" and e["retry_after_s"] == BUSY_RETRY_S for e in busy
        )
        assert error_of(late)["reason"] == "concurrency"
        # The slots are free again once the naps end, on every replica.
        assert not any([(await call(c, "nap")).is_error for c in alice])

    # -- what the operator sees: refusals on /metrics and in tool_call lines, summed.
    rate_refused = sum(
        r.metric("wellhead_quota_rejected_total", reason="rate", tool="query") or 0
        for r in replicas
    )
    assert rate_refused == (18 - BURST) + 3 + 1
    busy_refused = sum(
        r.metric("wellhead_quota_rejected_total", reason="concurrency", tool="nap") or 0
        for r in replicas
    )
    assert busy_refused == 6 - NAP_CAP + 1
    calls = sum(
        r.metric("wellhead_tool_calls_total", outcome="rate_limited", tool="query") or 0
        for r in replicas
    )
    assert calls == rate_refused
    assert all(r.metric("wellhead_quota_backend_errors_total") == 0 for r in replicas)
    lines = [
        line
        for r in replicas
        for line in r.log_lines()
        if line.get("event") == "tool_call" and line.get("outcome") == "rate_limited"
    ]
    assert len(lines) == rate_refused + busy_refused
    assert {line["client_id"] for line in lines} == {"alice", "bob"}
    assert all(line["error_kind"] == "rate_limited" and line["retry_after_s"] > 0 for line in lines)
    assert {line["quota_reason"] for line in lines} == {"rate", "concurrency"}


async def test_a_killed_replica_gives_its_slots_back_within_the_lease(
    replicas: list[ServerProcess],
) -> None:
    doomed, survivor, other = replicas
    a = Client(doomed.mcp_url, auth=ALICE)
    await a.__aenter__()
    try:
        async with (
            Client(survivor.mcp_url, auth=ALICE) as b,
            Client(other.mcp_url, auth=ALICE) as c,
        ):
            holding = [
                asyncio.create_task(call(a, "nap", {"seconds": 60})),
                asyncio.create_task(call(b, "nap", {"seconds": 60})),
            ]
            await asyncio.sleep(0.5)
            assert error_of(await call(c, "nap"))["reason"] == "concurrency"
            doomed.process.kill()  # SIGKILL: no release, no renewal, nothing
            killed_at = time.monotonic()
            doomed.process.wait()
            while True:
                result = await call(c, "nap")
                if not result.is_error:
                    break
                assert error_of(result)["reason"] == "concurrency"
                assert time.monotonic() - killed_at < LEASE_S + 2.0, "the slot leaked"
                await asyncio.sleep(0.1)
            freed_after = time.monotonic() - killed_at
            # The survivor's slot is still held (renewed): one slot came back, not two.
            holding.append(asyncio.create_task(call(c, "nap", {"seconds": 60})))
            await asyncio.sleep(0.5)
            assert error_of(await call(c, "nap"))["reason"] == "concurrency"
            for task in holding:
                task.cancel()
            await asyncio.gather(*holding, return_exceptions=True)
    finally:
        try:
            await a.__aexit__(None, None, None)
        except Exception:  # noqa: BLE001 - its server is dead; closing the session fails
            pass
    # Freed by expiry: at most lease_s after the last renewal (every lease_s / 3).
    assert 0 < freed_after < LEASE_S + 2.0
