"""The safety corpora through the whole stack: a real MCP client, the `query` tool, real engines.

Every attack must come back as an `unsafe_sql` tool error naming its reason; every legitimate
analytical query must be answered. The same files drive the unit tests of the safety layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import settings_for
from tests.helpers import client_for, error_of
from wellhead.config import parse_settings

pytestmark = pytest.mark.anyio
CORPORA = Path(__file__).parent / "corpora"


def corpus(engine: str) -> dict[str, list[dict[str, Any]]]:
    data = yaml.safe_load((CORPORA / f"{engine}.yaml").read_text())
    legit = [item if isinstance(item, dict) else {"sql": item} for item in data["legit"]]
    return {"attacks": data["attacks"], "legit": legit}


def sqlite_settings(path: Path):  # type: ignore[no-untyped-def]
    return parse_settings(
        {
            "sources": {"demo": {"kind": "sqlite", "path": str(path)}},
            "cursor": {"secret": "test-secret-test-secret-0123456789"},
        }
    )


@pytest.mark.parametrize("kind", ["duckdb", "sqlite"])
async def test_every_attack_is_refused_with_its_reason(kind, demo_db, demo_sqlite):
    cases = corpus(kind)["attacks"]
    assert len(cases) >= 60
    settings = settings_for(demo_db) if kind == "duckdb" else sqlite_settings(demo_sqlite)
    failures = []
    async with client_for(settings) as client:
        for case in cases:
            result = await client.call_tool("query", {"sql": case["sql"]}, raise_on_error=False)
            if not result.is_error:
                failures.append(f"ANSWERED: {case['sql']!r}")
                continue
            payload = error_of(result)
            if payload["error"] not in ("unsafe_sql", "invalid_request"):
                failures.append(f"{payload['error']}: {case['sql']!r}: {payload['message']}")
            elif case["reason"].lower() not in payload["message"].lower():
                failures.append(f"reason {case['reason']!r} not in {payload['message']!r}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("kind", ["duckdb", "sqlite"])
async def test_every_legitimate_query_is_answered(kind, demo_db, demo_sqlite):
    cases = corpus(kind)["legit"]
    assert len(cases) >= 30
    settings = settings_for(demo_db) if kind == "duckdb" else sqlite_settings(demo_sqlite)
    failures = []
    async with client_for(settings) as client:
        for case in cases:
            arguments = {"sql": case["sql"], "max_rows": 50}
            if case.get("params"):
                arguments["params"] = case["params"]
            result = await client.call_tool("query", arguments, raise_on_error=False)
            if result.is_error:
                failures.append(f"{case['sql']!r}: {result.content[0].text}")
            else:
                assert result.structured_content["columns"]
    assert not failures, "\n".join(failures)
