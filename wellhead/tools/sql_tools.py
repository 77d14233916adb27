"""SQL tools declared in config, served as real MCP tools with every guardrail of `query`.

Each declared tool becomes a FastMCP `Tool` whose input schema is generated from its typed
parameters (types, bounds, enums, defaults, descriptions, required) and whose output is the
same paged `QueryResult` as the core `query` tool. A call validates its arguments against
that same schema (JSON semantics: "10" is not an integer), binds them as driver parameters
(never SQL text), and runs through the shared executor: safety check, deadline, byte budget,
exact cursor paging. Cursors are bound to the tool's name and statement, so a cursor from
`query` or from another tool is refused.

A parameter with `identity:` (e.g. `claims.tenant_id`) is bound from the caller's token, not
from the arguments: it is absent from the input schema, passing it is refused, and a cursor
continued by a caller whose value differs is refused like a stranger's.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

import anyio
from fastmcp import FastMCP
from fastmcp.server.auth import require_scopes
from fastmcp.tools import Tool, ToolResult
from mcp.types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, TypeAdapter, ValidationError
from pydantic import create_model as _create_model
from sqlglot import exp

from wellhead.config import Settings
from wellhead.errors import (
    AccessDenied,
    ConfigError,
    CursorError,
    InvalidRequest,
    QueryTimeout,
    WellheadError,
)
from wellhead.governance.principal import current_principal
from wellhead.identity import caller_owner, caller_scopes
from wellhead.sql.executor import NOT_FOUND, PageRequest, QueryExecutor
from wellhead.sql.safety import bind_named, check_read_only, named_parameters
from wellhead.tools.core import page_result, progress_reporter
from wellhead.tools.models import QueryResult, lean_schema
from wellhead.tools.sql_tool_config import ParamConfig, SqlToolConfig

CORE_TOOLS = frozenset({"query", "list_tables", "describe_table", "read_more"})
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
_CURSOR_DESCRIPTION = (
    "next_cursor from the previous page of this tool; repeat the same arguments (or omit them)."
)
_SHOWN_INPUT = 80
_DEADLINE_SLACK_S = 5.0
"""The tool-level deadline trails the engine's, so the engine's precise timeout wins."""


# --------------------------------------------------------------------------- input schema


def arguments_model(name: str, config: SqlToolConfig) -> type[BaseModel]:
    """A pydantic model of the tool's arguments: the source of its schema and its validation."""
    fields: dict[str, Any] = {}
    for pname, param in config.parameters.items():
        if param.identity is not None:
            continue  # bound from the caller's token, never from arguments
        default: Any = ... if param.is_required else param.default
        fields[pname] = (param.annotation(), Field(default, description=param.description))
    fields["cursor"] = (str | None, Field(None, description=_CURSOR_DESCRIPTION))
    return _create_model(  # type: ignore[call-overload, no-any-return]
        f"{name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
    )


def input_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema agents see; nullable optionals keep their type, titles are dropped."""
    schema = lean_schema(model)
    schema.pop("description", None)
    return schema


def expected(param: ParamConfig) -> str:
    """A short human statement of what a parameter accepts, for error messages."""
    if param.type == "enum":
        return "one of " + ", ".join(json.dumps(v) for v in param.values or ())
    if param.type == "array":
        size = []
        if param.min_items is not None:
            size.append(f"at least {param.min_items}")
        if param.max_items is not None:
            size.append(f"at most {param.max_items}")
        count = f" ({' and '.join(size)} items)" if size else ""
        return f"array of {_scalar_expected(param, param.items or '')}{count}"
    return _scalar_expected(param, param.type)


def _scalar_expected(param: ParamConfig, kind: str) -> str:
    text = "date (YYYY-MM-DD)" if kind == "date" else kind
    if param.minimum is not None and param.maximum is not None:
        text += f" from {param.minimum:g} to {param.maximum:g}"
    elif param.minimum is not None:
        text += f" >= {param.minimum:g}"
    elif param.maximum is not None:
        text += f" <= {param.maximum:g}"
    if param.min_length is not None or param.max_length is not None:
        text += f" of length {param.min_length or 0}..{param.max_length or 'any'}"
    if param.pattern is not None:
        text += f" matching /{param.pattern}/"
    return text


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= _SHOWN_INPUT else text[: _SHOWN_INPUT - 3] + "..."


def describe_errors(tool: str, config: SqlToolConfig, errors: list[Any]) -> str:
    """One precise sentence per bad argument: which parameter, what came, what was expected."""
    problems = []
    for item in errors:
        loc = item["loc"]
        name = str(loc[0]) if loc else ""
        param = config.parameters.get(name)
        if item["type"] == "missing":
            kind = f" ({expected(param)})" if param else ""
            problems.append(f"missing required parameter '{name}'{kind}")
        elif item["type"] == "extra_forbidden":
            known = ", ".join([*_arguments(config), "cursor"])
            problems.append(f"unknown parameter '{name}'; this tool takes: {known}")
        else:
            where = name + "".join(f"[{part}]" for part in loc[1:])
            hint = f"; expected {expected(param)}" if param else ""
            message = item["msg"]
            problems.append(
                f"parameter '{where}': {message} (got {_shown(item.get('input'))}){hint}"
            )
    return f"invalid arguments for tool '{tool}': " + "; ".join(problems)


def _arguments(config: SqlToolConfig) -> list[str]:
    """The parameters a caller may pass (identity-bound ones are not among them)."""
    return [n for n, p in config.parameters.items() if p.identity is None]


# --------------------------------------------------------------------------- engine values


def engine_value(value: Any, param: ParamConfig, dialect: str) -> Any:
    """The value handed to the driver. Idempotent, so values read back from a cursor
    (where dates became ISO text) convert the same way as fresh ones.

    Dates are `datetime.date` (ISO text on SQLite, which stores dates as text). Arrays are
    lists (DuckDB, PostgreSQL), or JSON text on SQLite, meant for `json_each(:name)`.
    """
    if value is None:
        return None
    if param.type == "date":
        return _date(value, dialect)
    if param.type == "array":
        if dialect == "sqlite":
            if isinstance(value, str):
                return value
            return json.dumps([_date(v, "sqlite") if param.items == "date" else v for v in value])
        if param.items == "date":
            return [None if v is None else _date(v, dialect) for v in value]
        return list(value)
    return value


def _date(value: Any, dialect: str) -> Any:
    day = value if isinstance(value, datetime.date) else datetime.date.fromisoformat(str(value))
    return day.isoformat() if dialect == "sqlite" else day


# --------------------------------------------------------------------------- the tool


class SqlTool(Tool):
    """One config-declared SQL tool."""

    _config: SqlToolConfig = PrivateAttr()
    _model: type[BaseModel] = PrivateAttr()
    _adapters: dict[str, TypeAdapter[Any]] = PrivateAttr()
    _executor: QueryExecutor = PrivateAttr()
    _source: str = PrivateAttr()
    _dialect: str = PrivateAttr()
    _cost_check: bool = PrivateAttr(False)

    @classmethod
    def build(
        cls, name: str, config: SqlToolConfig, executor: QueryExecutor, source: str
    ) -> SqlTool:
        model = arguments_model(name, config)
        notes = config.annotations
        engine_deadline = config.timeout_s or executor.limits.query_timeout_s
        tool = cls(
            name=name,
            title=notes.title,
            description=config.description,
            parameters=input_schema(model),
            output_schema=lean_schema(QueryResult),
            annotations=ToolAnnotations(
                title=notes.title,
                read_only_hint=notes.readOnlyHint,
                destructive_hint=notes.destructiveHint,
                idempotent_hint=notes.idempotentHint,
                open_world_hint=notes.openWorldHint,
            ),
            tags={*config.tags, f"toolset:{config.toolset}"},
            auth=require_scopes(*config.scopes) if config.scopes else None,
            timeout=engine_deadline + _DEADLINE_SLACK_S,  # read by the deadline guard
        )
        tool._config = config
        tool._model = model
        tool._adapters = {n: TypeAdapter(p.annotation()) for n, p in config.parameters.items()}
        tool._executor = executor
        tool._source = source
        tool._dialect = executor.source(source).dialect
        guard = executor.cost_guard
        tool._cost_check = guard is not None and (
            config.cost_guard if config.cost_guard is not None else guard.config.sql_tools
        )
        return tool

    async def run(self, arguments: dict[str, Any]) -> ToolResult:
        arguments = dict(arguments or {})
        cursor = arguments.get("cursor")
        request = self._continue(cursor, arguments) if cursor else self._first(arguments)
        reporter = progress_reporter(_current_context())
        timeout = self._config.timeout_s
        if timeout is None:
            return page_result(await self._executor.run(request, reporter))
        try:
            with anyio.fail_after(timeout):
                page = await self._executor.run(request, reporter)
        except TimeoutError:
            raise QueryTimeout(
                f"tool '{self.name}' exceeded its {timeout:g} s limit and was cancelled in the "
                "engine; narrow the arguments (a shorter range, fewer ids)"
            ) from None
        return page_result(page)

    def _refuse_identity_arguments(self, arguments: dict[str, Any]) -> None:
        for name in arguments:
            param = self._config.parameters.get(name)
            if param is not None and param.identity is not None:
                raise InvalidRequest(
                    f"invalid arguments for tool '{self.name}': parameter '{name}' is bound from "
                    f"the caller's identity ({param.identity}) and cannot be passed; leave it out"
                )

    def _identity_value(self, name: str, param: ParamConfig) -> Any:
        """The caller's own value for an identity-bound parameter, checked against its type."""
        spec = param.identity or ""
        principal = current_principal()
        value = principal.lookup(spec) if principal is not None else None
        if value is None:
            raise AccessDenied(
                f"tool '{self.name}' binds parameter '{name}' from the caller's {spec}, and this "
                "caller has none; call it with a token that carries it"
            )
        try:
            checked = self._adapters[name].validate_python(value)
        except ValidationError:
            raise AccessDenied(
                f"the caller's {spec} does not fit parameter '{name}' of tool '{self.name}' "
                f"(expected {expected(param)}); fix the token's claims or the tool's type"
            ) from None
        return engine_value(checked, param, self._dialect)

    def _first(self, arguments: dict[str, Any]) -> PageRequest:
        self._refuse_identity_arguments(arguments)
        try:
            values = self._model.model_validate_json(json.dumps(arguments), strict=True)
        except ValidationError as exc:
            raise InvalidRequest(describe_errors(self.name, self._config, exc.errors())) from None
        params = {
            name: self._identity_value(name, param)
            if param.identity is not None
            else engine_value(getattr(values, name), param, self._dialect)
            for name, param in self._config.parameters.items()
        }
        return self._request(params, owner=caller_owner())

    def _continue(self, cursor: Any, arguments: dict[str, Any]) -> PageRequest:
        if not isinstance(cursor, str):
            raise InvalidRequest(f"invalid arguments for tool '{self.name}': cursor must be text")
        self._refuse_identity_arguments(arguments)
        owner = caller_owner()
        state = self._executor.resume(
            cursor, tool=self.name, sql=self._config.sql, source=self._source, owner=owner
        )
        params = {}
        for name, param in self._config.parameters.items():
            if name not in state.params:
                raise InvalidRequest("this cursor does not fit the tool any more; call it again")
            params[name] = engine_value(state.params[name], param, self._dialect)
            if param.identity is not None and self._identity_value(name, param) != params[name]:
                raise CursorError(NOT_FOUND)  # made by a caller with another identity
        for name, given in arguments.items():
            if name == "cursor":
                continue
            if name not in self._adapters:
                known = ", ".join([*_arguments(self._config), "cursor"])
                raise InvalidRequest(
                    f"invalid arguments for tool '{self.name}': unknown parameter '{name}'; "
                    f"this tool takes: {known}"
                )
            try:
                value = self._adapters[name].validate_json(json.dumps(given), strict=True)
            except ValidationError as exc:
                rooted = [{**item, "loc": (name, *item["loc"])} for item in exc.errors()]
                raise InvalidRequest(describe_errors(self.name, self._config, rooted)) from None
            param = self._config.parameters[name]
            if engine_value(value, param, self._dialect) != params[name]:
                raise InvalidRequest(
                    f"argument '{name}' differs from the call this cursor continues; repeat the "
                    "same arguments with the cursor, or call without a cursor to start over"
                )
        return self._request(
            params,
            owner=owner,
            offset=state.offset,
            total=state.total,
            column_types=state.column_types,
            snapshot=state.snapshot,
        )

    def _request(
        self,
        params: dict[str, Any],
        *,
        owner: str | None,
        offset: int = 0,
        total: int | None = None,
        column_types: list[str] | None = None,
        snapshot: str | None = None,
    ) -> PageRequest:
        return PageRequest(
            tool=self.name,
            source=self._source,
            sql=self._config.sql,
            params=params,
            offset=offset,
            total=total,
            max_rows=self._config.max_rows,
            budget_bytes=self._config.budget_bytes,
            owner=owner,
            column_types=column_types,
            scopes=caller_scopes(),
            snapshot=snapshot,
            cost_check=self._cost_check,
        )


def _current_context() -> Any:
    from fastmcp.server.dependencies import get_context

    try:
        return get_context()
    except RuntimeError:
        return None


# --------------------------------------------------------------------------- registration


def enabled_tools(settings: Settings) -> dict[str, SqlToolConfig]:
    """The declared tools whose toolset is switched on, in config order."""
    return {n: c for n, c in settings.tools.items() if settings.toolsets.allows(c.toolset)}


def register_sql_tools(mcp: FastMCP, settings: Settings, executor: QueryExecutor) -> list[str]:
    """Add every enabled SQL tool to the server; refuse (ConfigError) a config with problems."""
    problems = validate_sql_tools(settings)
    if problems:
        raise ConfigError("SQL tools are invalid:\n" + "\n".join(problems))
    names = []
    for name, config in enabled_tools(settings).items():
        source = config.source or settings.primary_source
        mcp.add_tool(SqlTool.build(name, config, executor, source))
        names.append(name)
    return names


# --------------------------------------------------------------------------- validation


def validate_sql_tools(settings: Settings) -> list[str]:
    """Every problem with the declared SQL tools and toolsets, one line each (empty: fine)."""
    problems: list[str] = []
    for name, config in settings.tools.items():
        problems += [f"tools.{name}: {p}" for p in _tool_problems(name, config, settings)]
    known = {config.toolset for config in settings.tools.values()}
    toolsets = settings.toolsets
    for key, listed in (("enabled", toolsets.enabled or []), ("disabled", toolsets.disabled)):
        for toolset in listed:
            if toolset not in known:
                have = ", ".join(sorted(known)) or "none: no SQL tools are declared"
                problems.append(f"toolsets.{key}: unknown toolset '{toolset}' (toolsets: {have})")
    both = set(toolsets.enabled or []) & set(toolsets.disabled)
    if both:
        problems.append(
            "toolsets: " + ", ".join(sorted(both)) + " both enabled and disabled; pick one"
        )
    return problems


def _tool_problems(name: str, config: SqlToolConfig, settings: Settings) -> list[str]:
    problems = []
    if not TOOL_NAME.match(name):
        problems.append("tool name must be 1-64 letters, digits, '_' or '-'")
    if name in CORE_TOOLS:
        problems.append(f"'{name}' is a core tool; choose another name")
    limits = settings.limits
    if config.max_rows is not None and config.max_rows > limits.max_rows_per_page:
        problems.append(
            f"max_rows {config.max_rows} exceeds limits.max_rows_per_page "
            f"({limits.max_rows_per_page})"
        )
    if config.budget_bytes is not None and config.budget_bytes > limits.max_result_budget_bytes:
        problems.append(
            f"budget_bytes {config.budget_bytes} exceeds limits.max_result_budget_bytes "
            f"({limits.max_result_budget_bytes})"
        )
    if config.timeout_s is not None and config.timeout_s > limits.query_timeout_s:
        problems.append(
            f"timeout_s {config.timeout_s:g} exceeds limits.query_timeout_s "
            f"({limits.query_timeout_s:g}); a tool may only shorten the query deadline"
        )
    source_name = config.source or (settings.primary_source if settings.sources else None)
    source = settings.sources.get(source_name) if source_name else None
    if source is None:
        have = ", ".join(sorted(settings.sources)) or "none"
        problems.append(f"source '{source_name}' is not configured (sources: {have})")
        return problems
    problems += [f"sql: {p}" for p in _sql_problems(config, source.kind)]
    return problems


def _sql_problems(config: SqlToolConfig, dialect: str) -> list[str]:
    try:
        checked = check_read_only(config.sql, dialect)
    except WellheadError as exc:
        return [f"refused in dialect {dialect}: {exc.public_message}"]
    used = named_parameters(checked.tree)
    declared = list(config.parameters)
    problems = []
    undeclared = [n for n in used if n not in config.parameters]
    if undeclared:
        problems.append(
            "placeholder " + ", ".join(f":{n}" for n in undeclared) + " is not declared under "
            "`parameters` (declare its type)"
        )
    unused = [n for n in declared if n not in used]
    if unused:
        problems.append(
            "parameter " + ", ".join(f"'{n}'" for n in unused) + " is declared but the SQL never "
            "uses it (write it as :name)"
        )
    if not problems:
        style = "qmark" if dialect == "sqlite" else "dollar"
        try:
            bind_named(checked, {n: None for n in used}, style)  # type: ignore[arg-type]
        except WellheadError as exc:
            problems.append(exc.public_message)
    if dialect == "sqlite":
        problems += _sqlite_array_problems(checked.tree, config)
    return problems


def _sqlite_array_problems(tree: exp.Expression, config: SqlToolConfig) -> list[str]:
    """SQLite has no arrays: an array arrives as JSON text, meaningful only inside json_* calls.

    Anywhere else (`id IN (:ids)`) it would silently compare against the JSON text.
    """
    problems = []
    for node in tree.find_all(exp.Placeholder):
        name = node.this.name if isinstance(node.this, exp.Expression) else str(node.this)
        param = config.parameters.get(name)
        if param is None or param.type != "array":
            continue
        parent = node.parent
        function = str(parent.this) if isinstance(parent, exp.Anonymous) else ""
        if not function and isinstance(parent, exp.Func):
            function = parent.sql_name()
        if not function.lower().startswith("json"):
            problems.append(
                f"array parameter :{name} must be used as json_each(:{name}) on SQLite, "
                f"e.g. `id IN (SELECT value FROM json_each(:{name}))`"
            )
    return problems
