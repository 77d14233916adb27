"""The chassis against a plugin that misbehaves in every way, over real HTTP.

One `wellhead serve --transport http` subprocess loads `tests.plugins.misbehaving` (tools that
raise, hang, block the loop, break their schema, flood, share module state) with a 2 s tool
deadline. One test per failure mode, each asserting three views of the same call: what the
MCP client sees, the JSON log line (matched by error id), and `/metrics`. The last test
checks that the process is still alive and serving `query` after all of it.

The sync-hang test runs first: its 30 s thread outlives the call, so the other tests run
while it is still abandoned (and the loop must keep answering meanwhile).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastmcp import Client

from tests.plugins.misbehaving import FLOOD_BYTES, SECRET, flood_text
from tests.server_process import ServerProcess

pytestmark = pytest.mark.anyio

TOOL_TIMEOUT_S = 2
BUDGET = 262_144  # the largest default budget: fewer read_more round trips
PLUGIN = "tests.plugins.misbehaving"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, demo_db: Path) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("chassis")
    config = directory / "wellhead.yaml"
    config.write_text(
        f"sources:\n  demo:\n    kind: duckdb\n    path: {demo_db}\n"
        "cursor:\n  secret: chassis-test-secret-0123456789abcdef\n"
        f"limits:\n  tool_timeout_s: {TOOL_TIMEOUT_S}\n  result_budget_bytes: {BUDGET}\n"
        f"plugins: [{PLUGIN}]\n"
    )
    process = ServerProcess(config)
    yield process
    process.stop()


def error_of(result: Any) -> dict[str, Any]:
    assert result.is_error, f"expected an error result, got {result.content!r:.300}"
    payload: dict[str, Any] = json.loads(result.content[0].text)
    assert re.fullmatch(r"[0-9a-f]{12}", payload["error_id"]), payload
    return payload


def call_line(server: ServerProcess, tool: str, error_id: str | None = None) -> dict[str, Any]:
    """The `tool_call` log line of one call (by error id, else the tool's last call)."""

    def matches(line: dict[str, Any]) -> bool:
        if line.get("event") != "tool_call" or line.get("tool_name") != tool:
            return False
        return error_id is None or line.get("error_id") == error_id

    server.wait_for_log(matches)
    return [line for line in server.log_lines() if matches(line)][-1]


def calls_metric(server: ServerProcess, tool: str, outcome: str) -> float | None:
    return server.metric("wellhead_tool_calls_total", outcome=outcome, tool=tool)


def wait_for_metric(server: ServerProcess, name: str, predicate: Any, **labels: str) -> float:
    deadline = time.monotonic() + 5
    while True:
        value = server.metric(name, **labels)
        if value is not None and predicate(value):
            return value
        assert time.monotonic() < deadline, f"{name}{labels} = {value}"
        time.sleep(0.05)


async def test_sync_hang_times_out_at_the_deadline_and_its_thread_is_counted(
    server: ServerProcess,
):
    async with Client(server.mcp_url) as client:
        started = time.monotonic()
        result = await client.call_tool("hang_sync", {"seconds": 30}, raise_on_error=False)
        elapsed = time.monotonic() - started
        # The loop is free while the abandoned thread sleeps on.
        other = await client.call_tool("query", {"sql": "SELECT 1 AS one"})
    payload = error_of(result)
    assert payload["error"] == "timeout"
    assert f"{TOOL_TIMEOUT_S} s deadline" in payload["message"]
    assert TOOL_TIMEOUT_S - 0.5 <= elapsed < 10, elapsed  # at the deadline, not after 30 s
    assert other.structured_content["rows"] == [[1]]

    line = call_line(server, "hang_sync", payload["error_id"])
    assert line["outcome"] == "timeout"
    assert line["execution_time_ms"] < 10_000
    server.wait_for_log(
        lambda entry: (
            entry.get("logger") == "wellhead.deadlines"
            and entry.get("tool_name") == "hang_sync"
            and "keeps running" in entry.get("message", "")
        )
    )
    assert wait_for_metric(server, "wellhead_abandoned_threads", lambda v: v >= 1) >= 1
    assert calls_metric(server, "hang_sync", "timeout") == 1


async def test_plugin_module_state_is_warned_about_at_load(server: ServerProcess):
    warning = server.wait_for_log(
        lambda entry: entry.get("logger") == "wellhead.plugins" and entry.get("level") == "WARNING"
    )
    assert warning["plugin"] == PLUGIN
    assert warning["module_state"] == ["visits"]
    assert "shared by every client" in warning["message"]
    # What the warning is about: two unrelated clients share the module global.
    async with Client(server.mcp_url) as first:
        one = await first.call_tool("bump", {"key": "shared"})
    async with Client(server.mcp_url) as second:
        two = await second.call_tool("bump", {"key": "shared"})
    assert (one.structured_content, two.structured_content) == ({"result": 1}, {"result": 2})
    assert calls_metric(server, "bump", "ok") == 2


async def test_exception_is_masked_with_an_error_id_and_no_secret_leaks(server: ServerProcess):
    async with Client(server.mcp_url) as client:
        result = await client.call_tool("explode", {}, raise_on_error=False)
    payload = error_of(result)
    assert payload["error"] == "internal_error"
    assert "error_id" in payload["message"]  # tells the agent how the operator finds it
    assert SECRET not in result.content[0].text
    assert "ValueError" not in result.content[0].text and "postgresql" not in payload["message"]

    line = call_line(server, "explode", payload["error_id"])
    assert line["outcome"] == "internal_error"
    assert line["level"] == "WARNING"
    # The traceback is logged once, under the same error id, with the secret masked.
    traceback = server.wait_for_log(
        lambda entry: entry.get("error_id") == payload["error_id"] and entry.get("level") == "ERROR"
    )
    assert "ValueError" in traceback["exc_info"]
    assert "postgresql://app:***@" in traceback["exc_info"]
    assert SECRET not in server.log_text(), "the secret reached the log"
    assert calls_metric(server, "explode", "internal_error") == 1


async def test_tool_error_message_passes_through(server: ServerProcess):
    async with Client(server.mcp_url) as client:
        result = await client.call_tool("refuse", {}, raise_on_error=False)
    payload = error_of(result)
    assert payload["error"] == "tool_error"
    assert payload["message"] == "refused on purpose: pass a smaller 'limit'"
    assert call_line(server, "refuse", payload["error_id"])["outcome"] == "tool_error"
    assert calls_metric(server, "refuse", "tool_error") == 1


async def test_async_hang_is_cancelled_at_the_deadline(server: ServerProcess):
    async with Client(server.mcp_url) as client:
        started = time.monotonic()
        result = await client.call_tool("hang_async", {}, raise_on_error=False)
        elapsed = time.monotonic() - started
    payload = error_of(result)
    assert payload["error"] == "timeout"
    assert TOOL_TIMEOUT_S - 0.5 <= elapsed < 10, elapsed
    line = call_line(server, "hang_async", payload["error_id"])
    assert line["outcome"] == "timeout"
    assert calls_metric(server, "hang_async", "timeout") == 1
    await anyio.sleep(0.5)  # past the guard's check for a task that ignored cancellation
    assert not any(
        entry.get("logger") == "wellhead.deadlines" and entry.get("tool_name") == "hang_async"
        for entry in server.log_lines()
    ), "an async tool is cancelled, not abandoned"


async def test_schema_violating_output_is_withheld(server: ServerProcess):
    async with Client(server.mcp_url) as client:
        result = await client.call_tool("bad_output", {}, raise_on_error=False)
    payload = error_of(result)
    assert payload["error"] == "invalid_output"
    assert "(at count)" in payload["message"]
    assert result.structured_content is None and "many" not in result.content[0].text
    line = call_line(server, "bad_output", payload["error_id"])
    assert line["outcome"] == "invalid_output"
    offending = server.wait_for_log(
        lambda entry: (
            entry.get("logger") == "wellhead.validation" and entry.get("tool_name") == "bad_output"
        )
    )
    assert offending["schema_path"] == "count"
    assert re.search(r"""["']many["'] is not of type ["']integer["']""", offending["message"])
    assert calls_metric(server, "bad_output", "invalid_output") == 1


async def read_back(client: Client, cursor: str) -> tuple[str, int, int]:
    """Walk `read_more` from `cursor` to the end: the text, its total_bytes, the calls made."""
    text, calls, total = [], 0, 0
    while cursor:
        chunk = (await client.call_tool("read_more", {"cursor": cursor})).structured_content
        assert chunk is not None
        assert len(chunk["chunk"].encode()) <= BUDGET
        total = chunk["total_bytes"]
        text.append(chunk["chunk"])
        cursor, calls = chunk["next_cursor"], calls + 1
    return "".join(text), total, calls


async def test_ten_megabytes_are_never_sent_silently_and_read_back_exactly(
    server: ServerProcess,
):
    expected = flood_text()
    async with Client(server.mcp_url) as client:
        # Plain text (`-> str`): the first chunk, marked as cut, with a cursor for the rest.
        truncated = await client.call_tool("flood", {}, raise_on_error=False)
        assert not truncated.is_error
        text = truncated.content[0].text
        head, _, note = text.rpartition("\n[truncated by wellhead")
        assert expected.startswith(head) and len(head) > BUDGET // 2
        assert len(text.encode()) <= BUDGET
        meta = truncated.meta["wellhead"]
        assert meta["truncated"] is True and meta["total_bytes"] == FLOOD_BYTES
        assert meta["next_cursor"] in note
        whole_text, total, text_calls = await read_back(client, meta["next_cursor"])

        # A declared object schema, which a partial result would break: a structured refusal
        # that carries the cursor (the kept text is the result's JSON).
        refused = await client.call_tool("flood_structured", {}, raise_on_error=False)
        payload = error_of(refused)
        assert payload["error"] == "budget_exceeded"
        size = re.search(r"returned ([\d,]+) bytes, more than its ([\d,]+)-", payload["message"])
        assert size is not None, payload["message"]
        assert int(size.group(1).replace(",", "")) >= FLOOD_BYTES
        assert int(size.group(2).replace(",", "")) == BUDGET
        cursor = re.search(r"cursor=(\S+?)[ .]", payload["message"])
        assert cursor is not None
        whole_json, json_total, json_calls = await read_back(client, cursor.group(1))
    assert total == FLOOD_BYTES
    assert whole_text == expected, "read_more did not give back the exact 10 MiB"
    assert text_calls >= FLOOD_BYTES // BUDGET
    assert json_total == len(whole_json.encode()) > FLOOD_BYTES
    assert json.loads(whole_json) == {"text": expected}

    text_line = call_line(server, "flood")
    assert text_line["outcome"] == "ok" and text_line["truncated"] is True
    assert text_line["response_bytes"] < 3 * BUDGET  # never the 10 MiB
    refused_line = call_line(server, "flood_structured", payload["error_id"])
    assert refused_line["outcome"] == "tool_error"
    assert refused_line["error_kind"] == "budget_exceeded"
    assert refused_line["response_bytes"] < BUDGET
    assert calls_metric(server, "flood", "ok") == 1
    assert calls_metric(server, "flood_structured", "tool_error") == 1
    assert calls_metric(server, "read_more", "ok") == text_calls + json_calls


async def test_loop_blocking_tool_is_named_by_the_watchdog(server: ServerProcess):
    async with Client(server.mcp_url) as client:
        result = await client.call_tool("block_loop", {})
    assert not result.is_error
    line = call_line(server, "block_loop")
    warning = server.wait_for_log(
        lambda entry: (
            entry.get("logger") == "wellhead.watchdog"
            and line["invocation_id"] in entry.get("invocation_ids", [])
        )
    )
    assert warning["level"] == "WARNING"
    assert "block_loop" in warning["blocking_tools"]
    assert "block_loop" in warning["message"]
    assert warning["lag_seconds"] >= 0.3
    blocked = wait_for_metric(
        server, "wellhead_event_loop_blocked_total", lambda v: v >= 1, tool="block_loop"
    )
    assert blocked >= 1
    assert (server.metric("wellhead_event_loop_lag_max_seconds") or 0) >= 0.3


async def test_the_server_survived_all_of_it(server: ServerProcess):
    assert server.process.poll() is None
    async with Client(server.mcp_url) as client:
        result = await client.call_tool("query", {"sql": "SELECT count(*) FROM customers"})
    assert result.structured_content["rows"][0][0] > 0
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        assert (await http.get("/readyz")).status_code == 200
    lines = server.log_lines()
    unparsed = [line["unparsed"] for line in lines if "unparsed" in line]
    assert not unparsed, f"non-JSON log output: {unparsed[:5]}"
    assert SECRET not in server.log_text()
    assert calls_metric(server, "query", "ok") == 2
