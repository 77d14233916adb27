"""Config hardening: `${VAR}` in keys and values fails closed, errors never show a secret, and
YAML alias bombs end fast with a clear message.

Each class runs through the real CLI (`python -m wellhead check` subprocesses) or the real
loader; the static-token format is also checked against a real HTTP server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.server_process import REPO, ServerProcess
from wellhead.config import (
    MAX_CONFIG_BYTES,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    load_settings,
    parse_settings,
)
from wellhead.errors import ConfigError

TOKEN = "tok-Zq81-very-secret-0123456789abcdef"
OTHER_TOKEN = "tok-Yw22-also-secret-0123456789abcdef"
PASSWORD = "pw-Hx7-do-not-print-93c1"
DSN = f"postgresql://reader:{PASSWORD}@db.internal:5432/analytics"


_MEASURED_CHECK = (
    "import re, sys\n"
    "from wellhead.cli import main\n"
    "code = main(['check', '--config', sys.argv[1]])\n"
    # VmHWM belongs to this process's own address space; ru_maxrss would carry over the
    # peak of the (large) pytest process it was forked from.
    "status = open('/proc/self/status').read()\n"
    "peak = int(re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1))\n"
    "sys.stderr.write(f'\\npeak_kib={peak}')\n"
    "sys.exit(code)\n"
)


def run_check(
    config: Path, env: dict[str, str] | None = None, *, measure_rss: bool = False
) -> subprocess.CompletedProcess[str]:
    """`wellhead check` in a child process; with measure_rss its peak RSS ends stderr."""
    child_env = {**os.environ, "FASTMCP_CHECK_FOR_UPDATES": "off", **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])
    )
    return subprocess.run(
        [sys.executable, "-c", _MEASURED_CHECK, str(config)]
        if measure_rss
        else [sys.executable, "-m", "wellhead", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        env=child_env,
        cwd=REPO,
        timeout=120,
    )


def static_auth(tokens: Any) -> dict[str, Any]:
    return {"auth": {"kind": "static", "tokens": tokens}}


# --- 1. `${VAR}` in mapping keys as well as values --------------------------------------------


@pytest.mark.parametrize(
    ("raw", "read"),
    [
        pytest.param(
            static_auth({"${WH_T_KEY}": {"client_id": "reporting", "scopes": ["data"]}}),
            lambda s: list(s.auth.tokens),
            id="legacy-token-key",
        ),
        pytest.param(
            static_auth([{"token": "${WH_T_KEY}", "client_id": "reporting"}]),
            lambda s: list(s.auth.tokens),
            id="token-list",
        ),
        pytest.param(
            static_auth({"${WH_T_PREFIX:-unset}-${WH_T_KEY}": {"client_id": "r"}}),
            lambda s: [t.split("-", 1)[1] for t in s.auth.tokens],
            id="key-with-two-references",
        ),
        pytest.param(
            {"sources": {"demo": {"kind": "duckdb", "views": {"${WH_T_VIEW}": "/d/*.parquet"}}}},
            lambda s: list(s.sources["demo"].views),
            id="view-name-key",
        ),
        pytest.param(
            {"limits": {"per_tool": {"${WH_T_TOOL}": {"timeout_s": 3}}}},
            lambda s: list(s.limits.per_tool),
            id="per-tool-key",
        ),
        pytest.param(
            {"sources": {"${WH_T_SOURCE}": {"kind": "sqlite", "path": "/x.sqlite"}}},
            lambda s: list(s.sources),
            id="source-name-key",
        ),
    ],
)
def test_references_in_keys_are_expanded(monkeypatch: pytest.MonkeyPatch, raw: Any, read: Any):
    env = {"WH_T_KEY": TOKEN, "WH_T_VIEW": TOKEN, "WH_T_TOOL": TOKEN, "WH_T_SOURCE": "wh_src"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WH_T_PREFIX", raising=False)
    keys = read(parse_settings(raw))
    assert keys in ([TOKEN], ["wh_src"]), keys
    assert not any("${" in key for key in keys)


def test_literal_dollar_brace_needs_the_escape():
    settings = parse_settings({"cursor": {"secret": "$${NOT_A_VAR}-0123456789abcdef"}})
    assert settings.cursor.secret == "${NOT_A_VAR}-0123456789abcdef"


@pytest.mark.parametrize(
    ("raw", "where", "says"),
    [
        ({"cursor": {"secret": "${WH_T_UNSET}"}}, "cursor.secret", "${WH_T_UNSET} is not set"),
        ({"cursor": {"secret": "${WH_T_EMPTY}"}}, "cursor.secret", "${WH_T_EMPTY} is empty"),
        (static_auth({"${WH_T_UNSET}": {"client_id": "a"}}), "auth.tokens[#1]", "WH_T_UNSET"),
        (
            static_auth([{"token": "${WH_T_UNSET}", "client_id": "a"}]),
            "auth.tokens[0].token",
            "WH_T_UNSET",
        ),
        ({"cursor": {"secret": "${WH_T_OPEN"}}, "cursor.secret", "malformed"),
        ({"cursor": {"secret": "x${1ABC}"}}, "cursor.secret", "malformed"),
        ({"cursor": {"secret": "${WH_T_UNSET-dflt}"}}, "cursor.secret", "malformed"),
        ({"cursor": {"secret": "${A:-${B}}"}}, "cursor.secret", "malformed"),
        ({"server": {"name": "${}"}}, "server.name", "malformed"),
        (
            {"limits": {"per_tool": {"${WH_T_UNSET}": {"timeout_s": 1}}}},
            "limits.per_tool",
            "WH_T_UNSET",
        ),
    ],
)
def test_unexpanded_references_fail_closed(
    monkeypatch: pytest.MonkeyPatch, raw: Any, where: str, says: str
):
    monkeypatch.delenv("WH_T_UNSET", raising=False)
    monkeypatch.setenv("WH_T_EMPTY", "")
    with pytest.raises(ConfigError) as info:
        parse_settings(raw)
    message = str(info.value)
    assert where in message and says in message, message


def test_two_keys_that_expand_alike_are_refused(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WH_T_A", TOKEN)
    monkeypatch.setenv("WH_T_B", TOKEN)
    raw = static_auth({"${WH_T_A}": {"client_id": "a"}, "${WH_T_B}": {"client_id": "b"}})
    with pytest.raises(ConfigError, match=r"entry #2 appears twice") as info:
        parse_settings(raw)
    assert TOKEN not in str(info.value)


@pytest.mark.anyio
async def test_a_placeholder_token_never_authenticates(
    tmp_path: Path, demo_db: Path, monkeypatch: pytest.MonkeyPatch
):
    """The documented example, served: the real token gets in, the placeholder text does not."""
    from fastmcp import Client

    monkeypatch.setenv("WH_T_REAL", TOKEN)
    config = tmp_path / "wellhead.yaml"
    config.write_text(
        yaml.safe_dump({"sources": {"demo": {"kind": "duckdb", "path": str(demo_db)}}})
        + "auth:\n  kind: static\n  tokens:\n"
        "    - {token: '${WH_T_REAL}', client_id: reporting-agent, scopes: [data.read]}\n"
    )
    server = ServerProcess(config)
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {"Accept": "application/json, text/event-stream"}
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            refused = [
                (
                    await http.post(
                        server.mcp_url,
                        json=request,
                        headers={**headers, "Authorization": f"Bearer {auth}"},
                    )
                ).status_code
                for auth in ("${WH_T_REAL}", "$WH_T_REAL", OTHER_TOKEN)
            ]
        async with Client(server.mcp_url, auth=TOKEN) as client:
            names = {tool.name for tool in await client.list_tools()}
    finally:
        server.stop()
    assert refused == [401, 401, 401]
    assert "query" in names


# --- 2. No error path prints a secret ---------------------------------------------------------

BAD_CONFIGS = {
    "invalid-value-under-a-token": (
        f"auth:\n  kind: static\n  tokens:\n    {TOKEN}: {{client_id: 5}}\n"
        f"sources:\n  pg: {{kind: postgres, dsn: '{DSN}', pool: {{max_size: 0}}}}\n",
        "auth.tokens[#1].client_id",
    ),
    "unknown-key-under-a-token": (
        f"auth:\n  kind: static\n  tokens:\n    {TOKEN}: {{client_id: a, scope: [x]}}\n"
        f"sources:\n  pg: {{kind: postgres, dsn: '{DSN}'}}\n",
        "auth.tokens[#1].scope: unknown key",
    ),
    "yaml-syntax-error-on-the-dsn-line": (
        f"auth:\n  kind: static\n  tokens:\n    - {{token: {TOKEN}, client_id: a}}\n"
        f"sources:\n  pg: {{kind: postgres, dsn: '{DSN}' x}}\n",
        "is not valid YAML",
    ),
    "unset-variable-next-to-a-literal-token": (
        f"auth:\n  kind: static\n  tokens:\n    {TOKEN}: {{client_id: a}}\n"
        "    ${WH_T_UNSET}: {client_id: b}\n"
        f"sources:\n  pg: {{kind: postgres, dsn: '{DSN}'}}\n",
        "auth.tokens[#2]: environment variable ${WH_T_UNSET} is not set",
    ),
    "duplicate-token-key": (
        f"auth:\n  kind: static\n  tokens:\n    {TOKEN}: {{client_id: a}}\n"
        f"    {TOKEN}: {{client_id: b}}\nsources:\n  pg: {{kind: postgres, dsn: '{DSN}'}}\n",
        "a token appears twice",
    ),
    "weak-token-and-bad-password-in-cursor": (
        f"auth:\n  kind: static\n  tokens:\n    - {{token: '{TOKEN} ', client_id: a}}\n"
        f"cursor: {{secret: {PASSWORD}, extra: 1}}\n"
        f"sources:\n  pg: {{kind: postgres, dsn: '{DSN}'}}\n",
        "whitespace",
    ),
    "redis-url-password-with-bad-backend": (
        f"state: {{backend: redis, redis_url: 'redis://:{PASSWORD}@cache:6379/0', ttl: 1}}\n"
        f"auth:\n  kind: static\n  tokens:\n    - {{token: {TOKEN}, client_id: a, scopes: x}}\n",
        "state.ttl: unknown key",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_config_errors_never_print_a_secret(tmp_path: Path, name: str):
    text, expected = BAD_CONFIGS[name]
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "WH_T_UNSET"}
    child_env = {**env, "FASTMCP_CHECK_FOR_UPDATES": "off", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "wellhead", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        env=child_env,
        cwd=REPO,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert expected in output, output
    assert TOKEN not in output and PASSWORD not in output, output
    assert "Traceback" not in output


def test_serve_masks_secrets_too(tmp_path: Path):
    config = tmp_path / "bad.yaml"
    config.write_text(BAD_CONFIGS["invalid-value-under-a-token"][0])
    result = subprocess.run(
        [sys.executable, "-m", "wellhead", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "FASTMCP_CHECK_FOR_UPDATES": "off", "PYTHONPATH": str(REPO)},
        cwd=REPO,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "auth.tokens[#1].client_id" in output, output
    assert TOKEN not in output and PASSWORD not in output


# --- 3. YAML bombs and oversized files ---------------------------------------------------------


def laughs(levels: int, width: int, mapping: bool = False) -> str:
    """The classic: each level is `width` aliases of the one before."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for level in range(1, levels):
        refs = [f"*l{level - 1}" for _ in range(width)]
        if mapping:
            body = "{" + ", ".join(f"k{i}: {r}" for i, r in enumerate(refs)) + "}"
        else:
            body = "[" + ", ".join(refs) + "]"
        lines.append(f"l{level}: &l{level} {body}")
    return "\n".join(lines) + "\n"


def merge_bomb(levels: int) -> str:
    lines = ["m0: &m0 {" + ", ".join(f"a{i}: [x, x, x, x]" for i in range(9)) + "}"]
    for level in range(1, levels):
        items = ", ".join(f"b{i}: *m{level - 1}" for i in range(9))
        lines.append(f"m{level}: &m{level} {{<<: *m{level - 1}, {items}}}")
    return "\n".join(lines) + "\n"


BOMBS = {
    "billion-laughs-lists": (laughs(9, 9), "aliases"),
    "billion-laughs-mappings": (laughs(9, 9, mapping=True), "aliases"),
    "wide-and-shallow": (laughs(4, 400), "aliases"),
    "merge-keys": (merge_bomb(9), "aliases"),
    "bomb-inside-a-real-key": (laughs(9, 9) + "plugins: *l8\n", "aliases"),
    "recursive-anchor": ("x: &x [1, *x]\n", "refers to its own anchor"),
    "deep-nesting": ("x: " + "[" * 20_000 + "]" * 20_000 + "\n", "nests"),
    "deep-via-aliases": (
        "a0: &a0 [z]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 200)),
        "nests deeper",
    ),
    "oversized-file": ("# " + "x" * (MAX_CONFIG_BYTES + 10) + "\n", "larger than"),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_yaml_bombs_end_fast_with_a_clear_message(tmp_path: Path, name: str):
    text, says = BOMBS[name]
    config = tmp_path / "bomb.yaml"
    config.write_text(text)
    started = time.monotonic()
    result = run_check(config, measure_rss=True)
    elapsed = time.monotonic() - started
    output, _, peak = (result.stdout + result.stderr).rpartition("\npeak_kib=")
    peak_kib = int(peak)  # the check process's own peak (RUSAGE_CHILDREN would count every
    # server an earlier test started in this pytest process)
    assert result.returncode == 2, output[-2000:]
    assert says in output and "Traceback" not in output, output[-2000:]
    assert len(output) < 2_000  # one clear line, not the file echoed back
    # Generous bounds for a shared 2-core CI machine; the unbounded loader took minutes/650 MiB.
    assert elapsed < 60, elapsed
    assert peak_kib < 400 * 1024, peak_kib


def test_anchors_within_the_bounds_still_work(tmp_path: Path):
    """Aliases are a YAML feature people use for shared settings: only their growth is bounded."""
    config = tmp_path / "ok.yaml"
    config.write_text(
        "sources:\n"
        "  a: {kind: sqlite, path: /a.sqlite}\n"
        "limits:\n"
        "  per_tool:\n"
        "    one: &slow {timeout_s: 90}\n"
        "    two: *slow\n"
        "    three: {<<: *slow, budget_bytes: 4096}\n"
    )
    settings = load_settings(config)
    assert settings.limits.per_tool["two"].timeout_s == 90
    assert settings.limits.per_tool["three"].budget_bytes == 4096
    assert MAX_YAML_NODES >= 10_000 and MAX_YAML_DEPTH >= 32


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("limits: {}\nlimits: {sample_rows: 2}\n", "key 'limits' appears twice"),
        ("server: {port: 1, port: 2}\n", "key 'port' appears twice"),
        ("a: [1\n", "is not valid YAML"),
        ("\tx: 1\n", "is not valid YAML"),
        ("x: !!python/object:os.system {}\n", "is not valid YAML"),
        ("x: *nowhere\n", "is not valid YAML"),
    ],
)
def test_bad_yaml_is_one_clear_line(tmp_path: Path, text: str, says: str):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    message = str(info.value)
    assert says in message, message
    assert "line" in message or "appears twice" in message


def test_a_non_utf8_file_is_a_config_error(tmp_path: Path):
    config = tmp_path / "bad.yaml"
    config.write_bytes(b"server: {name: \xff\xfe}\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(config)
