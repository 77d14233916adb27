"""Quotas: per principal and per tool, a token bucket and a cap on running calls.

A call is admitted or refused at once, never queued: a refused call ends as a structured
tool error (`rate_limited`) carrying `retry_after_s`, with the reason in its log line and
in `wellhead_quota_rejected_total`. The principal is the token's subject (else its client
id) when the caller authenticated, else the client's address; stdio is one local caller.

State is in this process's memory, or in Redis so that N replicas enforce one limit: each
admission is one Lua script run (bucket and slot checked and taken together, atomically,
on Redis's clock). A running call holds a slot with a lease its replica renews; a replica
that dies stops renewing, so its slots are freed within `lease_s` and never leak. When
Redis cannot be reached in `backend_timeout_s`, `on_backend_error` decides: `local`
(this replica's own limits), `open` (admit) or `closed` (refuse, with a retry hint).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import math
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from fastmcp.server.dependencies import get_access_token, get_http_request
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools import ToolResult
from mcp.types import CallToolRequestParams
from prometheus_client import CollectorRegistry, Counter

from wellhead.config import QuotaRule, QuotasConfig
from wellhead.guards.calls import ToolFailure, current_call
from wellhead.guards.catalog import ToolCatalog

log = logging.getLogger("wellhead.quotas")

OUTCOME = "rate_limited"
"""The outcome (and error kind) of a refused call, in log lines and tool-call metrics."""

REASONS = ("rate", "concurrency", "backend_unavailable")

BACKEND_RETRY_S = 1.0
"""After a Redis failure, how long calls skip Redis and apply `on_backend_error` at once."""


@dataclass(frozen=True)
class Rule:
    """One tool's resolved quota; a None limit is not enforced."""

    rate_per_s: float | None
    burst: int
    max_concurrent: int | None

    @property
    def active(self) -> bool:
        return self.rate_per_s is not None or self.max_concurrent is not None


@dataclass(frozen=True)
class Denied:
    reason: str
    retry_after_s: float


@dataclass
class Lease:
    """A slot held by a running call; `release` gives it back (once)."""

    key: str
    member: str
    backend: Backend


class Backend(Protocol):
    async def acquire(self, key: str, rule: Rule) -> Lease | Denied | None: ...

    async def release(self, lease: Lease) -> None: ...

    async def aclose(self) -> None: ...


def resolve_rules(config: QuotasConfig) -> tuple[Rule, dict[str, Rule]]:
    """(the default rule, rules by tool name): a per-tool key left out inherits the default."""

    def merge(override: QuotaRule | None) -> Rule:
        rate, burst, cap = config.rate_per_s, config.burst, config.max_concurrent
        if override is not None:
            given = override.model_fields_set
            rate = override.rate_per_s if "rate_per_s" in given else rate
            burst = override.burst if "burst" in given else burst
            cap = override.max_concurrent if "max_concurrent" in given else cap
        if burst is None:
            burst = max(1, math.ceil(rate)) if rate is not None else 1
        return Rule(rate, burst, cap)

    return merge(None), {name: merge(rule) for name, rule in config.per_tool.items()}


def principal() -> str:
    """Whom a quota counts: `token:<subject or client id>`, else `addr:<ip>`, else `local`."""
    try:
        token = get_access_token()
    except Exception:  # noqa: BLE001 - no auth context on this transport
        token = None
    if token is not None:
        return f"token:{token.subject or token.client_id}"
    try:
        request = get_http_request()
    except RuntimeError:  # stdio: one local caller
        return "local"
    client = request.client
    return f"addr:{client.host}" if client is not None else "addr:?"


# -- in memory ------------------------------------------------------------------------------


class MemoryBackend:
    """One process's quotas: a few dict operations per call, no lock (one event loop).

    At most `max_keys` (principal, tool) pairs are tracked; past it the least recently seen
    pair without a running call is forgotten (its bucket starts full again).
    """

    def __init__(self, max_keys: int = 100_000, clock: Any = time.monotonic) -> None:
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # key -> [tokens, at]
        self._running: dict[str, int] = {}

    def try_acquire(self, key: str, rule: Rule) -> Lease | Denied | None:
        running = self._running.get(key, 0)
        cap = rule.max_concurrent
        if cap is not None and running >= cap:
            return Denied("concurrency", 0.0)
        rate = rule.rate_per_s
        if rate is not None:
            now = self.clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = [float(rule.burst), now]
                if len(self._buckets) > self.max_keys:
                    self._forget()
            else:
                self._buckets.move_to_end(key)
                bucket[0] = min(rule.burst, bucket[0] + (now - bucket[1]) * rate)
                bucket[1] = now
            if bucket[0] < 1.0:
                return Denied("rate", (1.0 - bucket[0]) / rate)
            bucket[0] -= 1.0
        if cap is None:
            return None
        self._running[key] = running + 1
        return Lease(key, "", self)

    async def acquire(self, key: str, rule: Rule) -> Lease | Denied | None:
        return self.try_acquire(key, rule)

    def release_now(self, lease: Lease) -> None:
        left = self._running.get(lease.key, 0) - 1
        if left > 0:
            self._running[lease.key] = left
        else:
            self._running.pop(lease.key, None)

    async def release(self, lease: Lease) -> None:
        self.release_now(lease)

    async def aclose(self) -> None:
        return None

    def _forget(self) -> None:
        oldest = list(itertools.islice(self._buckets, max(1, self.max_keys // 100)))
        for key in oldest:
            if key not in self._running:
                del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


# -- in Redis -------------------------------------------------------------------------------

# KEYS: bucket hash, slots sorted set (member -> lease expiry, ms on Redis's clock).
# ARGV: rate per ms (0: none), burst, cap (0: none), lease ms, member.
# Returns {1, 0} admitted; {0, ms} refused by the bucket; {0, -1} refused by the cap.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local lease = tonumber(ARGV[4])
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= cap then
    return {0, -1}
  end
end
if rate > 0 then
  local state = redis.call('HMGET', KEYS[1], 't', 'at')
  local tokens = burst
  if state[1] then
    local idle = math.max(0, now - tonumber(state[2]))
    tokens = math.min(burst, tonumber(state[1]) + idle * rate)
  end
  if tokens < 1 then
    return {0, math.ceil((1 - tokens) / rate)}
  end
  tokens = tokens - 1
  redis.call('HSET', KEYS[1], 't', tostring(tokens), 'at', now)
  redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate) + 1000)
end
if cap > 0 then
  redis.call('ZADD', KEYS[2], now + lease, ARGV[5])
  redis.call('PEXPIRE', KEYS[2], lease + 1000)
end
return {1, 0}
"""

# KEYS: a slots sorted set. ARGV: lease ms, members this replica holds there.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + lease, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], lease + 1000)
return 1
"""


class BackendUnavailable(Exception):
    """Redis could not answer in time; the caller applies `on_backend_error`."""


class RedisBackend:
    """Quotas shared by every replica using the same Redis and key prefix."""

    def __init__(self, url: str, config: QuotasConfig) -> None:
        import redis.asyncio as redis

        timeout = config.backend_timeout_s
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self.timeout = timeout
        self.lease_ms = max(1, int(config.lease_s * 1000))
        self.renew_every = config.lease_s / 3
        self._acquire = self.client.register_script(_ACQUIRE)
        self._renew = self.client.register_script(_RENEW)
        self._held: dict[str, set[str]] = {}
        self._renewer: asyncio.Task[None] | None = None

    async def acquire(self, key: str, rule: Rule) -> Lease | Denied | None:
        rate = rule.rate_per_s / 1000 if rule.rate_per_s is not None else 0
        cap = rule.max_concurrent or 0
        member = os.urandom(9).hex()
        args: list[str | int] = [repr(rate), rule.burst, cap, self.lease_ms, member]
        try:
            async with asyncio.timeout(self.timeout):
                admitted, wait_ms = await self._acquire(keys=[key + ":b", key + ":c"], args=args)
        except Exception as exc:  # noqa: BLE001 - redis, socket and timeout errors alike
            raise BackendUnavailable(type(exc).__name__) from exc
        if not admitted:
            if int(wait_ms) < 0:
                return Denied("concurrency", 0.0)
            return Denied("rate", int(wait_ms) / 1000)
        if not cap:
            return None
        self._held.setdefault(key, set()).add(member)
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_leases())
        return Lease(key, member, self)

    async def release(self, lease: Lease) -> None:
        held = self._held.get(lease.key)
        if held is not None:
            held.discard(lease.member)
            if not held:
                del self._held[lease.key]
        try:
            with anyio.CancelScope(shield=True):  # a cancelled call still frees its slot
                async with asyncio.timeout(self.timeout):
                    await self.client.zrem(lease.key + ":c", lease.member)
        except Exception as exc:  # noqa: BLE001 - the lease expires on its own
            log.warning(
                "could not release a quota slot (%s); it expires within lease_s",
                type(exc).__name__,
            )

    async def _renew_leases(self) -> None:
        """While this replica holds slots, push their expiry forward every lease_s/3."""
        while self._held:
            await asyncio.sleep(self.renew_every)
            try:
                async with asyncio.timeout(self.timeout * 4):
                    pipe = self.client.pipeline(transaction=False)
                    for key, members in list(self._held.items()):
                        await self._renew(
                            keys=[key + ":c"], args=[self.lease_ms, *members], client=pipe
                        )
                    await pipe.execute()
            except Exception as exc:  # noqa: BLE001 - try again at the next tick
                log.warning("could not renew quota slots: %s", type(exc).__name__)

    async def aclose(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
        await self.client.aclose()


# -- the guard ------------------------------------------------------------------------------


class QuotaMetrics:
    def __init__(self, registry: CollectorRegistry, label: Any = str) -> None:
        self.label = label
        self.rejected = Counter(
            "wellhead_quota_rejected_total",
            "Tool calls refused by a quota, by tool and reason (rate, concurrency, "
            "backend_unavailable).",
            ["tool", "reason"],
            registry=registry,
        )
        self.backend_errors = Counter(
            "wellhead_quota_backend_errors_total",
            "Quota checks Redis did not answer in time (on_backend_error applied).",
            registry=registry,
        )


class QuotaGuard(Middleware):
    """Admits a call under its principal's quota for the tool, or refuses it at once."""

    def __init__(
        self,
        config: QuotasConfig,
        backend: Backend,
        *,
        fallback: MemoryBackend | None = None,
        metrics: QuotaMetrics | None = None,
        catalog: ToolCatalog | None = None,
    ) -> None:
        self.config = config
        self.default, self.rules = resolve_rules(config)
        self.backend = backend
        self.fallback = fallback or MemoryBackend(config.max_tracked_keys)
        self.metrics = metrics
        self.catalog = catalog or ToolCatalog()
        self.prefix = config.key_prefix
        self._down_until = 0.0
        self._keys: dict[tuple[str, str], str] = {}

    async def on_call_tool(
        self,
        context: MiddlewareContext[CallToolRequestParams],
        call_next: CallNext[CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        facts = await self.catalog.facts(context)
        if facts is None:  # no such tool for this caller: FastMCP refuses it, unmetered
            return await call_next(context)
        tool = facts.name
        rule = self.rules.get(tool, self.default)
        if not rule.active:
            return await call_next(context)
        key = self._key(principal(), tool)
        admission = await self._admit(key, rule)
        if isinstance(admission, Denied):
            raise self._refuse(tool, rule, admission)
        if admission is None:
            return await call_next(context)
        try:
            return await call_next(context)
        finally:
            await admission.backend.release(admission)

    def _key(self, who: str, tool: str) -> str:
        """`prefix:{digest}`: a digest, so no address or subject sits in Redis; the braces
        keep a key's bucket and slots in one Redis Cluster slot."""
        key = self._keys.get((who, tool))
        if key is None:
            digest = hashlib.sha256(f"{who}\x00{tool}".encode()).hexdigest()[:24]
            key = f"{self.prefix}:{{{digest}}}"
            if len(self._keys) >= 10_000:
                self._keys.clear()
            self._keys[(who, tool)] = key
        return key

    async def _admit(self, key: str, rule: Rule) -> Lease | Denied | None:
        if self.backend is self.fallback or time.monotonic() >= self._down_until:
            try:
                return await self.backend.acquire(key, rule)
            except BackendUnavailable as exc:
                self._backend_failed(str(exc))
        policy = self.config.on_backend_error
        if policy == "local":
            return self.fallback.try_acquire(key, rule)
        if policy == "open":
            return None
        wait = max(self._down_until - time.monotonic(), 0.0) or BACKEND_RETRY_S
        return Denied("backend_unavailable", wait)

    def _backend_failed(self, error: str) -> None:
        if self.metrics is not None:
            self.metrics.backend_errors.inc()
        now = time.monotonic()
        if now >= self._down_until + BACKEND_RETRY_S:  # once per outage, not once per call
            log.warning(
                "quota backend unavailable (%s); applying on_backend_error=%s for %g s",
                error,
                self.config.on_backend_error,
                BACKEND_RETRY_S,
                extra={"on_backend_error": self.config.on_backend_error},
            )
        self._down_until = now + BACKEND_RETRY_S

    def _refuse(self, tool: str, rule: Rule, denied: Denied) -> ToolFailure:
        retry = denied.retry_after_s
        if denied.reason == "concurrency":
            retry = self.config.busy_retry_after_s
            message = (
                f"tool '{tool}' already has {rule.max_concurrent} call(s) of yours running, "
                "the most allowed at once"
            )
        elif denied.reason == "rate":
            message = (
                f"rate limit for tool '{tool}' reached ({rule.rate_per_s:g} calls/s, "
                f"bursts of {rule.burst})"
            )
        else:
            message = "the quota service is unavailable and quotas fail closed"
        retry = max(round(retry, 3), 0.001)
        record = current_call()
        if record is not None:
            record.extra["quota_reason"] = denied.reason
            record.extra["retry_after_s"] = retry
        if self.metrics is not None:
            self.metrics.rejected.labels(self.metrics.label(tool), denied.reason).inc()
        return ToolFailure(
            OUTCOME,
            OUTCOME,
            f"{message}; retry in {retry:g} s",
            details={"reason": denied.reason, "retry_after_s": retry},
        )


def warn_unknown_tools(config: QuotasConfig, tools: Any) -> None:
    """A `per_tool` entry naming no served tool applies to nothing: say so at start-up."""
    served = {str(getattr(tool, "name", tool)) for tool in tools}
    unknown = sorted(set(config.per_tool) - served)
    if unknown:
        log.warning(
            "quotas.per_tool names tools this server does not serve (%s); those entries "
            "apply to nothing: check the spelling",
            ", ".join(unknown),
            extra={"unknown_tools": unknown},
        )


def build_quota_guard(
    config: QuotasConfig,
    state_redis_url: str | None,
    registry: CollectorRegistry,
    label: Any = str,
    catalog: ToolCatalog | None = None,
    workers: int = 1,
) -> QuotaGuard | None:
    """The guard for these settings, or None when quotas are off (then they cost nothing)."""
    if not config.enabled:
        return None
    fallback = MemoryBackend(config.max_tracked_keys)
    url = config.redis_url or state_redis_url
    if not url and workers > 1:
        log.warning(
            "quotas are kept in memory, so each of the %d worker processes enforces its own "
            "limits; use state.backend redis (or quotas.redis_url) for one limit",
            workers,
        )
    backend: Backend = RedisBackend(url, config) if url else fallback
    return QuotaGuard(
        config,
        backend,
        fallback=fallback,
        metrics=QuotaMetrics(registry, label),
        catalog=catalog,
    )
