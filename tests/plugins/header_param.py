"""A tool whose `region` argument is mirrored in an `Mcp-Param-Region` header (x-mcp-header),
so tests can check the server still validates such headers against the body."""

from __future__ import annotations

from typing import Annotated

from fastmcp import FastMCP
from pydantic import Field


def register(mcp: FastMCP) -> None:
    @mcp.tool
    async def regional(
        region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})],
    ) -> str:
        """Echo the region."""
        return region
