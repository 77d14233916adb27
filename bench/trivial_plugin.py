"""The trivial tool bench_chassis.py times, as a wellhead plugin.

`bench.trivial_plugin` mounts `server` (the usual plugin shape); `bench.trivial_plugin:register`
adds the same tool straight onto wellhead's server, which isolates the cost of mounting.
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
