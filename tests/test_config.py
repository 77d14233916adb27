"""Config: unknown keys fail closed, precise messages, ${ENV} secrets, `wellhead check`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wellhead.config import load_settings, parse_settings
from wellhead.errors import ConfigError


def test_unknown_keys_and_bad_values_are_named(tmp_path: Path):
    config = tmp_path / "bad.yaml"
    config.write_text(
        "sources:\n  shop:\n    kind: duckdb\n    path: x.duckdb\n    treads: 4\n"
        "  pg:\n    kind: postgress\n    dsn: x\n"
        "limits:\n  query_timeout_s: -1\nsrever: {}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    message = info.value.public_message
    assert "sources.shop.treads: unknown key" in message
    assert "sources.pg: unknown source kind" in message
    assert "limits.query_timeout_s: Input should be greater than 0" in message
    assert "srever: unknown key" in message


def test_env_secrets_and_relative_paths(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("WH_TEST_DSN", "postgresql://u:p@h/db")
    config = tmp_path / "ok.yaml"
    config.write_text(
        "sources:\n  pg: {kind: postgres, dsn: '${WH_TEST_DSN}'}\n"
        "  lite: {kind: sqlite, path: data/app.sqlite}\n"
        "cursor: {secret: '${WH_MISSING_SECRET:-fallback-secret-0123456789}'}\n"
    )
    settings = load_settings(config)
    assert settings.sources["pg"].dsn == "postgresql://u:p@h/db"
    assert settings.sources["lite"].path == str(tmp_path / "data" / "app.sqlite")
    assert settings.cursor.secret == "fallback-secret-0123456789"
    with pytest.raises(ConfigError, match=r"\$\{WH_NOT_SET\} is not set"):
        parse_settings({"sources": {"p": {"kind": "postgres", "dsn": "${WH_NOT_SET}"}}})


def test_limits_must_be_consistent():
    with pytest.raises(ConfigError, match="must not exceed max_result_budget_bytes"):
        parse_settings({"limits": {"result_budget_bytes": 900_000}})
    with pytest.raises(ConfigError, match="default_source 'nope' is not a source"):
        parse_settings(
            {"sources": {"a": {"kind": "sqlite", "path": "a"}}, "default_source": "nope"}
        )


def test_check_command_exit_codes(tmp_path: Path, demo_db):
    good = tmp_path / "good.yaml"
    good.write_text(f"sources:\n  demo: {{kind: duckdb, path: '{demo_db}'}}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources:\n  demo: {kind: duckdb, path: x, colour: blue}\n")
    ok = subprocess.run(
        [sys.executable, "-m", "wellhead", "check", "--config", str(good)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert "demo (duckdb)" in ok.stdout
    failed = subprocess.run(
        [sys.executable, "-m", "wellhead", "check", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode == 2
    assert "sources.demo.colour: unknown key" in failed.stderr


def test_tools_command_prints_the_list_and_its_size(tmp_path: Path, demo_db):
    config = tmp_path / "ok.yaml"
    config.write_text(f"sources:\n  demo: {{kind: duckdb, path: '{demo_db}'}}\n")
    run = subprocess.run(
        [sys.executable, "-m", "wellhead", "tools", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert {"query", "list_tables", "describe_table", "read_more", "export_query"} <= set(lines)
    tokens = int(lines[-1].split("about ")[1].split()[0])
    assert lines[-1].startswith("5 tools") and 0 < tokens <= 2000
