"""The trivial tool bench_chassis.py times, as a wellhead plugin.

`bench.trivial_plugin:register` (what bench_chassis.py times) adds the tool straight onto
wellhead's server, as `mcp.tool(echo)` does on the bare one; `bench.trivial_plugin` mounts
`server` (the other plugin shape), which `--breakdown` times separately.
The same `echo` is registered on a bare FastMCP server there, so the servers differ only by
wellhead's chassis (guards, logs, metrics, watchdog), not by the tool.
"""

from __future__ import annotations

from fastmcp import FastMCP


async def echo(x: int) -> int:
    """Return x unchanged."""
    return x


def plugin_server() -> FastMCP:
    mcp: FastMCP = FastMCP("bench-trivial")
    mcp.tool(echo)
    return mcp


def register(mcp: FastMCP) -> None:
    mcp.tool(echo)


server = plugin_server()
