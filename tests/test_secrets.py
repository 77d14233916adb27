"""No secret is ever printed or logged: DSN passwords, cursor secrets, tokens in arguments."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import settings_for
from tests.helpers import client_for

pytestmark = pytest.mark.anyio
PASSWORD = "Sup3r-S3cret-pw-4242"


def test_unreachable_postgres_never_shows_the_password(tmp_path: Path):
    config = tmp_path / "pg.yaml"
    config.write_text(
        "sources:\n  pg:\n    kind: postgres\n"
        f"    dsn: postgresql://reader:{PASSWORD}@127.0.0.1:1/analytics\n"
        "cursor:\n  secret: cursor-secret-must-not-leak-123456\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "wellhead", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert "pg" in output  # the failure is reported...
    assert PASSWORD not in output  # ...without the password
    assert "cursor-secret-must-not-leak" not in output


@pytest.mark.parametrize("policy", ["redacted", "full"])
async def test_secret_arguments_are_redacted_in_call_logs(demo_db, caplog, policy):
    settings = settings_for(demo_db)
    settings = settings.model_copy(
        update={"logging": settings.logging.model_copy(update={"arguments": policy})}
    )
    with caplog.at_level(logging.INFO, logger="wellhead.calls"):
        async with client_for(settings) as client:
            await client.call_tool(
                "query",
                {"sql": f"SELECT 'postgresql://u:{PASSWORD}@h/db' AS dsn", "max_rows": 1},
            )
    lines = [r for r in caplog.records if r.getMessage() == "tool_call"]
    assert lines
    rendered = json.dumps([r.__dict__.get("arguments") for r in lines], default=str)
    assert PASSWORD not in rendered
    assert "postgresql://u:***@h/db" in rendered or "***" in rendered
