"""Python plugins: README's example, entry points, and clear errors for bad specs."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from tests.conftest import settings_for
from tests.helpers import client_for, error_of
from wellhead.errors import ConfigError

pytestmark = pytest.mark.anyio


async def test_readme_example_plugin_runs_behind_the_guards(demo_db, engine):
    settings = settings_for(demo_db).model_copy(update={"plugins": ["examples.plugin_example"]})
    async with client_for(settings) as client:
        names = {tool.name for tool in await client.list_tools()}
        estimate = await client.call_tool("shipping_estimate", {"country": "de"})
        unknown = await client.call_tool(
            "shipping_estimate", {"country": "XX"}, raise_on_error=False
        )
        orders = await client.call_tool("orders_for_customer", {"customer_id": 42})
    assert {"shipping_estimate", "orders_for_customer", "query"} <= names
    assert estimate.structured_content == {"country": "DE", "days": 2}
    payload = error_of(unknown)
    assert "no shipping estimate" in payload["message"] and payload["error_id"]
    expected = engine.execute(
        "SELECT count(*), sum(total) FROM orders WHERE customer_id = 42"
    ).fetchone()
    assert orders.structured_content["orders"] == expected[0]
    assert orders.structured_content["revenue"] == pytest.approx(float(expected[1]))


async def test_entry_point_plugins_are_discovered(demo_db, tmp_path, monkeypatch):
    package = tmp_path / "site"
    package.mkdir()
    (package / "wh_entry_plugin.py").write_text(
        "def register(mcp):\n"
        "    @mcp.tool\n"
        "    async def from_entry_point() -> str:\n"
        "        return 'hello from an installed package'\n"
    )
    info = package / "wh_entry_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: wh-entry-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[wellhead.plugins]\nexample = wh_entry_plugin:register\n"
    )
    monkeypatch.syspath_prepend(str(package))
    async with client_for(settings_for(demo_db)) as client:
        result = await client.call_tool("from_entry_point", {})
    assert "installed package" in result.content[0].text
    off = settings_for(demo_db).model_copy(update={"plugin_entry_points": False})
    async with client_for(off) as client:
        names = {tool.name for tool in await client.list_tools()}
    assert "from_entry_point" not in names
    sys.modules.pop("wh_entry_plugin", None)


def test_bad_plugin_specs_are_clear_config_errors(demo_db):
    from wellhead.app import build_server

    for spec, message in [
        ("no_such_module_xyz", "cannot import module"),
        ("examples.plugin_example:missing", "has no 'missing'"),
        ("json", "defines none of"),
    ]:
        settings = settings_for(demo_db).model_copy(update={"plugins": [spec]})
        with pytest.raises(ConfigError, match=message):
            build_server(settings)


def test_module_level_state_is_flagged(demo_db, tmp_path, monkeypatch, caplog):
    (tmp_path / "wh_stateful_plugin.py").write_text(
        "CACHE_SIZE = 10\nseen = {}\n"
        "def register(mcp):\n"
        "    @mcp.tool\n"
        "    async def remember(x: str) -> int:\n"
        "        seen[x] = True\n"
        "        return len(seen)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from wellhead.app import build_server

    settings = settings_for(demo_db).model_copy(update={"plugins": ["wh_stateful_plugin"]})
    with caplog.at_level(logging.WARNING, logger="wellhead.plugins"):
        build_server(settings)
    warning = next(r for r in caplog.records if "module-level mutable state" in r.getMessage())
    assert "seen" in warning.getMessage() and "CACHE_SIZE" not in warning.getMessage()
    sys.modules.pop("wh_stateful_plugin", None)


def test_example_plugin_file_is_what_readme_shows():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    example = (Path(__file__).parents[1] / "examples" / "plugin_example.py").read_text()
    start = example.index("def register")
    assert example[start : start + 200] in readme


async def test_plugin_schemas_with_refs_are_inlined_for_clients(demo_db, tmp_path, monkeypatch):
    (tmp_path / "wh_ref_plugin.py").write_text(
        "from pydantic import BaseModel\n"
        "class Point(BaseModel):\n    x: int\n    y: int\n"
        "def register(mcp):\n"
        "    @mcp.tool\n"
        "    async def distance(a: Point, b: Point) -> float:\n"
        "        return ((a.x - b.x) ** 2 + (a.y - b.y) ** 2) ** 0.5\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = settings_for(demo_db).model_copy(update={"plugins": ["wh_ref_plugin"]})
    async with client_for(settings) as client:
        for _ in range(2):  # the second listing comes from the per-tool cache
            tools = {t.name: t for t in await client.list_tools()}
            schema = json.dumps(tools["distance"].input_schema)
            assert "$ref" not in schema and "$defs" not in schema
            assert '"x"' in schema
        result = await client.call_tool("distance", {"a": {"x": 0, "y": 0}, "b": {"x": 3, "y": 4}})
    assert result.structured_content == {"result": 5.0}
    sys.modules.pop("wh_ref_plugin", None)


async def test_response_bytes_is_the_utf8_size_sent(demo_db, tmp_path, monkeypatch, caplog):
    """The `tool_call` line logs the UTF-8 size of what was sent (measured once, by the budget
    guard, and reused)."""
    (tmp_path / "wh_sized_plugin.py").write_text(
        "def register(mcp):\n"
        "    @mcp.tool\n"
        "    async def greet(name: str) -> str:\n"
        "        return 'grüße, ' + name\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = settings_for(demo_db).model_copy(update={"plugins": ["wh_sized_plugin"]})
    caplog.set_level(logging.INFO, logger="wellhead.calls")
    async with client_for(settings) as client:
        result = await client.call_tool("greet", {"name": "Zoë"})
    sys.modules.pop("wh_sized_plugin", None)
    text = result.content[0].text
    structured = json.dumps(result.structured_content, separators=(",", ":"), ensure_ascii=False)
    [line] = [r for r in caplog.records if getattr(r, "tool_name", None) == "greet"]
    assert line.response_bytes == len(text.encode()) + len(structured.encode())
    assert line.response_bytes > len(text) + len(structured)  # bytes, not characters
