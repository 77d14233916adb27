"""Python plugins: a team's own tools, mounted behind every wellhead guard.

A plugin is `module[:attr]`. The attribute (default: `register`, then `server`) is either a
FastMCP server, whose tools, resources and prompts are mounted on wellhead's server, or a
function `register(mcp)` / `register(mcp, runtime)` that adds them. Either way the calls pass
through wellhead's middleware, so plugin tools inherit errors, deadlines, budgets, output
validation, logs and metrics without writing any of it. Installed packages can also offer
plugins through the `wellhead.plugins` entry-point group.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from fastmcp import FastMCP

from wellhead.errors import ConfigError

log = logging.getLogger("wellhead.plugins")
ENTRY_POINT_GROUP = "wellhead.plugins"
_DEFAULT_ATTRIBUTES = ("register", "server", "mcp")
_MUTABLE = (dict, list, set, bytearray)


def entry_point_plugins() -> list[str]:
    """`module:attr` specs of plugins installed packages declare."""
    return [ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)]


def resolve(spec: str) -> tuple[ModuleType, Any]:
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"plugin '{spec}': cannot import module '{module_name}': {exc}") from None
    if attribute:
        if not hasattr(module, attribute):
            raise ConfigError(f"plugin '{spec}': module '{module_name}' has no '{attribute}'")
        return module, getattr(module, attribute)
    for name in _DEFAULT_ATTRIBUTES:
        if hasattr(module, name):
            return module, getattr(module, name)
    raise ConfigError(
        f"plugin '{spec}': module defines none of {', '.join(_DEFAULT_ATTRIBUTES)}; "
        "name the attribute as module:attr"
    )


def load_plugin(mcp: FastMCP, spec: str, runtime: Any) -> None:
    module, target = resolve(spec)
    if isinstance(target, FastMCP):
        mcp.mount(target)
    elif callable(target):
        parameters = inspect.signature(target).parameters
        target(mcp, runtime) if len(parameters) >= 2 else target(mcp)
    else:
        raise ConfigError(
            f"plugin '{spec}': expected a FastMCP server or a register(mcp) function, "
            f"got {type(target).__name__}"
        )
    warn_about_module_state(module, spec)
    log.info("loaded plugin %s", spec, extra={"plugin": spec})


def warn_about_module_state(module: ModuleType, spec: str) -> None:
    """Module-level mutable containers are shared by every client: a state-bleed risk."""
    shared = [
        name
        for name, value in vars(module).items()
        if not name.startswith("__") and not name.isupper() and isinstance(value, _MUTABLE)
    ]
    if shared:
        log.warning(
            "plugin %s keeps module-level mutable state (%s): it is shared by every client "
            "and session; keep per-client state in the session store (ctx.set_state / "
            "fastmcp sessions) instead",
            spec,
            ", ".join(sorted(shared)),
            extra={"plugin": spec, "module_state": sorted(shared)},
        )
