"""Composition root: settings in, a FastMCP server (and an ASGI app for HTTP) out.

Nothing here holds module-level state: two `build_server` calls give two independent
servers, which is what tests and multi-tenant embedding need.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastmcp import FastMCP
from starlette.requests import Request
from starlette.responses import JSONResponse

from wellhead.config import DuckDBSourceConfig, Settings
from wellhead.errors import ConfigError, WellheadError
from wellhead.guards.calls import CallGuard, CallObserver
from wellhead.sources import build_source
from wellhead.sources.base import Source
from wellhead.sql.executor import QueryExecutor
from wellhead.sql.paging import CursorCodec
from wellhead.tools.core import register_core_tools

log = logging.getLogger("wellhead.app")

INSTRUCTIONS = (
    "wellhead gives read-only SQL access to the configured data sources. Start with "
    "list_tables, then describe_table, then query. Results are paged: follow next_cursor "
    "or narrow the query."
)


@dataclass
class Runtime:
    """Everything one server instance owns; built from settings, closed on shutdown."""

    settings: Settings
    sources: dict[str, Source]
    executor: QueryExecutor
    observers: list[CallObserver] = field(default_factory=list)
    started: bool = False

    async def start(self) -> None:
        for source in self.sources.values():
            await source.start()
        self.started = True

    async def close(self) -> None:
        for source in self.sources.values():
            try:
                await source.close()
            except Exception:  # noqa: BLE001 - closing must go on for the others
                log.exception("closing source %s failed", source.name)
        self.started = False

    async def readiness(self) -> dict[str, str]:
        status: dict[str, str] = {}
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


def build_runtime(settings: Settings) -> Runtime:
    if not settings.sources:
        raise ConfigError("no sources configured; add at least one under `sources:`")
    sources = {
        name: build_source(name, config, query_timeout_s=settings.limits.query_timeout_s)
        for name, config in settings.sources.items()
    }
    executor = QueryExecutor(sources, settings.limits, CursorCodec(cursor_secret(settings)))
    return Runtime(settings=settings, sources=sources, executor=executor)


def build_server(settings: Settings, runtime: Runtime | None = None) -> FastMCP:
    runtime = runtime or build_runtime(settings)

    @asynccontextmanager
    async def lifespan(_: FastMCP) -> AsyncIterator[dict[str, Any]]:
        await runtime.start()
        try:
            yield {"runtime": runtime}
        finally:
            await runtime.close()

    guard = CallGuard(
        mask_error_details=settings.server.mask_error_details,
        observers=runtime.observers,
    )
    mcp: FastMCP = FastMCP(
        settings.server.name,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        middleware=[guard],
        mask_error_details=settings.server.mask_error_details,
    )
    register_core_tools(mcp, runtime.executor, settings.primary_source, settings.limits)
    _add_health_routes(mcp, runtime)
    mcp.wellhead_runtime = runtime  # type: ignore[attr-defined]
    return mcp


def _add_health_routes(mcp: FastMCP, runtime: Runtime) -> None:
    @mcp.custom_route("/healthz", methods=["GET"])
    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @mcp.custom_route("/readyz", methods=["GET"])
    async def readyz(_: Request) -> JSONResponse:
        if not runtime.started:
            return JSONResponse({"status": "starting"}, status_code=503)
        sources = await runtime.readiness()
        ready = all(value == "ok" for value in sources.values())
        return JSONResponse(
            {"status": "ok" if ready else "unavailable", "sources": sources},
            status_code=200 if ready else 503,
        )


def allowed_hosts(settings: Settings) -> list[str]:
    """Host headers accepted with DNS-rebinding protection on: the bind address, plus config."""
    server = settings.server
    hosts = list(server.allowed_hosts)
    if server.host in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):
        hosts += ["127.0.0.1", "localhost", "[::1]"]
    else:
        hosts.append(server.host)
    return [h for h in dict.fromkeys(hosts)] + [f"{h}:*" for h in dict.fromkeys(hosts)]


def http_app(mcp: FastMCP, settings: Settings) -> Any:
    server = settings.server
    return mcp.http_app(
        path=server.path if server.transport != "sse" else "/sse",
        transport="sse" if server.transport == "sse" else "http",
        stateless_http=server.stateless if server.transport != "sse" else None,
        host_origin_protection=True,
        allowed_hosts=allowed_hosts(settings),
        allowed_origins=server.allowed_origins or None,
    )


def environment_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")
