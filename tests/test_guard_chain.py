"""The guards run as one FastMCP middleware, in order, and the JSON log fast path is exact."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from fastmcp import Client, FastMCP
from fastmcp.server.middleware import Middleware

from wellhead.guards.chain import GuardChain
from wellhead.observe.logs import EVENT_FIELDS, JsonLineFormatter

pytestmark = pytest.mark.anyio


class Recorder(Middleware):
    def __init__(self, name: str, seen: list[str]) -> None:
        self.name, self.seen = name, seen

    async def on_call_tool(self, context: Any, call_next: Any) -> Any:
        self.seen.append(f"{self.name}>")
        result = await call_next(context)
        self.seen.append(f"<{self.name}")
        return result


class ListsOnly(Middleware):
    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    async def on_list_tools(self, context: Any, call_next: Any) -> Any:
        self.seen.append("list")
        tools = await call_next(context)
        return [t for t in tools if t.name != "hidden"]


async def test_guards_run_outermost_first_as_one_middleware() -> None:
    seen: list[str] = []
    chain = GuardChain([Recorder("a", seen), ListsOnly(seen), Recorder("b", seen)])
    mcp = FastMCP("chain", middleware=[chain])

    @mcp.tool
    def echo(x: int) -> int:
        seen.append("tool")
        return x

    @mcp.tool
    def hidden() -> int:
        return 0

    assert [m for m in mcp.middleware if isinstance(m, GuardChain)] == [chain]
    async with Client(mcp) as client:
        names = [t.name for t in await client.list_tools()]
        assert (await client.call_tool("echo", {"x": 3})).data == 3
    assert names == ["echo"]  # the list hook ran; call-only guards were not asked to list
    assert seen == ["list", "a>", "b>", "tool", "<b", "<a"]


def _format(**extra: Any) -> dict[str, Any]:
    record = logging.getLogger("wellhead.test.chain").makeRecord(
        "wellhead.test.chain", logging.INFO, __file__, 1, "tool_call", (), None, extra=extra
    )
    record.created, record.msecs = 1_700_000_000.25, 250.0  # two records, one timestamp
    return json.loads(JsonLineFormatter().format(record))


def test_named_fields_give_the_same_line_as_searching_the_record() -> None:
    fields = {"event": "tool_call", "tool_name": "echo", "rows": 3, "error_id": None}
    searched = _format(**fields, _private=1)
    named = _format(**fields, **{EVENT_FIELDS: tuple(fields)})
    assert searched == named
    assert list(named)[:5] == ["message", "event", "tool_name", "rows", "error_id"]


def test_cached_timestamp_matches_the_logging_default() -> None:
    ours, default = JsonLineFormatter(), logging.Formatter()
    logger = logging.getLogger("wellhead.test.chain.ts")
    for created in (1_700_000_000.001, 1_700_000_000.999, 1_700_000_001.5, 1_700_000_000.25):
        record = logger.makeRecord(logger.name, logging.INFO, __file__, 1, "x", (), None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.formatTime(record) == default.formatTime(record)
