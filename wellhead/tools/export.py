"""`export_query`: a whole result as a file, handed out as an MCP resource and a download URL.

The tool returns a resource link (`wellhead://exports/{id}`) with its MIME type, size,
row count and expiry; `resources/read` of that URI (`?part=N` for the next chunks) gives
the bytes in chunks of `exports.chunk_bytes`. Over HTTP the result also carries a signed,
expiring URL that wellhead serves itself, streamed from the file. Exports belong to the
caller (`identity.caller_owner`): for anyone else they do not exist.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from typing import Annotated, Any, Literal

from fastmcp import Context, FastMCP
from fastmcp.exceptions import ResourceError
from fastmcp.resources import ResourceContent, ResourceResult
from fastmcp.tools import ToolResult
from mcp.types import ResourceLink, TextContent
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from wellhead.exports import links
from wellhead.exports.service import Exporter
from wellhead.exports.store import ExportInfo
from wellhead.identity import caller_owner, caller_scopes
from wellhead.sql import encoding
from wellhead.tools.core import SourceArg
from wellhead.tools.models import lean_schema

EXPORT_URI = "wellhead://exports/{export_id}"
_NOT_FOUND = (
    "export not found: it has expired or been evicted, or it belongs to another caller "
    "(exports only exist for the caller and session that made them); run export_query again"
)


class ExportResult(BaseModel):
    uri: str = Field(description="resources/read this URI (add ?part=N for chunk N)")
    mime_type: str
    format: str
    size_bytes: int
    row_count: int
    columns: list[list[str]] = Field(description="[name, type] per column")
    parts: int = Field(description="chunks to read through resources/read")
    expires_at: str
    download_url: str | None = Field(description="signed HTTP link, valid until expires_at")
    note: str


def register_export_tools(
    mcp: FastMCP, exporter: Exporter, default_source: str, secret: bytes
) -> None:
    config = exporter.config
    store = exporter.store

    @mcp.tool(
        annotations={"readOnlyHint": True, "destructiveHint": False, "openWorldHint": False},
        output_schema=lean_schema(ExportResult),
        timeout=config.timeout_s + 5,
        description=(
            "Run one read-only SQL statement and save its WHOLE result as a file (parquet, "
            "csv or jsonl). Returns a resource link (read it with resources/read) and, over "
            "HTTP, a signed download URL. Use for full results; use `query` to look at rows."
        ),
    )
    async def export_query(
        sql: Annotated[str, Field(description="SQL in the source's dialect.")],
        params: Annotated[
            dict[str, str | int | float | bool | None] | None,
            Field(description="Values for :name placeholders."),
        ] = None,
        source: SourceArg = None,
        format: Annotated[
            Literal["parquet", "csv", "jsonl"], Field(description="File format.")
        ] = "parquet",
        ctx: Context | None = None,
    ) -> ToolResult:
        owner = caller_owner()
        name = source or default_source
        progress = _progress(ctx)
        info = await exporter.export(
            sql=sql,
            params=params or {},
            source=name,
            fmt=format,
            owner=owner,
            scopes=caller_scopes(),
            on_progress=progress,
        )
        return export_result(
            info, config.chunk_bytes, _download_url(config.public_url, secret, info)
        )

    @mcp.resource(
        EXPORT_URI + "{?part}",
        name="export",
        description="One chunk of an export made by export_query (part 0 first).",
    )
    async def export_chunk(export_id: str, part: int = 0) -> ResourceResult:
        owner = caller_owner()
        info = await asyncio.to_thread(store.get, export_id, owner)
        if info is None:
            raise ResourceError(_NOT_FOUND)
        parts = _parts(info.size, config.chunk_bytes)
        if not 0 <= part < parts:
            raise ResourceError(f"part must be between 0 and {parts - 1} for this export")
        data = await asyncio.to_thread(
            store.read, info, part * config.chunk_bytes, config.chunk_bytes
        )
        meta: dict[str, Any] = {"part": part, "parts": parts, "size_bytes": info.size}
        if part + 1 < parts:
            meta["next_uri"] = f"{_uri(info)}?part={part + 1}"
        return ResourceResult([ResourceContent(data, mime_type=info.mime_type, meta=meta)])

    @mcp.custom_route(links.DOWNLOAD_PATH, methods=["GET"])
    async def download(request: Request) -> Response:
        export_id = request.path_params["export_id"]
        expires = request.query_params.get("expires")
        sig = request.query_params.get("sig")
        info = await asyncio.to_thread(store.get_any, export_id)
        if info is None or not links.verify(secret, export_id, info.owner, expires, sig):
            return JSONResponse(
                {"error": "not_found", "message": "no such export, or the link has expired"},
                status_code=404,
            )
        return FileResponse(
            store.path(info),  # streamed in chunks by Starlette, never read whole
            media_type=info.mime_type,
            filename=info.filename,
            headers={"Cache-Control": "private, no-store"},
        )


def export_result(info: ExportInfo, chunk_bytes: int, download_url: str | None) -> ToolResult:
    parts = _parts(info.size, chunk_bytes)
    expires = dt.datetime.fromtimestamp(info.expires, dt.UTC).isoformat(timespec="seconds")
    how = f"read {_uri(info)} with resources/read ({parts} part{'s' if parts != 1 else ''})"
    if download_url:
        how += " or download it from download_url"
    result = ExportResult(
        uri=_uri(info),
        mime_type=info.mime_type,
        format=info.format,
        size_bytes=info.size,
        row_count=info.rows,
        columns=info.columns,
        parts=parts,
        expires_at=expires,
        download_url=download_url,
        note=f"Exported {info.rows:,} rows ({info.size:,} bytes) as {info.format}; {how}, "
        f"until {expires}.",
    )
    payload = result.model_dump()
    link = ResourceLink(
        type="resource_link",
        uri=_uri(info),  # type: ignore[arg-type]
        name=info.filename,
        mimeType=info.mime_type,
        size=info.size,
        description=f"{info.rows:,} rows from source {info.source}; expires {expires}",
        _meta={"row_count": info.rows, "expires_at": expires, "parts": parts},  # type: ignore[call-arg]
    )
    return ToolResult(
        content=[TextContent(type="text", text=encoding.dumps(payload)), link],
        structured_content=payload,
    )


def _uri(info: ExportInfo) -> str:
    return EXPORT_URI.format(export_id=info.id)


def _parts(size: int, chunk_bytes: int) -> int:
    return max(1, math.ceil(size / chunk_bytes))


def _download_url(public_url: str | None, secret: bytes, info: ExportInfo) -> str | None:
    """An absolute signed URL over HTTP (from config, else the request's own address)."""
    base = public_url or _request_base()
    if base is None:
        return None
    path = links.download_path(secret, info.id, info.owner, int(info.expires))
    return base.rstrip("/") + path


def _request_base() -> str | None:
    from fastmcp.server.dependencies import get_http_headers, get_http_request

    try:
        request = get_http_request()
        return str(request.base_url)
    except RuntimeError:
        pass
    headers = get_http_headers(include_all=True) or {}  # a task: the submitting request's
    host = headers.get("host")
    if not host:
        return None  # stdio: there is no URL to give
    scheme = headers.get("x-forwarded-proto", "http")
    return f"{scheme}://{host}"


def _progress(ctx: Context | None) -> Any:
    if ctx is None:
        return None

    async def report(rows: int, elapsed: float) -> None:
        await ctx.report_progress(rows, None, f"{rows:,} rows written in {elapsed:.0f} s")

    return report
