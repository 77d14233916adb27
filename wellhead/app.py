"""Composition root: settings in, a FastMCP server (and an ASGI app for HTTP) out.

Nothing here holds module-level state: two `build_server` calls give two independent
servers (own sources, metrics registry, stores), which is what tests and embedding need.

Guards, outermost first: CallGuard (errors, log line, metrics, audit) → QuotaGuard (when
quotas are on) → DeadlineGuard → BudgetGuard → OutputGuard (validation) → the tool.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastmcp import FastMCP
from key_value.aio.protocols import AsyncKeyValue
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from wellhead.config import DuckDBSourceConfig, Settings, StaticTokenAuthConfig
from wellhead.errors import ConfigError, WellheadError
from wellhead.governance.request import PrincipalGuard
from wellhead.guards.budget import BudgetGuard, OverflowStore
from wellhead.guards.calls import CallGuard, CallObserver, CallRecord, call_event
from wellhead.guards.catalog import ToolCatalog
from wellhead.guards.chain import GuardChain
from wellhead.guards.deadlines import DeadlineGuard
from wellhead.guards.schemas import DereferenceOnce
from wellhead.guards.validation import OutputGuard
from wellhead.observe.metrics import Metrics
from wellhead.observe.redact import hash_value, redact_mapping
from wellhead.observe.watchdog import InFlight, LoopWatchdog
from wellhead.sources import build_source
from wellhead.sources.base import Source
from wellhead.spill.store import SnapshotStore
from wellhead.sql.cost import CostGuard
from wellhead.sql.executor import QueryExecutor
from wellhead.sql.paging import CursorCodec
from wellhead.sql.policies import ColumnPolicies
from wellhead.sql.safety import check_read_only
from wellhead.sql.snapshots import Snapshots
from wellhead.sql.snapshots import default_dir as default_snapshot_dir
from wellhead.tools.core import register_core_tools
from wellhead.tools.plugins import entry_point_plugins, load_plugin
from wellhead.tools.read_more import register_read_more

log = logging.getLogger("wellhead.app")

INSTRUCTIONS = (
    "wellhead gives read-only SQL access to the configured data sources. Start with "
    "list_tables, then describe_table, then query. Results are paged: follow next_cursor "
    "or narrow the query."
)
CORE_DATA_TOOLS = ("query", "list_tables", "describe_table")


@dataclass
class Runtime:
    """Everything one server instance owns; built from settings, closed on shutdown."""

    settings: Settings
    sources: dict[str, Source]
    executor: QueryExecutor
    store: AsyncKeyValue
    metrics: Metrics = field(default_factory=Metrics)
    inflight: InFlight = field(default_factory=InFlight)
    observers: list[CallObserver] = field(default_factory=list)
    audit: Any = None
    exports: Any = None
    """The export store (wellhead.exports.store.ExportStore) when exports are on."""
    export_key: bytes = b""
    """HMAC key of export download links."""
    started: bool = False
    draining: bool = False
    _watchdog: LoopWatchdog | None = None
    _tracer: Any = None
    _metrics_server: Any = None
    _closers: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.metrics.watch_in_flight(self.inflight.counts)

    async def start(self) -> None:
        if self.audit is not None:  # a receiver that can never work stops the start
            from wellhead.observe.audit.setup import check_receivers

            await check_receivers(self.audit)
        for dialect in {source.dialect for source in self.sources.values()}:
            # The first parse in a dialect pays one-time initialisation: not on the loop.
            await asyncio.to_thread(check_read_only, "SELECT 1", dialect)
        for source in self.sources.values():
            await source.start()
            stats = getattr(source, "pool_stats", None)
            if callable(stats):
                self.metrics.watch_pool(source.name, stats)
        watchdog = self.settings.watchdog
        self._watchdog = LoopWatchdog(
            interval=watchdog.interval_s,
            threshold=watchdog.threshold_s,
            metrics=self.metrics,
            inflight=self.inflight,
        )
        self._watchdog.start()
        if self.settings.metrics.enabled and self.settings.metrics.port:
            self._metrics_server = self.metrics.start_http_server(
                self.settings.metrics.port, self.settings.server.host
            )
        self.started = True

    async def close(self) -> None:
        self.draining = True
        if self._watchdog is not None:
            await self._watchdog.stop()
        for source in self.sources.values():
            try:
                await source.close()
            except Exception:  # noqa: BLE001 - closing must go on for the others
                log.exception("closing source %s failed", source.name)
        if self.audit is not None:
            await asyncio.to_thread(self.audit.close)
        if self._tracer is not None:
            from wellhead.observe.tracing import shutdown_tracing

            shutdown_tracing(self._tracer)
        if self._metrics_server is not None:
            self._metrics_server.close()
        if self.exports is not None:
            await asyncio.to_thread(self.exports.close)
        for closer in self._closers:
            try:
                await closer()
            except Exception:  # noqa: BLE001 - closing must go on for the others
                log.exception("closing %r failed", closer)
        self.started = False

    async def readiness(self) -> dict[str, str]:
        status: dict[str, str] = {}
        if self.settings.state.backend == "redis":
            try:
                await asyncio.wait_for(self.store.get("readyz", collection="wellhead"), 2.0)
                status["state_store"] = "ok"
            except Exception as exc:  # noqa: BLE001 - any failure means not ready
                status["state_store"] = f"unavailable: {type(exc).__name__}"
        for name, source in self.sources.items():
            try:
                await asyncio.wait_for(source.ping(), timeout=2.0)
                status[name] = "ok"
            except (WellheadError, TimeoutError) as exc:
                status[name] = getattr(exc, "public_message", "timeout")
        return status


def demo_settings() -> Settings:
    """The no-config default: the generated DuckDB commerce dataset."""
    from wellhead.demo import ensure_demo_database

    path = ensure_demo_database()
    return Settings(sources={"demo": DuckDBSourceConfig(kind="duckdb", path=str(path))})


def cursor_secret(settings: Settings) -> bytes:
    if settings.cursor.secret:
        return settings.cursor.secret.encode()
    if settings.server.transport != "stdio":
        log.warning(
            "cursor.secret is not set: cursors are signed with a random per-process key and "
            "cannot be continued on another replica or after a restart"
        )
    return secrets.token_bytes(32)


def state_store(settings: Settings) -> AsyncKeyValue:
    """Session state and over-budget results: in memory, or in Redis shared by replicas."""
    if settings.state.backend == "redis":
        from key_value.aio.stores.redis import RedisStore

        assert settings.state.redis_url  # the config refuses redis without a url
        return RedisStore(url=settings.state.redis_url)
    from key_value.aio.stores.memory import MemoryStore

    return MemoryStore()


def snapshots(settings: Settings) -> Snapshots | None:
    """The spill store walks page from (`snapshots:`), or None when turned off."""
    config = settings.snapshots
    if not config.enabled:
        return None
    if settings.state.backend == "redis" and config.dir is None:
        # Replicas: a walk continued on another replica must find its snapshot there.
        log.warning(
            "snapshots are off: state.backend is redis (replicas) but snapshots.dir is not "
            "set; set it to a volume every replica mounts to page walks from snapshots"
        )
        return None
    store = SnapshotStore(
        config.dir or default_snapshot_dir(),
        ttl_s=config.ttl_s,
        max_bytes=config.max_bytes,
        max_bytes_per_caller=config.max_bytes_per_caller,
        max_rows=config.max_rows,
        max_result_bytes=config.max_result_bytes,
    )
    return Snapshots(
        store,
        spill_timeout_s=config.spill_timeout_s,
        max_row_bytes=settings.limits.max_result_budget_bytes,
    )


def build_runtime(settings: Settings) -> Runtime:
    if not settings.sources:
        raise ConfigError("no sources configured; add at least one under `sources:`")
    sources = {
        name: build_source(name, config, query_timeout_s=settings.limits.query_timeout_s)
        for name, config in settings.sources.items()
    }
    policies = ColumnPolicies.from_config(
        settings.column_policies, {name: source.dialect for name, source in sources.items()}
    )
    secret = cursor_secret(settings)
    executor = QueryExecutor(
        sources,
        settings.limits,
        CursorCodec(secret),
        policies=policies,
        snapshots=snapshots(settings),
        cost_guard=CostGuard(settings.cost_guard),
    )
    runtime = Runtime(
        settings=settings, sources=sources, executor=executor, store=state_store(settings)
    )
    if settings.exports.enabled:
        from wellhead.exports import export_store, link_key

        runtime.exports = export_store(settings.exports)
        runtime.export_key = link_key(settings.exports, secret)
    runtime.observers.append(_metrics_observer(runtime.metrics))
    if settings.audit.path or settings.audit.syslog or settings.audit.otlp:
        runtime.audit = _audit_sink(settings, runtime.metrics)
        runtime.observers.append(_audit_observer(runtime.audit, settings))
    if settings.tracing.enabled:
        from wellhead.observe.tracing import setup_tracing

        runtime._tracer = setup_tracing(
            True, settings.tracing.service_name, settings.tracing.otlp_endpoint
        )
    return runtime


def build_server(settings: Settings, runtime: Runtime | None = None) -> FastMCP:
    runtime = runtime or build_runtime(settings)
    limits = settings.limits

    header_schemas: dict[str, dict[str, Any]] = {}

    @asynccontextmanager
    async def lifespan(server: FastMCP) -> AsyncIterator[dict[str, Any]]:
        await runtime.start()
        header_schemas.update(await tools_with_param_headers(server))
        if settings.quotas.enabled and settings.quotas.per_tool:
            from wellhead.guards.quotas import warn_unknown_tools

            warn_unknown_tools(settings.quotas, await super(FastMCP, server).list_tools())
        try:
            yield {"runtime": runtime}
        finally:
            await runtime.close()

    overflow = OverflowStore(runtime.store, runtime.executor.codec, settings.state.overflow_ttl_s)
    # Data tools fit their pages to the budget a call asks for (at most the configured max).
    budgets = {name: limits.max_result_budget_bytes for name in CORE_DATA_TOOLS}
    budgets.update({name: limits.max_result_budget_bytes for name in sql_tool_names(settings)})
    budgets.update({name: t.budget_bytes for name, t in limits.per_tool.items() if t.budget_bytes})
    deadlines = {name: limits.query_timeout_s + 5 for name in CORE_DATA_TOOLS}
    deadlines.update({name: t.timeout_s for name, t in limits.per_tool.items() if t.timeout_s})
    catalog = ToolCatalog()
    guards = [
        CallGuard(
            mask_error_details=settings.server.mask_error_details,
            observers=runtime.observers,
            log_arguments=argument_policy(settings.logging.arguments),
            inflight=runtime.inflight,  # also counts wellhead_tool_in_flight
            catalog=catalog,
            max_logged_argument_bytes=limits.max_logged_argument_bytes,
        ),
        *_quota_guards(settings, runtime, catalog),
        DeadlineGuard(
            limits.tool_timeout_s,
            deadlines,
            on_abandoned=runtime.metrics.abandoned_threads.set,
            catalog=catalog,
        ),
        BudgetGuard(
            limits.result_budget_bytes,
            overflow,
            budgets,
            catalog=catalog,
            max_budget=limits.max_result_budget_bytes,
        ),
        OutputGuard(catalog),
        DereferenceOnce(),
        PrincipalGuard(),
    ]
    chain = GuardChain(guards)
    mcp: FastMCP = FastMCP(
        settings.server.name,
        instructions=INSTRUCTIONS,
        auth=auth_provider(settings),
        lifespan=lifespan,
        middleware=[chain],
        mask_error_details=settings.server.mask_error_details,
        session_state_store=runtime.store,
        dereference_schemas=False,  # DereferenceOnce does it, once per tool
    )
    # Exports first: `wellhead://exports/{id}` must match before `wellhead://{source}/{table}`.
    _register_exports(mcp, settings, runtime)
    register_core_tools(mcp, runtime.executor, settings.primary_source, limits)
    register_read_more(mcp, overflow, limits.result_budget_bytes)
    _register_sql_tools(mcp, settings, runtime)
    specs = list(settings.plugins)
    if settings.plugin_entry_points:
        specs += [spec for spec in entry_point_plugins() if spec not in specs]
    for spec in specs:
        load_plugin(mcp, spec, runtime)
    _register_tasks(mcp, settings, chain)
    _add_http_routes(mcp, runtime)
    # Without a lookup, the MCP SDK validates a stateless call's Mcp-Param-* headers by running
    # a whole tools/list through every middleware on every tools/call: a fifth of the event
    # loop's time per call (py-spy). The tools are fixed once the server starts, so their
    # schemas are looked up instead, as the SDK's own MCPServer does.
    mcp._mcp_server.get_tool_input_schema = header_schemas.get
    return mcp


def _quota_guards(settings: Settings, runtime: Runtime, catalog: ToolCatalog) -> list[Any]:
    """The quota guard when quotas are on (none at all when off: then they cost nothing)."""
    from wellhead.guards.quotas import build_quota_guard

    state = settings.state
    guard = build_quota_guard(
        settings.quotas,
        state.redis_url if state.backend == "redis" else None,
        runtime.metrics.registry,
        runtime.metrics.tool_label,
        catalog,
        workers=settings.server.workers,
    )
    if guard is None:
        return []
    runtime._closers.append(guard.backend.aclose)
    return [guard]


async def tools_with_param_headers(mcp: FastMCP) -> dict[str, dict[str, Any]]:
    """Input schemas of the tools that declare `x-mcp-header` parameters (usually none).

    A tool absent here has nothing for the SDK to validate, exactly as if its schema were
    looked at. Listed past FastMCP's visibility filters (like the SDK's lookup, which runs
    before middleware): header validation is not authorisation; the call itself is.
    """
    tools = await super(FastMCP, mcp).list_tools()
    return {
        tool.name: tool.parameters
        for tool in tools
        if "x-mcp-header" in json.dumps(tool.parameters, separators=(",", ":"))
    }


def auth_provider(settings: Settings) -> Any:
    """FastMCP's own token verifiers; they apply to HTTP and SSE, not to stdio."""
    auth = settings.auth
    if auth is None:
        return None
    if isinstance(auth, StaticTokenAuthConfig):
        from fastmcp.server.auth.providers.jwt import StaticTokenVerifier

        return StaticTokenVerifier(
            tokens={
                token: {**t.claims, "client_id": t.client_id, "scopes": t.scopes}
                for token, t in auth.tokens.items()
            },
            required_scopes=auth.required_scopes or None,
        )
    from fastmcp.server.auth.providers.jwt import JWTVerifier

    return JWTVerifier(
        jwks_uri=auth.jwks_uri,
        public_key=auth.public_key,
        issuer=auth.issuer,
        audience=auth.audience,
        algorithm=auth.algorithm,
        required_scopes=auth.required_scopes or None,
    )


def sql_tool_names(settings: Settings) -> list[str]:
    if not settings.tools:
        return []
    from wellhead.tools.sql_tools import enabled_tools

    return list(enabled_tools(settings))


def _register_exports(mcp: FastMCP, settings: Settings, runtime: Runtime) -> None:
    if runtime.exports is not None:
        from wellhead.exports.service import Exporter
        from wellhead.tools.export import register_export_tools

        exporter = Exporter(runtime.executor, runtime.exports, settings.exports)
        register_export_tools(mcp, exporter, settings.primary_source, runtime.export_key)


def _register_tasks(mcp: FastMCP, settings: Settings, chain: GuardChain) -> None:
    """`query` and `export_query` as MCP tasks, when `tasks.enabled`."""
    from wellhead.tasks import enable_tasks, tasks_extension

    extension = tasks_extension(settings)
    if extension is not None:
        mcp.add_extension(extension)
        enable_tasks(mcp, chain)


def _register_sql_tools(mcp: FastMCP, settings: Settings, runtime: Runtime) -> None:
    if not settings.tools:
        return
    from wellhead.tools.sql_tools import register_sql_tools

    register_sql_tools(mcp, settings, runtime.executor)


def argument_policy(policy: str) -> Any:
    """How tool arguments appear in logs and audit events."""
    if policy == "none":
        return None
    if policy == "full":
        return lambda arguments: arguments
    if policy == "hashed":
        return lambda arguments: {k: hash_value(v) for k, v in arguments.items()}
    return redact_mapping


def _metrics_observer(metrics: Metrics) -> CallObserver:
    def observe(record: CallRecord) -> None:
        metrics.record_call(
            record.tool_name,
            record.outcome,
            record.execution_time_ms / 1000,
            record.response_bytes if record.outcome != "cancelled" else None,
        )

    return observe


def _audit_sink(settings: Settings, metrics: Metrics) -> Any:
    from wellhead.observe.audit.setup import SpoolCollector, build_audit_sink, remote_sinks

    def dropped(n: int = 1) -> None:
        metrics.audit_dropped.inc(n)

    sink = build_audit_sink(
        settings.audit,
        on_drop=dropped,
        max_argument_bytes=settings.limits.max_logged_argument_bytes,
    )
    if remote_sinks(sink):
        metrics.registry.register(SpoolCollector(remote_sinks(sink)))
    return sink


def _audit_observer(sink: Any, settings: Settings) -> CallObserver:
    arguments = argument_policy(settings.logging.arguments)

    async def observe(record: CallRecord) -> None:
        event = call_event(record)
        if arguments is not None:
            event["arguments"] = arguments(record.arguments)
        await sink.aemit(event)  # waits (without blocking the loop) when the queue is full

    return observe


def _add_http_routes(mcp: FastMCP, runtime: Runtime) -> None:
    @mcp.custom_route("/healthz", methods=["GET"])
    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @mcp.custom_route("/readyz", methods=["GET"])
    async def readyz(_: Request) -> JSONResponse:
        if runtime.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        if not runtime.started:
            return JSONResponse({"status": "starting"}, status_code=503)
        sources = await runtime.readiness()
        ready = all(value == "ok" for value in sources.values())
        body: dict[str, Any] = {"status": "ok" if ready else "unavailable", "sources": sources}
        if runtime.audit is not None:
            from wellhead.observe.audit.setup import receiver_health

            receivers = receiver_health(runtime.audit)  # events spool meanwhile
            if receivers:
                body["audit"] = receivers
                ready = ready and all(value == "ok" for value in receivers.values())
                body["status"] = "ok" if ready else "unavailable"
        return JSONResponse(body, status_code=200 if ready else 503)

    if runtime.settings.metrics.enabled:

        @mcp.custom_route("/metrics", methods=["GET"])
        async def metrics(request: Request) -> Response:
            body, content_type = runtime.metrics.render(request.headers.get("accept"))
            return Response(body, media_type=content_type)


def allowed_hosts(settings: Settings) -> list[str]:
    """Host headers accepted with DNS-rebinding protection on: the bind address, plus config."""
    server = settings.server
    hosts = list(server.allowed_hosts)
    if server.host in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):
        hosts += ["127.0.0.1", "localhost", "[::1]"]
    else:
        hosts.append(server.host)
    unique = list(dict.fromkeys(hosts))
    return unique + [f"{h}:*" for h in unique]


def http_app(mcp: FastMCP, settings: Settings) -> Any:
    server = settings.server
    sse = server.transport == "sse"
    return mcp.http_app(
        path="/sse" if sse else server.path,
        transport="sse" if sse else "http",
        stateless_http=None if sse else server.stateless,
        host_origin_protection=True,
        allowed_hosts=allowed_hosts(settings),
        allowed_origins=server.allowed_origins or None,
    )
