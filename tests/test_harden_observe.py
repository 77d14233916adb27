"""Hardening of observability and the call guard against hostile input (issue 9).

Redaction runs in linear time on pathological text and still masks real secrets; log
arguments and error texts are cut with explicit markers; the tool-facts cache never crosses
principals; invented tool names never become metric labels; library DEBUG lines (bodies,
SQL, rows) stay out of the log unless asked for. The HTTP tests run real server subprocesses.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
import yaml
from fastmcp import Client

from tests.server_process import ServerProcess
from wellhead.guards.calls import MAX_ERROR_BYTES, error_text
from wellhead.observe.bounds import bound_arguments, cut_middle, cut_text
from wellhead.observe.redact import redact_text

MIB = 1024 * 1024
ALICE = "alice-token-0123456789abcdef"  # no `finance` scope
BOB = "bob-token-0123456789abcdef-xy"  # has it

PLUGIN = '''
import asyncio

from fastmcp.server.auth import require_scopes


def register(mcp):
    @mcp.tool(auth=require_scopes("finance"))
    async def bad_shape() -> dict[str, int]:
        """Returns data that violates its own output schema."""
        return {"n": "not an integer"}  # type: ignore[dict-item]

    @mcp.tool(auth=require_scopes("finance"), timeout=8.0)
    async def slow_ok() -> dict[str, int]:
        """Takes longer than the server's default deadline, within its own."""
        await asyncio.sleep(2.5)
        return {"n": 1}
'''


# -- redaction: linear, still masking -------------------------------------------------------

SECRET = "s3cr3t-Pa55w0rd"


def _pathological() -> dict[str, str]:
    """~1 MiB strings that made the old patterns quadratic or slow, each ending in a real
    secret the redaction must still find."""
    tail = f" postgres://app:{SECRET}@db.internal/x password={SECRET}"
    corpus = {
        "url_prefixes": "a://b:" * 200_000,
        "scheme_dots": "a." * (MIB // 2) + "://",
        "nested_quotes": 'password="' + "\\\"'" * (MIB // 3),
        "password_tokens": ("password=" + "x" * 200 + " ") * (MIB // 210),
        "many_at": "postgres://u:" + "@" * MIB,
        "unicode": ("ñé://ü:" + "ß€İ" * 5) * (MIB // 22),
        "key_runs": ("secret" + "_" * 300 + " ") * (MIB // 307),
        "bearer_spaces": ("bearer" + " " * 100) * (MIB // 106),
        "authorization_ws": ("authorization" + " " * 100 + ":") * (MIB // 114),
    }
    return {name: text + tail for name, text in corpus.items()}


@pytest.mark.parametrize("name", list(_pathological()))
def test_redaction_is_linear_and_still_masks(name: str) -> None:
    text = _pathological()[name]
    assert len(text) >= 0.9 * MIB
    # CPU time, best of three: the bound is on redaction's work, not on a busy machine.
    timings = []
    for _ in range(3):
        started = time.process_time()
        out = redact_text(text)
        timings.append(time.process_time() - started)
    assert min(timings) < 0.2, f"{name}: {min(timings):.3f} s for {len(text):,} characters"
    assert SECRET not in out
    assert out.endswith("postgres://app:***@db.internal/x password=***")


def test_redaction_unchanged_on_ordinary_secrets() -> None:
    cases = {
        "postgresql://user:pa@ss@host/db x": "postgresql://user:***@host/db x",
        "Authorization: Bearer abc.def": "Authorization: Bearer ***",
        '{"client_secret": "xyz", "n": 1}': '{"client_secret": "***", "n": 1}',
        "GET /api/token=abc": "GET /api/token=abc",  # a URL path, not a key
        "İ password=hunter22": "İ password=***",  # lower() lengthens İ: indexes must hold
        "key AKIAABCDEFGHIJKLMNOP end": "key *** end",
    }
    for text, expected in cases.items():
        assert redact_text(text) == expected


# -- bounded texts -----------------------------------------------------------------------------


def test_cuts_are_marked_and_bounded() -> None:
    text = "é" * 10_000
    cut = cut_text(text, 4096)
    assert len(cut.encode()) <= 4096 and cut.endswith("bytes]") and "…[cut " in cut
    middle = cut_middle("start " + "x" * 100_000 + " advice at the end", 900)
    assert middle.startswith("start ") and middle.endswith("advice at the end")
    assert len(middle.encode()) <= 900 and "…[cut " in middle
    assert cut_text("short", 4096) == "short"


def test_logged_arguments_are_cut_after_redaction() -> None:
    dsn = "postgres://u:" + "p" * 10_000 + "@h/db"  # a cut inside the password would leak it
    args = {"sql": "X" * 1_000_000, "dsn": dsn, "n": 3, "k" * 5000: "v"}
    bounded = bound_arguments(args, 4096)
    assert bounded["n"] == 3
    assert len(bounded["sql"].encode()) <= 4096 and "…[cut " in bounded["sql"]
    assert "p" * 100 not in bounded["dsn"] and "***" in bounded["dsn"]
    assert all(len(key) <= 128 for key in bounded)
    many = bound_arguments({f"a{i}": i for i in range(1000)}, 4096)
    assert len(many) <= 65 and "more arguments" in many["…"]


def test_error_text_fits_under_the_smallest_budget() -> None:
    for message in ("X" * 1_000_000, '"\\' * 100_000, "\x00" * 50_000, "é" * 300_000):
        text = error_text("invalid_request", message, "0123456789ab")
        assert len(text.encode()) <= MAX_ERROR_BYTES < 1024
        payload = json.loads(text)
        assert payload["error_id"] == "0123456789ab" and "…[cut " in payload["message"]


# -- over real HTTP ----------------------------------------------------------------------------


def _database(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO items VALUES (?, ?)", [(i, f"item{i}") for i in range(20)])
    return path


def _config(tmp_path: Path, **extra: object) -> Path:
    config = {
        "sources": {"tiny": {"kind": "sqlite", "path": str(_database(tmp_path))}},
        "cursor": {"secret": "test-secret-test-secret-0123456789"},
        **extra,
    }
    path = tmp_path / "wellhead.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.anyio
async def test_a_denied_call_does_not_change_how_another_principal_is_guarded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "harden_scoped.py").write_text(PLUGIN)
    monkeypatch.setenv("PYTHONPATH", str(plugins))
    config = _config(
        tmp_path,
        auth={
            "kind": "static",
            "tokens": {
                ALICE: {"client_id": "alice", "scopes": ["data"]},
                BOB: {"client_id": "bob", "scopes": ["data", "finance"]},
            },
        },
        limits={"tool_timeout_s": 1.5},
        plugins=["harden_scoped:register"],
        plugin_entry_points=False,
    )
    server = ServerProcess(config)
    try:
        async with Client(server.mcp_url, auth=ALICE) as alice:
            denied_shape = await alice.call_tool("bad_shape", {}, raise_on_error=False)
            denied_slow = await alice.call_tool("slow_ok", {}, raise_on_error=False)
        async with Client(server.mcp_url, auth=BOB) as bob:  # well inside the old 5 s cache
            shape = await bob.call_tool("bad_shape", {}, raise_on_error=False)
            slow = await bob.call_tool("slow_ok", {}, raise_on_error=False)
    finally:
        server.stop()
    assert denied_shape.is_error and denied_slow.is_error
    # Bob's call is still validated against its output schema ...
    assert shape.is_error
    assert json.loads(shape.content[0].text)["error"] == "invalid_output"  # type: ignore[union-attr]
    # ... and gets its own 8 s deadline, not the 1.5 s default, and structured content.
    assert not slow.is_error, slow.content
    assert slow.structured_content == {"n": 1}


@pytest.mark.anyio
async def test_invented_tool_names_do_not_grow_metrics_and_errors_fit(tmp_path: Path) -> None:
    server = ServerProcess(_config(tmp_path))
    try:
        async with Client(server.mcp_url) as client, httpx.AsyncClient() as http:
            await client.call_tool("query", {"sql": "SELECT 1 AS one"})
            before = (await http.get(f"{server.url}/metrics")).text
            results = []
            for i in range(150):
                name = f"invented_{i:03d}_" + "n" * 4096
                results.append(await client.call_tool(name, {}, raise_on_error=False))
            after = (await http.get(f"{server.url}/metrics")).text
            errors = {
                "huge_sql": await client.call_tool(
                    "query", {"sql": "X" * 1_000_000}, raise_on_error=False
                ),
                "huge_param": await client.call_tool(
                    "query",
                    {"sql": "SELECT :p AS p", "params": {"p": ["x"] * 200_000}},
                    raise_on_error=False,
                ),
                "huge_table": await client.call_tool(
                    "describe_table", {"table": "t" * 500_000}, raise_on_error=False
                ),
                "huge_cursor": await client.call_tool(
                    "query", {"cursor": "c" * 800_000}, raise_on_error=False
                ),
                "huge_source": await client.call_tool(
                    "query", {"sql": "SELECT 1", "source": "s" * 500_000}, raise_on_error=False
                ),
                "huge_pattern": await client.call_tool(
                    "list_tables", {"pattern": "%" * 500_000}, raise_on_error=False
                ),
            }
    finally:
        server.stop()
    assert all(result.is_error for result in results)
    assert "invented_" not in after
    assert len(after) < len(before) + 4096, (len(before), len(after))
    assert 'wellhead_tool_calls_total{outcome="tool_error",tool="_unknown"} 150.0' in after
    for name, result in {**errors, "unknown_tool": results[0]}.items():
        assert result.is_error, name
        text = result.content[0].text  # type: ignore[union-attr]
        assert len(text.encode()) <= 1024, (name, len(text.encode()))
        assert json.loads(text)["error_id"], name
    calls = [line for line in server.log_lines() if line.get("event") == "tool_call"]
    assert len(calls) == 1 + 150 + len(errors)
    assert max(len(line["tool_name"]) for line in calls) <= 128
    assert max(len(line.rstrip("\n").encode()) for line in server.log_text().splitlines()) < (
        64 * 1024
    )


@pytest.mark.anyio
@pytest.mark.parametrize("arguments", ["none", "hashed"])
async def test_debug_logging_keeps_sql_and_rows_out(tmp_path: Path, arguments: str) -> None:
    config = _config(tmp_path, logging={"level": "DEBUG", "arguments": arguments})
    server = ServerProcess(config)
    try:
        async with Client(server.mcp_url) as client:
            result = await client.call_tool(
                "query", {"sql": "SELECT 'zebra' || 'quagga' AS v, 'narwhal42' AS w"}
            )
    finally:
        server.stop()
    assert result.structured_content["rows"] == [["zebraquagga", "narwhal42"]]
    log = server.log_text()
    assert '"tool_call"' in log  # the server did log the call
    assert "narwhal42" not in log  # a literal of the SQL
    assert "zebraquagga" not in log  # a value of the rows


def test_an_error_result_a_tool_returns_itself_is_cut_too() -> None:
    from fastmcp.tools import ToolResult
    from mcp.types import TextContent

    from wellhead.guards.calls import _bounded_error

    huge = ToolResult(content=[TextContent(type="text", text="E" * 100_000)], is_error=True)
    bounded = _bounded_error(huge)
    text = bounded.content[0].text  # type: ignore[union-attr]
    assert bounded.is_error and len(text.encode()) <= MAX_ERROR_BYTES and "…[cut " in text
    small = ToolResult(content=[TextContent(type="text", text="no such row")], is_error=True)
    assert _bounded_error(small) is small
