"""MySQL/MariaDB plumbing: the DSN, the session wellhead pins, parameters, the grants check.

Kept apart from the source so each piece is small and testable without a server.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
import ssl
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from sqlglot.dialects.mysql import MySQL
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

from wellhead.errors import ConfigError, InvalidRequest

# Pinned for every session: no ANSI_QUOTES ("x" is a string), no NO_BACKSLASH_ESCAPES (\' is
# an escaped quote), no PIPES_AS_CONCAT (|| is OR), no ORACLE/ANSI modes: the server then reads
# quotes, comments and operators the way the safety check and sqlglot do.
SQL_MODE = "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"
COM_RESET_CONNECTION = 0x1F
"""Resets session variables, user variables, temporary tables, prepared statements, GET_LOCK
locks and the transaction, without a new login (mysql_reset_connection)."""

_SCHEMES = ("mysql", "mariadb")
_PARAMS = ("ssl", "ssl_ca", "charset", "connect_timeout")


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect; `password` never leaves this object (see `__repr__`)."""

    host: str
    port: int
    user: str
    password: str
    database: str
    ssl: ssl.SSLContext | None
    connect_timeout: float

    def __repr__(self) -> str:
        return f"Endpoint({self.user}@{self.host}:{self.port}/{self.database})"

    def connect_kwargs(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": self.database,
            "charset": "utf8mb4",
            "autocommit": True,
            "connect_timeout": self.connect_timeout,
            "ssl": self.ssl,
        }


def parse_dsn(dsn: str, source: str) -> Endpoint:
    """`mysql://user:password@host:3306/database?ssl=verify|require&ssl_ca=/ca.pem`."""
    try:
        parts = urlsplit(dsn)
        port = parts.port or 3306
    except ValueError as exc:
        raise ConfigError(f"source {source!r}: the dsn is not a valid URL ({exc})") from None
    if parts.scheme not in _SCHEMES:
        raise ConfigError(
            f"source {source!r}: the dsn must start with mysql:// (or mariadb://), "
            f"got {parts.scheme or 'no scheme'}://"
        )
    database = unquote(parts.path.lstrip("/"))
    if not parts.hostname or not parts.username or not database or "/" in database:
        raise ConfigError(
            f"source {source!r}: the dsn needs a user, a host and one database: "
            "mysql://user:${PASSWORD}@host:3306/database"
        )
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - set(_PARAMS))
    if unknown:
        raise ConfigError(
            f"source {source!r}: unknown dsn option(s) {', '.join(unknown)}; "
            f"expected {', '.join(_PARAMS)}"
        )
    if options.get("charset", "utf8mb4") != "utf8mb4":
        raise ConfigError(f"source {source!r}: only charset=utf8mb4 is supported")
    context: ssl.SSLContext | None = None
    mode = options.get("ssl", "verify" if "ssl_ca" in options else "")
    if mode in ("verify", "true", "1"):
        context = ssl.create_default_context(cafile=options.get("ssl_ca") or None)
    elif mode == "require":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif mode not in ("", "disable", "false", "0"):
        raise ConfigError(f"source {source!r}: ssl must be verify, require or disable")
    try:
        timeout = float(options.get("connect_timeout", "10"))
    except ValueError:
        raise ConfigError(f"source {source!r}: connect_timeout must be seconds") from None
    return Endpoint(
        host=parts.hostname,
        port=port,
        user=unquote(parts.username),
        password=unquote(parts.password or ""),
        database=database,
        ssl=context,
        connect_timeout=timeout,
    )


def session_sql(dialect: str) -> str:
    """The one SET that makes a fresh or reset session wellhead's: read-only by default,
    UTC, the pinned sql_mode. MariaDB 10.11 spells the read-only flag tx_read_only."""
    read_only = "tx_read_only" if dialect == "mariadb" else "transaction_read_only"
    return (
        f"SET SESSION sql_mode = '{SQL_MODE}', time_zone = '+00:00', {read_only} = 1, "
        "autocommit = 1"
    )


def timed(sql: str, dialect: str, server_ms: int) -> str:
    """The statement with its server-side deadline. MariaDB: a `SET STATEMENT ... FOR` prefix
    (this statement only, one round trip); MySQL 8 applies max_execution_time (set per call)."""
    if dialect == "mariadb":
        return f"SET STATEMENT max_statement_time = {server_ms / 1000:.3f} FOR {sql}"
    return sql


# --------------------------------------------------------------------------- parameters

_SPLITS: OrderedDict[str, list[str]] = OrderedDict()
_SPLITS_MAX = 512


def _split(sql: str) -> list[str]:
    """The text around each `?` placeholder token (never one inside a string or comment)."""
    cached = _SPLITS.get(sql)
    if cached is not None:
        _SPLITS.move_to_end(sql)
        return cached
    try:
        tokens = MySQL().tokenize(sql)
    except SqlglotError as exc:
        raise InvalidRequest(f"could not read the statement's placeholders: {exc}") from None
    parts, last = [], 0
    for tok in tokens:
        if tok.token_type == TokenType.PLACEHOLDER and tok.text == "?":
            parts.append(sql[last : tok.start])
            last = tok.end + 1
    parts.append(sql[last:])
    if len(sql) <= 16_384:
        _SPLITS[sql] = parts
        if len(_SPLITS) > _SPLITS_MAX:
            _SPLITS.popitem(last=False)
    return parts


def bind(sql: str, values: list[Any], literal: Any) -> str:
    """Splice escaped literals for the `?` placeholders. The drivers interpolate client-side
    too (the text protocol has no parameters); doing it here means a `%` in the SQL is never
    read as a format, and the escaping is the driver's own for this connection."""
    if not values:
        return sql
    parts = _split(sql)
    if len(parts) - 1 != len(values):
        raise InvalidRequest(
            f"the statement has {len(parts) - 1} placeholder(s), got {len(values)} value(s)"
        )
    out = [parts[0]]
    for index, (value, text) in enumerate(zip(values, parts[1:], strict=True)):
        out.append(literal(coerce(value, index + 1)))
        out.append(text)
    return "".join(out)


def coerce(value: Any, index: int) -> Any:
    if value is None or isinstance(value, bool | int | float | str | decimal.Decimal):
        return value
    if isinstance(value, dt.date | dt.datetime | dt.time | dt.timedelta | bytes):
        return value
    raise InvalidRequest(
        f"parameter #{index} is a {type(value).__name__}: MySQL parameters are single values "
        "(string, number, boolean, date or null); for a list use IN (:a, :b, ...)"
    )


# --------------------------------------------------------------------------- grants

_ALLOWED_PRIVILEGES = frozenset({"USAGE", "SELECT", "SHOW VIEW"})
_GRANT = re.compile(r"^GRANT\s+(?P<privs>.+?)\s+ON\s+(?P<target>.+?)\s+TO\s+", re.I | re.S)
_ROLE_GRANT = re.compile(r"^GRANT\s+(?P<roles>.+?)\s+TO\s+", re.I | re.S)
_SECRET = re.compile(r"\s+(IDENTIFIED\s+(BY|VIA|WITH)\b.*)$", re.I | re.S)


@dataclass(frozen=True)
class GrantProblem:
    privileges: list[str]
    target: str
    grant_option: bool


def strip_secret(grant: str) -> str:
    """A SHOW GRANTS line without its `IDENTIFIED BY PASSWORD '*hash'` tail."""
    return _SECRET.sub("", grant)


def _privileges(text: str) -> list[str]:
    """`SELECT, INSERT (a, b), SHOW VIEW` -> ['SELECT', 'INSERT (a, b)', 'SHOW VIEW']."""
    out: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    out.append("".join(current).strip())
    return [p for p in out if p]


def grant_problems(lines: list[str]) -> tuple[list[GrantProblem], list[str]]:
    """Privileges beyond reading in SHOW GRANTS output, and the roles granted (to check too)."""
    problems: list[GrantProblem] = []
    roles: list[str] = []
    for raw in lines:
        line = strip_secret(raw.strip())
        option = bool(re.search(r"\bWITH\s+GRANT\s+OPTION\b", line, re.I))
        m = _GRANT.match(line)
        if m:
            target = m.group("target").strip()
            privs = _privileges(m.group("privs"))
            if target.upper().startswith("PROCEDURE ") or target.upper().startswith("FUNCTION "):
                bad = privs
            else:
                bad = [
                    p
                    for p in privs
                    if re.sub(r"\s*\(.*\)$", "", p).upper() not in _ALLOWED_PRIVILEGES
                ]
            if privs and privs[0].upper() == "PROXY":
                bad = ["PROXY"]
            if bad or option:
                problems.append(GrantProblem(bad, target, option))
            continue
        m = _ROLE_GRANT.match(line)
        if m:
            roles.extend(r.strip() for r in m.group("roles").split(",") if r.strip())
    return problems, roles
