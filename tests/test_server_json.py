"""server.json, wellhead's entry for the MCP Registry, checked against the registry's
documented server.json format and against the package it describes.

No package registry ships a copy of the registry's published JSON Schema, so SCHEMA below
encodes the documented fields and rules (docs/reference/server-json in the registry's
repository, 2025-12-11 format): required name/description/version, the reverse-DNS name
pattern, the 100-character description, no `latest` or ranges as versions, package entries
with registryType, identifier and a transport (stdio, or streamable-http/sse with a URL), and
arguments that are either positional (with a value or a valueHint) or named. It refuses any
field the format does not document, so a misspelt key fails here rather than at publishing.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from wellhead.cli import parser

ROOT = Path(__file__).resolve().parent.parent
SERVER_JSON = ROOT / "server.json"

_VERSION = {
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    # A specific version: not `latest`, not a range.
    "not": {"pattern": r"^(latest|[\^~<>=*].*|.*\s.*|.*\*.*)$"},
}
_INPUT = {
    "description": {"type": "string"},
    "isRequired": {"type": "boolean"},
    "isSecret": {"type": "boolean"},
    "format": {"enum": ["string", "number", "boolean", "filepath"]},
    "value": {"type": "string"},
    "default": {"type": "string"},
    "placeholder": {"type": "string"},
    "choices": {"type": "array", "items": {"type": "string"}},
    "isRepeated": {"type": "boolean"},
}
SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["name", "description", "version"],
    "additionalProperties": False,
    "properties": {
        "$schema": {"type": "string", "pattern": r"^https://static\.modelcontextprotocol\.io/"},
        "name": {
            "type": "string",
            "minLength": 3,
            "maxLength": 200,
            "pattern": r"^[a-zA-Z0-9.-]+/[a-zA-Z0-9._-]+$",
        },
        "title": {"type": "string", "minLength": 1, "maxLength": 100},
        "description": {"type": "string", "minLength": 1, "maxLength": 100},
        "version": _VERSION,
        "websiteUrl": {"type": "string", "pattern": "^https://"},
        "repository": {
            "type": "object",
            "required": ["url", "source"],
            "properties": {
                "url": {"type": "string"},
                "source": {"type": "string"},
                "id": {"type": "string"},
                "subfolder": {"type": "string"},
            },
            "additionalProperties": False,
        },
        "packages": {"type": "array", "items": {"$ref": "#/definitions/package"}},
        "remotes": {"type": "array", "items": {"$ref": "#/definitions/remote"}},
    },
    "definitions": {
        "package": {
            "type": "object",
            "required": ["registryType", "identifier", "transport"],
            "additionalProperties": False,
            "properties": {
                "registryType": {"enum": ["npm", "pypi", "nuget", "oci", "mcpb"]},
                "registryBaseUrl": {"type": "string", "pattern": "^https://"},
                "identifier": {"type": "string", "minLength": 1},
                "version": _VERSION,
                "fileSha256": {"type": "string", "pattern": "^[a-f0-9]{64}$"},
                "runtimeHint": {"type": "string"},
                "transport": {"$ref": "#/definitions/transport"},
                "runtimeArguments": {"type": "array", "items": {"$ref": "#/definitions/arg"}},
                "packageArguments": {"type": "array", "items": {"$ref": "#/definitions/arg"}},
                "environmentVariables": {
                    "type": "array",
                    "items": {"$ref": "#/definitions/keyValue"},
                },
            },
        },
        "transport": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["type"],
                    "properties": {"type": {"const": "stdio"}},
                    "additionalProperties": False,
                },
                {
                    "type": "object",
                    "required": ["type", "url"],
                    "properties": {
                        "type": {"enum": ["streamable-http", "sse"]},
                        "url": {"type": "string", "pattern": "^https?://"},
                        "headers": {"type": "array", "items": {"$ref": "#/definitions/keyValue"}},
                    },
                    "additionalProperties": False,
                },
            ]
        },
        "remote": {
            "type": "object",
            "required": ["type", "url"],
            "properties": {
                "type": {"enum": ["streamable-http", "sse"]},
                "url": {"type": "string", "pattern": "^https?://"},
                "headers": {"type": "array", "items": {"$ref": "#/definitions/keyValue"}},
            },
            "additionalProperties": False,
        },
        "arg": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["type"],
                    "anyOf": [{"required": ["value"]}, {"required": ["valueHint"]}],
                    "properties": {
                        "type": {"const": "positional"},
                        "valueHint": {"type": "string"},
                        **_INPUT,
                    },
                    "additionalProperties": False,
                },
                {
                    "type": "object",
                    "required": ["type", "name"],
                    "properties": {
                        "type": {"const": "named"},
                        "name": {"type": "string", "pattern": "^-"},
                        **_INPUT,
                    },
                    "additionalProperties": False,
                },
            ]
        },
        "keyValue": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "minLength": 1}, **_INPUT},
            "additionalProperties": False,
        },
    },
}


@pytest.fixture
def server() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SERVER_JSON.read_text())
    return data


def project() -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return data


def test_server_json_follows_the_documented_format(server: dict[str, Any]) -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.validate(server, SCHEMA)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("name",), "wellhead"),  # no namespace
        (("description",), "x" * 101),
        (("version",), "latest"),
        (("packages", 0, "version"), "^0.1"),
        (("packages", 0, "transport"), {"type": "streamable-http"}),  # no url
        (("packages", 0, "packageArguments", 0), {"type": "positional"}),
        (("packages", 0, "registryType"), "pip"),
        (("packages", 0, "transprt"), {"type": "stdio"}),  # misspelt key
    ],
)
def test_the_format_check_refuses_documented_mistakes(
    server: dict[str, Any], path: tuple[Any, ...], value: Any
) -> None:
    broken = copy.deepcopy(server)
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


def test_server_json_describes_this_package(server: dict[str, Any]) -> None:
    meta = project()
    assert server["version"] == meta["version"]
    assert server["packages"], "no package to install"
    transports = set()
    for package in server["packages"]:
        assert (package["registryType"], package["identifier"]) == ("pypi", meta["name"])
        assert package["version"] == meta["version"]
        transports.add(package["transport"]["type"])
        # The arguments, as a client would build them, are a command line the CLI accepts.
        argv = []
        for arg in package["packageArguments"]:
            if arg["type"] == "positional":
                argv.append(arg["value"])
            elif "value" in arg:
                argv += [arg["name"], arg["value"]]
        args = parser().parse_args(argv)
        assert args.command == "serve"
        if package["transport"]["type"] == "streamable-http":
            assert args.transport == "http"
            url = package["transport"]["url"]
            assert url.endswith(f":{args.port}/mcp")
        else:
            assert package["transport"]["type"] == "stdio"
            assert getattr(args, "transport", None) in (None, "stdio")
    assert transports == {"stdio", "streamable-http"}
    # The console script the runtime hint (uvx wellhead) runs.
    assert meta["scripts"]["wellhead"] == "wellhead.cli:main"


def test_readme_carries_the_registry_ownership_line(server: dict[str, Any]) -> None:
    """The registry verifies a PyPI package by `mcp-name: <name>` in its description, which
    is the README (pyproject's `readme`)."""
    assert project()["readme"] == "README.md"
    readme = (ROOT / "README.md").read_text()
    assert re.search(rf"mcp-name: {re.escape(server['name'])}\b", readme)
