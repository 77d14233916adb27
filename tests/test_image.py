"""The container image built from deploy/Dockerfile, running under podman.

`.ci/image.sh` builds the real Dockerfile (on local stand-ins of its two bases), starts the
image serving the demo data over HTTP with a read-only root filesystem and a tmpfs /tmp, then
runs this file with WELLHEAD_TEST_IMAGE and friends set. Without them the tests skip locally
and fail under CI=true. To run them by hand:

    bash .ci/image.sh build && bash .ci/image.sh run && eval "$(bash .ci/image.sh env)"
    python -m pytest -q tests/test_image.py
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastmcp import Client
from packaging.utils import canonicalize_name

from tests.helpers import service_env

ROOT = Path(__file__).resolve().parent.parent
NONROOT = 65532
PYTHON = "/usr/bin/python3.13"

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def image_env() -> tuple[str, str, str]:
    script = ".ci/image.sh"
    image = service_env("WELLHEAD_TEST_IMAGE", "the wellhead image", script)
    url = service_env("WELLHEAD_TEST_IMAGE_URL", "the wellhead image", script)
    container = service_env("WELLHEAD_TEST_IMAGE_CONTAINER", "the wellhead image", script)
    return image, url, container


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, f"podman {' '.join(args)}: {proc.stderr}"
    return proc


def in_container(code: str) -> str:
    """Run Python inside the running container (exec needs no shell, only the interpreter)."""
    _, _, container = image_env()
    return podman("exec", container, PYTHON, "-c", code).stdout


async def test_a_real_mcp_client_queries_the_image_over_http() -> None:
    _, url, _ = image_env()
    async with Client(f"{url}/mcp") as client:
        tools = {tool.name for tool in await client.list_tools()}
        assert {"list_tables", "describe_table", "query"} <= tools
        result = await client.call_tool("query", {"sql": "SELECT count(*) AS n FROM orders"})
        assert not result.is_error
        assert result.structured_content["rows"] == [[1_000_000]]
        page = await client.call_tool("query", {"sql": "SELECT * FROM orders", "max_rows": 5})
        assert page.structured_content["row_count"] == 5
        assert page.structured_content["next_cursor"]
        refused = await client.call_tool(
            "query", {"sql": "COPY orders TO '/tmp/x.csv'"}, raise_on_error=False
        )
        assert refused.is_error  # the read-only guard is the same inside the image


async def test_health_endpoints_answer() -> None:
    _, url, _ = image_env()
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        live = await http.get("/healthz")
        assert (live.status_code, live.json()) == (200, {"status": "ok"})
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        metrics = await http.get("/metrics")
        assert "wellhead_tool_calls_total" in metrics.text


def test_the_server_process_runs_as_uid_65532() -> None:
    _, _, container = image_env()
    top = podman("top", container, "huser", "hgroup", "args").stdout.splitlines()
    servers = [line.split() for line in top[1:] if "wellhead" in line]
    assert servers, top
    for huser, hgroup, *args in servers:
        assert (huser, hgroup) == (str(NONROOT), str(NONROOT)), top
        assert args[:3] == [PYTHON, "-m", "wellhead"], top
    # The same from the host's /proc: real, effective, saved and filesystem ids.
    pid = podman("inspect", "--format", "{{.State.Pid}}", container).stdout.strip()
    status = Path(f"/proc/{pid}/status").read_text()
    uids = re.search(r"^Uid:\s+(.*)$", status, re.M)
    gids = re.search(r"^Gid:\s+(.*)$", status, re.M)
    assert uids and uids.group(1).split() == [str(NONROOT)] * 4
    assert gids and gids.group(1).split() == [str(NONROOT)] * 4
    cap_eff = re.search(r"^CapEff:\s+(\w+)$", status, re.M)
    assert cap_eff and int(cap_eff.group(1), 16) == 0  # no capabilities at all


def test_the_image_has_no_shell() -> None:
    _, _, container = image_env()
    for shell in ("/bin/sh", "/bin/bash", "sh"):
        proc = podman("exec", container, shell, "-c", "true", check=False)
        assert proc.returncode != 0, f"{shell} ran in the container"
        assert "no such file" in proc.stderr.lower() or "not found" in proc.stderr.lower()
    # exec itself works: it is the shell that is missing.
    assert in_container("import os; print(os.getuid())").strip() == str(NONROOT)


def test_root_filesystem_is_read_only_and_tmp_holds_the_demo() -> None:
    out = in_container(
        "import errno, os, json\n"
        "def w(p):\n"
        "    try:\n"
        "        open(p, 'w').close(); return 'ok'\n"
        "    except OSError as e:\n"
        "        return errno.errorcode[e.errno]\n"
        "print(json.dumps({'opt': w('/opt/wellhead/x'), 'etc': w('/etc/x'),\n"
        "    'tmp': w('/tmp/probe'), 'cache': sorted(os.listdir('/tmp/wellhead'))}))"
    )
    probe = json.loads(out)
    assert probe["opt"] == "EROFS" and probe["etc"] == "EROFS"
    assert probe["tmp"] == "ok"
    assert any(name.startswith("demo-v") and name.endswith(".duckdb") for name in probe["cache"])


def test_image_config_matches_the_dockerfile() -> None:
    image, _, _ = image_env()
    config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == f"{NONROOT}:{NONROOT}"
    assert config["Entrypoint"] == [PYTHON, "-m", "wellhead"]
    assert config["Cmd"][:3] == ["serve", "--transport", "http"]
    assert "8000/tcp" in config["ExposedPorts"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["WELLHEAD_CACHE_DIR"] == "/tmp/wellhead"
    assert env["PYTHONPATH"] == "/opt/wellhead/site-packages"


def constraint_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "deploy" / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_installed_packages_are_exactly_the_tested_pins() -> None:
    """Every distribution in the image is pinned in deploy/constraints.txt at that version,
    and every module byte-compiled ahead of time (the root filesystem is read-only)."""
    out = in_container(
        "import json, importlib.metadata as m, pathlib, sys\n"
        "site = pathlib.Path('/opt/wellhead/site-packages')\n"
        "dists = {d.metadata['Name']: d.version for d in m.distributions(path=[str(site)])}\n"
        "py = [p for p in site.rglob('*.py') if '__pycache__' not in p.parts]\n"
        "tag = sys.implementation.cache_tag\n"
        "missing = [str(p) for p in py\n"
        "           if not (p.parent / '__pycache__' / f'{p.stem}.{tag}.pyc').exists()]\n"
        "print(json.dumps({'dists': dists, 'py': len(py), 'missing': missing[:5],\n"
        "                  'version': sys.version.split()[0]}))"
    )
    found: dict[str, Any] = json.loads(out)
    assert found["version"].startswith("3.13.")
    pins = constraint_pins()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dists = {canonicalize_name(k): v for k, v in found["dists"].items()}
    assert dists.pop("wellhead") == project["version"]
    unpinned = {n: v for n, v in dists.items() if pins.get(n) != v}
    assert not unpinned, f"installed but not pinned at that version: {unpinned}"
    for required in ("fastmcp", "mcp", "duckdb", "asyncpg", "redis", "uvicorn", "pydantic"):
        assert required in dists
    assert found["py"] > 1000 and not found["missing"], found["missing"]


def k8s_env() -> tuple[str, str]:
    script = ".ci/image.sh (with PostgreSQL and Redis started)"
    url = service_env("WELLHEAD_TEST_IMAGE_K8S_URL", "the image with the Kubernetes config", script)
    container = service_env(
        "WELLHEAD_TEST_IMAGE_K8S_CONTAINER", "the image with the Kubernetes config", script
    )
    return url, container


async def test_the_default_command_serves_the_kubernetes_config() -> None:
    """The image as the Deployment runs it: its own CMD (0.0.0.0:8000, the mounted
    /etc/wellhead/wellhead.yaml), the ConfigMap rendered from the Redis overlay, a real
    PostgreSQL source and Redis state; stateless HTTP, so every request stands alone."""
    url, container = k8s_env()
    top = podman("top", container, "huser", "args").stdout
    assert "serve --transport http --host 0.0.0.0 --port 8000" in top
    assert "--config /etc/wellhead/wellhead.yaml" in top
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        ready = await http.get("/readyz")  # pings the PostgreSQL source and Redis
        assert ready.status_code == 200, ready.text
    async with Client(f"{url}/mcp") as client:
        result = await client.call_tool(
            "query", {"sql": "SELECT current_user AS who, 41 + 1 AS answer"}
        )
        assert not result.is_error, result.content
        assert result.structured_content["rows"][0][1] == 42
        # The source is the read-only role from the Secret's DSN, not a superuser.
        assert result.structured_content["rows"][0][0] != "postgres"
        refused = await client.call_tool(
            "query", {"sql": "SELECT pg_read_file('/etc/passwd')"}, raise_on_error=False
        )
        assert refused.is_error
