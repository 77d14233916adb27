"""Quotas in one process: the token bucket, the concurrency cap, the refusal, Redis failures.

Logic through a real MCP client on an in-memory server; the Redis tests use a real Redis
(.ci/redis.sh; missing Redis skips locally and fails under CI=true), each with its own key
prefix so runs never share a bucket. Replicas sharing one Redis: test_quotas_replicas.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client

from tests.helpers import error_of, service_env
from wellhead.app import build_runtime, build_server
from wellhead.config import Settings, parse_settings
from wellhead.guards.chain import GuardChain
from wellhead.guards.quotas import MemoryBackend, QuotaGuard, Rule, resolve_rules

pytestmark = pytest.mark.anyio


@pytest.fixture
def tiny_db(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x INTEGER)")
        db.execute("INSERT INTO t VALUES (1)")
    return path


def settings(db: Path, quotas: dict[str, Any], **extra: Any) -> Settings:
    return parse_settings(
        {
            "sources": {"s": {"kind": "sqlite", "path": str(db)}},
            "plugins": ["tests.plugins.napper"],
            "quotas": {"enabled": True, **quotas},
            **extra,
        }
    )


def served(config: Settings) -> tuple[Client, Any]:
    runtime = build_runtime(config)
    return Client(build_server(config, runtime)), runtime


def build_server_client(config: Settings) -> Client:
    return Client(build_server(config))


def sample(runtime: Any, name: str, **labels: str) -> float:
    value = runtime.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


def redis_url() -> str:
    return service_env("WELLHEAD_TEST_REDIS_URL", "Redis", ".ci/redis.sh")


def unique_prefix() -> str:
    return f"wellhead-test:{os.urandom(6).hex()}"


# -- configuration ------------------------------------------------------------------------


def test_per_tool_rules_inherit_what_they_leave_out_and_null_lifts_a_limit() -> None:
    config = parse_settings(
        {
            "quotas": {
                "rate_per_s": 2.5,
                "max_concurrent": 3,
                "per_tool": {
                    "query": {"burst": 10},
                    "nap": {"rate_per_s": None, "max_concurrent": 1},
                    "free": {"rate_per_s": None, "max_concurrent": None},
                },
            }
        }
    ).quotas
    default, rules = resolve_rules(config)
    assert default == Rule(2.5, 3, 3)  # burst defaults to ceil(rate)
    assert rules["query"] == Rule(2.5, 10, 3)
    assert rules["nap"] == Rule(None, 1, 1)
    assert not rules["free"].active


def test_bad_quota_keys_are_refused() -> None:
    with pytest.raises(Exception, match="quotas.rate_per_s"):
        parse_settings({"quotas": {"rate_per_s": 0}})
    with pytest.raises(Exception, match="quotas.per_tool.query.brust"):
        parse_settings({"quotas": {"per_tool": {"query": {"brust": 3}}}})
    with pytest.raises(Exception, match="quotas.on_backend_error"):
        parse_settings({"quotas": {"on_backend_error": "maybe"}})


def test_quotas_off_put_no_guard_in_the_chain(tiny_db: Path) -> None:
    off = build_server(settings(tiny_db, {"enabled": False}))
    on = build_server(settings(tiny_db, {}))

    def guards(server: Any) -> list[type]:
        (chain,) = [m for m in server.middleware if isinstance(m, GuardChain)]
        return [type(g) for g in chain.guards]

    assert QuotaGuard not in guards(off)
    assert QuotaGuard in guards(on)


async def test_per_tool_entries_naming_no_served_tool_are_reported(
    tiny_db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    quotas = {"per_tool": {"nap": {"burst": 2}, "qeury": {"rate_per_s": 1}}}
    caplog.set_level(logging.WARNING, logger="wellhead.quotas")
    async with build_server_client(settings(tiny_db, quotas)):
        pass
    warnings = [r.getMessage() for r in caplog.records if r.name == "wellhead.quotas"]
    assert len(warnings) == 1 and "(qeury)" in warnings[0]


# -- the in-memory bucket and cap ---------------------------------------------------------


def test_token_bucket_arithmetic_with_a_clock() -> None:
    now = [100.0]
    backend = MemoryBackend(clock=lambda: now[0])
    rule = Rule(rate_per_s=2.0, burst=3, max_concurrent=None)
    assert [backend.try_acquire("k", rule) for _ in range(3)] == [None, None, None]
    denied = backend.try_acquire("k", rule)
    assert denied is not None and denied.reason == "rate"  # type: ignore[union-attr]
    assert denied.retry_after_s == pytest.approx(0.5)  # type: ignore[union-attr]
    now[0] += 0.25  # half a token
    assert backend.try_acquire("k", rule).retry_after_s == pytest.approx(0.25)  # type: ignore[union-attr]
    now[0] += 0.25
    assert backend.try_acquire("k", rule) is None
    now[0] += 60  # refills to the burst, not past it
    assert [backend.try_acquire("k", rule) for _ in range(4)][-1] is not None
    assert backend.try_acquire("other", rule) is None  # keys are independent


def test_memory_tracks_a_bounded_number_of_keys() -> None:
    backend = MemoryBackend(max_keys=100)
    rule = Rule(rate_per_s=1.0, burst=1, max_concurrent=None)
    for i in range(1_000):
        backend.try_acquire(f"k{i}", rule)
    assert len(backend) <= 100
    assert backend.try_acquire("k999", rule) is not None  # the recent ones are kept


async def test_rate_limit_refuses_with_retry_after_a_log_line_and_a_metric(
    tiny_db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client, runtime = served(tiny_db_settings := settings(tiny_db, {"rate_per_s": 0.5, "burst": 3}))
    assert tiny_db_settings.quotas.enabled
    caplog.set_level(logging.INFO, logger="wellhead.calls")
    async with client:
        results = [await client.call_tool("nap", {}, raise_on_error=False) for _ in range(5)]
        other_tool = await client.call_tool("query", {"sql": "SELECT x FROM t"})
    assert [r.is_error for r in results] == [False, False, False, True, True]
    assert not other_tool.is_error  # buckets are per tool
    error = error_of(results[3])
    assert error["error"] == "rate_limited" and error["reason"] == "rate"
    assert 1.0 < error["retry_after_s"] <= 2.0  # a token every 2 s
    assert "retry in" in error["message"] and "nap" in error["message"]
    lines = [r for r in caplog.records if r.getMessage() == "tool_call"]
    refused = [r for r in lines if getattr(r, "outcome", None) == "rate_limited"]
    assert len(refused) == 2
    assert refused[0].quota_reason == "rate"  # type: ignore[attr-defined]
    assert refused[0].retry_after_s == error["retry_after_s"]  # type: ignore[attr-defined]
    assert refused[0].error_id == error["error_id"]  # type: ignore[attr-defined]
    assert sample(runtime, "wellhead_quota_rejected_total", tool="nap", reason="rate") == 2
    assert sample(runtime, "wellhead_tool_calls_total", tool="nap", outcome="rate_limited") == 2


async def test_concurrency_cap_refuses_at_once_and_frees_slots_however_calls_end(
    tiny_db: Path,
) -> None:
    config = settings(
        tiny_db,
        {"rate_per_s": None, "max_concurrent": 2, "busy_retry_after_s": 0.7},
        limits={"per_tool": {"nap": {"timeout_s": 0.3}}},
    )
    client, runtime = served(config)
    async with client:
        started = time.monotonic()
        running = [
            asyncio.create_task(client.call_tool("nap", {"seconds": 0.2}, raise_on_error=False))
            for _ in range(2)
        ]
        await asyncio.sleep(0.05)
        busy = await client.call_tool("nap", {}, raise_on_error=False)
        assert time.monotonic() - started < 0.2  # refused without waiting for a slot
        error = error_of(busy)
        assert error["reason"] == "concurrency" and error["retry_after_s"] == 0.7
        assert not any(r.is_error for r in await asyncio.gather(*running))
        # Slots come back after success, after a timeout, and after an exception.
        assert not (await client.call_tool("nap", {}, raise_on_error=False)).is_error
        timed_out = await client.call_tool("nap", {"seconds": 5}, raise_on_error=False)
        assert error_of(timed_out)["error"] == "timeout"
        failed = await client.call_tool("fail_after", {}, raise_on_error=False)
        assert error_of(failed)["error"] == "internal_error"
        both = await asyncio.gather(
            client.call_tool("nap", {"seconds": 0.05}, raise_on_error=False),
            client.call_tool("nap", {"seconds": 0.05}, raise_on_error=False),
        )
        assert not any(r.is_error for r in both)
    reason = {"tool": "nap", "reason": "concurrency"}
    assert sample(runtime, "wellhead_quota_rejected_total", **reason) == 1


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_call_the_client_cancels_gives_its_slot_back(tiny_db: Path, backend: str) -> None:
    quotas: dict[str, Any] = {"rate_per_s": None, "max_concurrent": 1}
    if backend == "redis":
        quotas.update(redis_url=redis_url(), key_prefix=unique_prefix())
    client, _ = served(settings(tiny_db, quotas))
    async with client:
        long_call = asyncio.create_task(client.call_tool("nap", {"seconds": 30}))
        await asyncio.sleep(0.2)
        assert error_of(await client.call_tool("nap", {}, raise_on_error=False))["reason"] == (
            "concurrency"
        )
        long_call.cancel()  # the client sends notifications/cancelled
        deadline = time.monotonic() + 5
        while (result := await client.call_tool("nap", {}, raise_on_error=False)).is_error:
            assert error_of(result)["reason"] == "concurrency"
            assert time.monotonic() < deadline, "the cancelled call kept its slot"
            await asyncio.sleep(0.05)


async def test_a_tool_can_be_exempt_and_unknown_tools_are_not_metered(tiny_db: Path) -> None:
    config = settings(
        tiny_db,
        {"rate_per_s": 0.1, "burst": 1, "per_tool": {"query": {"rate_per_s": None}}},
    )
    client, runtime = served(config)
    async with client:
        queries = [await client.call_tool("query", {"sql": "SELECT 1"}) for _ in range(5)]
        unknown = [
            await client.call_tool(f"no_such_{i}", {}, raise_on_error=False) for i in range(3)
        ]
    assert not any(r.is_error for r in queries)
    assert all(error_of(r)["error"] == "unknown_tool" for r in unknown)
    assert (
        runtime.metrics.registry.get_sample_value(
            "wellhead_quota_rejected_total", {"tool": "_unknown", "reason": "rate"}
        )
        is None
    )


# -- Redis ----------------------------------------------------------------------------------


async def test_two_servers_on_one_redis_share_one_bucket(tiny_db: Path) -> None:
    import redis.asyncio as redis

    url = redis_url()
    prefix = unique_prefix()
    quotas = {"rate_per_s": 0.01, "burst": 4, "key_prefix": prefix}
    extra = {"state": {"backend": "redis", "redis_url": url}}
    first, _ = served(settings(tiny_db, quotas, **extra))
    second, _ = served(settings(tiny_db, quotas, **extra))
    async with first, second:
        results = []
        for i in range(10):
            client = first if i % 2 else second
            results.append(await client.call_tool("nap", {}, raise_on_error=False))
    assert sum(not r.is_error for r in results) == 4
    assert all(error_of(r)["retry_after_s"] > 90 for r in results[4:])  # 1 token per 100 s
    # Every key quotas wrote expires on its own (the bucket once it would be full again, the
    # slots once their leases are over): nothing accumulates in Redis.
    async with redis.Redis.from_url(url) as direct:
        keys = [key async for key in direct.scan_iter(match=f"{prefix}:*")]
        assert keys, "the quota keys were not found"
        ttls = [await direct.pttl(key) for key in keys]
        await direct.delete(*keys)
    assert all(0 < ttl <= 401_000 for ttl in ttls), ttls


async def test_redis_slot_leases_are_renewed_while_held_and_expire_when_not(
    tiny_db: Path,
) -> None:
    from wellhead.guards.quotas import Denied, Lease, RedisBackend

    url = redis_url()
    config = parse_settings(
        {"quotas": {"enabled": True, "lease_s": 0.6, "key_prefix": unique_prefix()}}
    ).quotas
    rule = Rule(rate_per_s=None, burst=1, max_concurrent=1)
    holder, other = RedisBackend(url, config), RedisBackend(url, config)
    key = f"{config.key_prefix}:{{lease}}"
    try:
        lease = await holder.acquire(key, rule)
        assert isinstance(lease, Lease)
        await asyncio.sleep(1.5)  # well past lease_s: renewed meanwhile (every 0.2 s)
        assert isinstance(await other.acquire(key, rule), Denied)
        assert holder._renewer is not None
        holder._renewer.cancel()  # the replica "dies": nobody renews its slot
        await asyncio.sleep(0.8)
        again = await other.acquire(key, rule)
        assert isinstance(again, Lease)
        await other.release(again)
        assert isinstance(await other.acquire(key, rule), Lease)
    finally:
        await holder.aclose()
        await other.aclose()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once it is closed


class Blackhole:
    """A TCP server that accepts connections and never answers: a hung Redis."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.mark.parametrize("policy", ["local", "open", "closed"])
async def test_redis_unreachable_applies_on_backend_error(tiny_db: Path, policy: str) -> None:
    quotas = {
        "rate_per_s": 0.01,
        "burst": 2,
        "redis_url": f"redis://127.0.0.1:{closed_port()}/0",
        "on_backend_error": policy,
    }
    client, runtime = served(settings(tiny_db, quotas))
    async with client:
        results = [await client.call_tool("nap", {}, raise_on_error=False) for _ in range(4)]
    admitted = [not r.is_error for r in results]
    if policy == "local":
        assert admitted == [True, True, False, False]  # this process's own bucket
        assert error_of(results[2])["reason"] == "rate"
    elif policy == "open":
        assert admitted == [True] * 4
    else:
        assert admitted == [False] * 4
        error = error_of(results[0])
        assert error["reason"] == "backend_unavailable" and 0 < error["retry_after_s"] <= 1
    # The first failure opens a 1 s window in which calls skip Redis: one error counted.
    assert sample(runtime, "wellhead_quota_backend_errors_total") == 1


async def test_a_hung_redis_costs_at_most_backend_timeout(tiny_db: Path) -> None:
    hole = Blackhole()
    quotas = {
        "redis_url": f"redis://127.0.0.1:{hole.port}/0",
        "backend_timeout_s": 0.2,
        "on_backend_error": "open",
    }
    client, runtime = served(settings(tiny_db, quotas))
    try:
        async with client:
            started = time.monotonic()
            first = await client.call_tool("nap", {}, raise_on_error=False)
            first_s = time.monotonic() - started
            started = time.monotonic()
            second = await client.call_tool("nap", {}, raise_on_error=False)
            second_s = time.monotonic() - started
    finally:
        hole.close()
    assert not first.is_error and not second.is_error
    assert 0.15 < first_s < 1.0  # waited for Redis, but only backend_timeout_s
    assert second_s < 0.15  # within the retry window Redis is not asked again
    assert sample(runtime, "wellhead_quota_backend_errors_total") == 1
