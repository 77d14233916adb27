"""A plugin whose tools misbehave in every way the chassis must survive.

Loaded as `plugins: [tests.plugins.misbehaving]` (a FastMCP server, mounted). None of these
tools does anything about errors, deadlines, budgets, schemas or logging: every guarantee a
test sees comes from wellhead's guards.
"""

from __future__ import annotations

import asyncio
import time

from fastmcp import FastMCP
from fastmcp.exceptions import ToolError

# What a careless driver puts in an exception message. The redaction rules recognise both
# shapes (URL userinfo, `password=`); the test greps the client result and the whole log.
SECRET = "Hunter2-S3cret-Pa55"
LEAKY_MESSAGE = (
    f"could not connect to postgresql://app:{SECRET}@db.internal:5432/prod (password={SECRET})"
)

# 10 MiB of distinct, numbered lines, so a read-back that drops, repeats or reorders a
# chunk cannot compare equal.
FLOOD_LINES = 1_048_576
FLOOD_BYTES = FLOOD_LINES * 10

# Module-level mutable state shared by every client: the plugin loader must warn about it.
visits: dict[str, int] = {}

server = FastMCP("misbehaving")


def flood_text() -> str:
    return "".join(f"{i:09d}\n" for i in range(FLOOD_LINES))


@server.tool
async def explode() -> str:
    """Raises an exception whose message carries a credential."""
    raise ValueError(LEAKY_MESSAGE)


@server.tool
async def refuse() -> str:
    """Raises a ToolError on purpose: its message is meant for the agent."""
    raise ToolError("refused on purpose: pass a smaller 'limit'")


@server.tool
async def hang_async() -> str:
    """Never returns (until cancelled)."""
    await asyncio.sleep(3600)
    return "woke up"


@server.tool
def hang_sync(seconds: float = 30) -> str:
    """A sync tool (FastMCP runs it in a worker thread) that ignores every deadline."""
    time.sleep(seconds)
    return "finally"


@server.tool(
    output_schema={
        "type": "object",
        "properties": {"count": {"type": "integer"}, "items": {"type": "array"}},
        "required": ["count", "items"],
    }
)
async def bad_output() -> dict[str, object]:
    """Declares an integer `count` and returns a string."""
    return {"count": "many", "items": []}


@server.tool
async def flood() -> str:
    """Returns 10 MiB of text (`-> str`: FastMCP wraps it as {"result": ...})."""
    return flood_text()


@server.tool(
    output_schema={
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    }
)
async def flood_structured() -> dict[str, str]:
    """Returns 10 MiB inside structured content with a declared schema."""
    return {"text": flood_text()}


@server.tool
async def block_loop() -> str:
    """An async tool that blocks the event loop (a sync call on the loop)."""
    time.sleep(0.6)  # noqa: ASYNC251 - the misbehaviour under test
    return "blocked the loop for 0.6 s"


@server.tool
async def bump(key: str) -> int:
    """Counts calls per key in a module global: every client sees every other's counts."""
    visits[key] = visits.get(key, 0) + 1
    return visits[key]


@server.tool
async def slow(seconds: float) -> str:
    """A well-behaved slow call (graceful-shutdown tests keep one in flight)."""
    await asyncio.sleep(seconds)
    return f"slept {seconds:g} s"
