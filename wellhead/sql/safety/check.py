"""The check itself: tokens, one statement, nesting, parse, tree walk, DuckDB cross-check,
and binding of `:name` parameters. See the package docstring for the decisions."""

from __future__ import annotations

import re
import unicodedata
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, SqlglotError, TokenError
from sqlglot.tokens import Token, TokenType

from wellhead.errors import InvalidRequest, UnsafeSQL
from wellhead.sql.safety import mysql_rules
from wellhead.sql.safety.duckdb_parser import duckdb_agrees
from wellhead.sql.safety.reasons import (
    DYNAMIC,
    EXTENSIONS,
    FILES,
    HINT,
    LOCKS,
    PATH_SETTING,
    SESSIONS,
    SETTINGS,
    WRITES_FILES,
)
from wellhead.sql.safety.rules import EPONYMOUS, PATH_SETTINGS, RULES, Rules

DIALECTS = ("duckdb", "sqlite", "postgres", *mysql_rules.MYSQL_DIALECTS)

MAX_NESTING = 24
"""Most levels of parentheses, brackets, CASE and prefix operators (NOT, -) one statement may
nest, counted on tokens before parsing. sqlglot's parser recurses about 25 Python frames per
level (a nested function call; 19 for CASE, 10 for NOT): 24 levels need about 620 of the
interpreter's 1000, which leaves room for a deep server call stack; a deeper statement would
die as a RecursionError inside sqlglot. Real queries nest a handful of levels."""

MAX_TREE_DEPTH = 100
"""Most levels of the parsed tree. It bounds what nesting the tokens do not show (chains of
casts `a::int::int...`, subscripts `a[1][1]...`, alternating `1 + 2 - 3 + ...`; 24 nested
subqueries are ~75 levels) and keeps SQL generation (`tree.sql()`, up to ~5 frames per level,
used by the paging layer) within about 500 frames. Chains sqlglot generates in a loop (one
operator repeated, AND/OR, UNION/EXCEPT) do not count."""

_TOO_DEEP = "statement is too deeply nested (more than {n} levels{what}); simplify it"

# --------------------------------------------------------------------------- statements

_MODIFIES = "it modifies data"
_SCHEMA = "it changes the schema or database objects"
_TXN = "wellhead manages transactions itself and every call is read-only"
_CURSORS = "server-side cursors are not available; wellhead pages results for you"

# Leading keyword -> reason. Checked on tokens before parsing, so the message is precise even
# where sqlglot falls back to an opaque Command or cannot parse the statement at all.
_STATEMENT_REASONS: dict[str, str] = {
    "INSERT": _MODIFIES,
    "UPDATE": _MODIFIES,
    "DELETE": _MODIFIES,
    "MERGE": _MODIFIES,
    "UPSERT": _MODIFIES,
    "REPLACE": _MODIFIES,
    "TRUNCATE": _MODIFIES,
    "CREATE": _SCHEMA,
    "DROP": _SCHEMA,
    "ALTER": _SCHEMA,
    "COMMENT": _SCHEMA,
    "GRANT": _SCHEMA,
    "REVOKE": _SCHEMA,
    "REINDEX": "it rebuilds indexes (a write)",
    "CLUSTER": "it rewrites a table (a write)",
    "REFRESH": "it recomputes a materialized view (a write)",
    "SECURITY": _SCHEMA,
    "REASSIGN": _SCHEMA,
    "COPY": "it reads or writes files on the server",
    "EXPORT": WRITES_FILES,
    "IMPORT": FILES,
    "ATTACH": "it opens another database or file",
    "DETACH": "it changes the attached databases",
    "INSTALL": EXTENSIONS,
    "LOAD": EXTENSIONS,
    "FORCE": EXTENSIONS,
    "FORCE INSTALL": EXTENSIONS,
    "FORCE CHECKPOINT": "it forces a write of the database file",
    "UPDATE EXTENSIONS": EXTENSIONS,
    "SET": SETTINGS,
    "RESET": SETTINGS,
    "PRAGMA": SETTINGS,
    "USE": SETTINGS,
    "DISCARD": SETTINGS,
    "CALL": "it runs a procedure or table function outside a SELECT",
    "DO": DYNAMIC,
    "EXECUTE": DYNAMIC,
    "PREPARE": DYNAMIC,
    "DEALLOCATE": DYNAMIC,
    "BEGIN": _TXN,
    "START": _TXN,
    "COMMIT": _TXN,
    "END": _TXN,
    "ROLLBACK": _TXN,
    "ABORT": _TXN,
    "SAVEPOINT": _TXN,
    "RELEASE": _TXN,
    "LISTEN": SESSIONS,
    "NOTIFY": SESSIONS,
    "UNLISTEN": SESSIONS,
    "DECLARE": _CURSORS,
    "FETCH": _CURSORS,
    "CLOSE": _CURSORS,
    "MOVE": _CURSORS,
    "LOCK": LOCKS,
    "UNLOCK": LOCKS,
    "VACUUM": "it runs maintenance that writes (VACUUM INTO writes a file)",
    "ANALYZE": "it runs maintenance that writes statistics",
    "CHECKPOINT": "it forces a write of the database file",
    "KILL": SESSIONS,
}
# Reasons that hold in one dialect only (MySQL's SHOW, HANDLER, XA...), looked up first.
_DIALECT_STATEMENT_REASONS: dict[str, dict[str, str]] = {
    d: mysql_rules.STATEMENTS for d in mysql_rules.MYSQL_DIALECTS
}

# First keywords of statements that may be a read. Anything else is refused by name.
_READ_STARTS = {
    "duckdb": {"SELECT", "WITH", "VALUES", "FROM", "TABLE", "(", "EXPLAIN", "DESCRIBE", "DESC"}
    | {"SHOW", "SUMMARIZE", "PIVOT", "UNPIVOT"},
    "sqlite": {"SELECT", "WITH", "VALUES", "(", "EXPLAIN"},
    "postgres": {"SELECT", "WITH", "VALUES", "TABLE", "(", "EXPLAIN", "SHOW"},
    "mysql": mysql_rules.READ_STARTS,
    "mariadb": mysql_rules.READ_STARTS,
}

# Tree nodes that make a statement something other than a read, wherever they appear.
_WRITE_NODES: tuple[type, ...] = (
    exp.DML,
    exp.DDL,
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Merge,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.Copy,
    exp.Command,
    exp.Set,
    exp.Pragma,
    exp.Attach,
    exp.Detach,
    exp.Install,
    exp.Use,
    exp.Transaction,
    exp.Commit,
    exp.Rollback,
    exp.TruncateTable,
    exp.Grant,
    exp.Revoke,
    exp.Analyze,
    exp.Kill,
    exp.LoadData,
    exp.Refresh,
    exp.Cache,
    exp.Uncache,
    exp.Comment,
    exp.Declare,
    exp.Execute,
    exp.ExecuteSql,
    exp.Export,
    exp.Put,
    exp.Get,
    exp.StoredProcedure,
)

_EXPLAIN_OPTION_WORDS = {
    "ANALYZE",
    "ANALYSE",
    "VERBOSE",
    "COSTS",
    "SETTINGS",
    "BUFFERS",
    "WAL",
    "TIMING",
    "SUMMARY",
    "MEMORY",
    "SERIALIZE",
    "GENERIC_PLAN",
    "FORMAT",
    "TEXT",
    "JSON",
    "XML",
    "YAML",
    "HTML",
    "GRAPHVIZ",
    "NONE",
    "BINARY",
    "TRUE",
    "FALSE",
    "ON",
    "OFF",
}

_STRINGISH = frozenset(
    {
        TokenType.STRING,
        TokenType.BIT_STRING,
        TokenType.HEX_STRING,
        TokenType.BYTE_STRING,
        TokenType.NATIONAL_RAW_STRING,
        TokenType.NATIONAL_STRING,
        TokenType.RAW_STRING,
        TokenType.HEREDOC_STRING,
        TokenType.UNICODE_STRING,
    }
)
_QUOTED = _STRINGISH | {TokenType.IDENTIFIER}
# Tokens that can never spell a function or table name (most tokens of a big statement).
_NO_NAME = _STRINGISH | {
    TokenType.NUMBER,
    TokenType.COMMA,
    TokenType.L_PAREN,
    TokenType.R_PAREN,
    TokenType.DOT,
    TokenType.EQ,
    TokenType.PLUS,
    TokenType.DASH,
    TokenType.STAR,
    TokenType.SLASH,
    TokenType.LT,
    TokenType.GT,
    TokenType.LTE,
    TokenType.GTE,
    TokenType.NEQ,
    TokenType.DCOLON,
    TokenType.COLON,
    TokenType.PARAMETER,
    TokenType.L_BRACKET,
    TokenType.R_BRACKET,
}
# A ':' right after one of these ends a value, so it is not a `:name` placeholder.
_VALUE_END = _QUOTED | {
    TokenType.VAR,
    TokenType.NUMBER,
    TokenType.R_PAREN,
    TokenType.R_BRACKET,
    TokenType.R_BRACE,
    TokenType.STAR,
}
# Calls whose value can differ between two runs of the same statement (paging runs it once
# per page): random values, the clock, and state of the connection that happens to run it.
_VOLATILE_NODES: tuple[type, ...] = (
    exp.Rand,
    exp.Randn,
    exp.Randstr,
    exp.Uuid,
    exp.CurrentTimestamp,
    exp.CurrentTimestampLTZ,
    exp.CurrentDate,
    exp.CurrentDatetime,
    exp.CurrentTime,
    exp.Localtime,
    exp.Localtimestamp,
    exp.Systimestamp,
    exp.TableSample,
)
_VOLATILE_NAMES = frozenset(
    {
        "random",
        "rand",
        "random_normal",
        "randomblob",
        "random_uuid",
        "gen_random_uuid",
        "gen_random_bytes",
        "uuid",
        "uuidv4",
        "uuidv7",
        "uuid_generate_v1",
        "uuid_generate_v1mc",
        "uuid_generate_v4",
        "setseed",
        "now",
        "clock_timestamp",
        "statement_timestamp",
        "transaction_timestamp",
        "timeofday",
        "get_current_timestamp",
        "get_current_time",
        "current_localtimestamp",
        "today",
        "pg_backend_pid",
        "inet_client_port",
        "txid_current_snapshot",
        "pg_current_snapshot",
        "changes",
        "total_changes",
        "last_insert_rowid",
        "current_query",
        "sysdate",
        "curdate",
        "curtime",
        "utc_timestamp",
        "utc_date",
        "utc_time",
        "unix_timestamp",
        "uuid_short",
        "random_bytes",
        "connection_id",
        "found_rows",
        "row_count",
    }
)
_NOW_WITHOUT_ARGS = frozenset({"date", "time", "datetime", "julianday", "unixepoch"})
_CLOCK_WORDS = frozenset({"now", "today", "tomorrow", "yesterday"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PATHLIKE = re.compile(r"[./\\:*?~]")
_PLAIN_WS = frozenset(" \t\n\r\f")
_NOT_PLAIN = re.compile(r"[^\x20-\x7e \t\n\r\f]")
_ODD_ASCII = re.compile(r"[^\x20-\x7e\t\n\r\f]")


# --------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class CheckedStatement:
    """A statement proven to be one read; `sql` is what the source should run."""

    sql: str
    """The original text, without its trailing semicolon (and trailing comments/space)."""
    tree: exp.Expression
    """The parsed statement. For EXPLAIN, a Command whose `expression` is the checked target."""
    kind: str
    """`select` (pageable), `explain`, `describe` or `show`."""
    pageable: bool
    """True for kind == "select": the paging layer may wrap it as a subquery."""
    volatile: bool = False
    """True when running it twice may give different rows or values: it calls random(),
    a UUID generator, the clock (now()/current_timestamp are fixed per statement but differ
    per page), a session-dependent function, or samples a table (TABLESAMPLE, USING SAMPLE).
    Pages of such a statement do not add up to one result, so the paging layer must not
    hand out a cursor for it."""
    percent_limit: bool = False
    """True when the top-level LIMIT / FETCH FIRST is a percentage (DuckDB `LIMIT 10%`,
    `LIMIT 10 PERCENT`, `FETCH FIRST 10 PERCENT ROWS ONLY`): a page window must not replace
    it with a row count. sqlglot keeps it as `limit_options.percent` and writes it back as
    `LIMIT 10 PERCENT`, which DuckDB reads the same way."""


def check_read_only(
    sql: str, dialect: str, *, allow_introspection: bool = False
) -> CheckedStatement:
    """Return the checked statement, or raise UnsafeSQL naming exactly why it is refused.

    `allow_introspection` (PostgreSQL only) lets through the server-introspection views and
    functions refused by default (pg_stat_activity, pg_locks, pg_settings, path settings...)
    for a source whose callers may see each other's statements. DuckDB settings and file
    paths stay refused whatever it says: they can hold secrets.

    Thread-safe: no shared mutable state except DuckDB's own parser, used under a lock.
    A RecursionError anywhere in the check (sqlglot recurses) becomes the "too deeply
    nested" refusal, never an internal error.
    """
    try:
        return _check_read_only(sql, dialect, allow_introspection)
    except RecursionError:
        raise UnsafeSQL(_TOO_DEEP.format(n=MAX_NESTING, what="")) from None


def _check_read_only(sql: str, dialect: str, allow_introspection: bool) -> CheckedStatement:
    if dialect not in DIALECTS:
        raise InvalidRequest(
            f"unknown SQL dialect {_clip(repr(dialect))}; expected one of {DIALECTS}"
        )
    if not isinstance(sql, str) or not sql.strip():
        raise InvalidRequest("sql is empty: send one SELECT statement")
    tokens = _lex(sql, dialect)
    if not tokens:
        raise InvalidRequest("sql has no statement (only comments or whitespace)")
    _refuse_odd_characters(sql, tokens)
    _refuse_unicode_identifiers(tokens)
    if dialect in mysql_rules.MYSQL_DIALECTS:
        mysql_rules.check_lexical(sql, dialect, tokens)
    tokens = _single_statement(tokens)
    _check_nesting(tokens)
    text = sql[: tokens[-1].end + 1]
    rules = RULES[(dialect, bool(allow_introspection))]
    checked = _check_tokens(text, tokens, rules, nested=False)
    if dialect == "duckdb":
        duckdb_agrees(_for_parsing(text, tokens, dialect), checked.kind)
    checked.tree.meta["wellhead_dialect"] = dialect
    return checked


def named_parameters(tree: exp.Expression) -> list[str]:
    """The `:name` placeholders a checked tree uses, in first-use order, each once."""
    seen: dict[str, None] = {}
    for node in tree.walk(bfs=False):
        if isinstance(node, exp.Placeholder):
            name = node.this
            if isinstance(name, exp.Expression):
                name = name.name
            if isinstance(name, str) and _NAME.match(name):
                seen.setdefault(name, None)
    return list(seen)


def bind_named(
    checked: CheckedStatement,
    params: Mapping[str, object] | None,
    style: Literal["dollar", "qmark"],
) -> tuple[str, list[object]]:
    """Rewrite `:name` placeholders to positional ones and return (sql, values).

    `dollar` gives `$1..$n`, one number per distinct name (DuckDB, PostgreSQL); `qmark` gives
    one `?` per occurrence (SQLite). Values are bound by the driver, never spliced into SQL.
    """
    if style not in ("dollar", "qmark"):
        raise InvalidRequest(
            f"unknown placeholder style {_clip(repr(style))}; expected 'dollar' or 'qmark'"
        )
    given = _normalise_params(params)
    dialect = _dialect_of(checked)
    spots = _placeholder_spots(_lex(checked.sql, dialect))
    used = list(dict.fromkeys(name for _, _, name in spots))
    tree_marks = sum(
        1 for n in checked.tree.walk() if isinstance(n, (exp.Placeholder, exp.Parameter))
    )
    if tree_marks != len(spots):
        raise InvalidRequest(
            "write query parameters as :name (letters, digits, underscore); "
            "positional markers such as ?, $1 or %(name)s are not supported"
        )
    missing = [n for n in used if n not in given]
    unknown = [n for n in given if n not in used]
    if missing or unknown:
        parts = []
        if missing:
            parts.append("missing value for " + ", ".join(f":{n}" for n in missing))
        if unknown:
            parts.append("unknown parameter " + ", ".join(repr(n) for n in unknown))
        uses = ", ".join(f":{n}" for n in used) or "no parameters"
        raise InvalidRequest(_clip("; ".join(parts), 400) + f" (the SQL uses {_clip(uses, 400)})")
    out: list[str] = []
    values: list[object] = []
    index: dict[str, int] = {}
    last = 0
    for start, end, name in spots:
        out.append(checked.sql[last:start])
        if style == "qmark":
            out.append("?")
            values.append(given[name])
        else:
            if name not in index:
                values.append(given[name])
                index[name] = len(values)
            out.append(f"${index[name]}")
        last = end + 1
    out.append(checked.sql[last:])
    return "".join(out), values


# --------------------------------------------------------------------------- internals


def _tokenize(sql: str, dialect: str) -> list[Token]:
    try:
        return list(Dialect.get_or_raise(dialect).tokenize(sql))
    except (TokenError, SqlglotError) as err:
        raise UnsafeSQL(
            f"could not parse the statement in dialect {dialect}: {_short(err)}"
        ) from None


def _lex(sql: str, dialect: str) -> list[Token]:
    """Tokens with true offsets. sqlglot lexes a leading command keyword (EXPLAIN, SHOW,
    VACUUM, ...) as one token plus an opaque string: lex that rest again, shifted."""
    tokens = _tokenize(sql, dialect)
    commands = Dialect.get_or_raise(dialect).tokenizer_class.COMMANDS
    if not tokens or tokens[0].token_type not in commands:
        return tokens
    head = tokens[0]
    base = head.end + 1
    rest = sql[base:]
    inner = _lex(rest, dialect) if rest.strip() else []
    shifted = [
        Token(t.token_type, t.text, t.line, t.col, t.start + base, t.end + base, t.comments)
        for t in inner
    ]
    return [head, *shifted]


def _clip(text: str, limit: int = 64) -> str:
    """User text quoted in an error, cut visibly: an error must stay small whatever the
    input (a 100 KiB identifier must not come back as a 100 KiB message)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def _short(err: Exception) -> str:
    if isinstance(err, ParseError) and err.errors:
        first = err.errors[0]
        desc = str(first.get("description") or "syntax error")
        line, col = first.get("line"), first.get("col")
        where = f" (line {line}, column {col})" if line else ""
        return f"{desc}{where}"[:200]
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).splitlines()
    return (text[0] if text else type(err).__name__)[:200]


def _refuse_odd_characters(sql: str, tokens: list[Token]) -> None:
    """Refuse characters engines and sqlglot may read differently, outside quoted text."""
    if sql.isascii() and _ODD_ASCII.search(sql) is None:  # the common case, in C
        return
    quoted = [(t.start, t.end) for t in tokens if t.token_type in _QUOTED]
    qi = 0
    for match in _NOT_PLAIN.finditer(sql):
        pos, ch = match.start(), match.group()
        cat = unicodedata.category(ch)
        odd = cat in ("Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn") or ch.isspace()
        if not odd:
            continue
        while qi < len(quoted) and quoted[qi][1] < pos:
            qi += 1
        inside = qi < len(quoted) and quoted[qi][0] <= pos <= quoted[qi][1]
        if ch == "\x00" or not inside:
            label = unicodedata.name(ch, "control character")
            raise UnsafeSQL(
                f"character U+{ord(ch):04X} ({label}) is not allowed outside a string literal: "
                "engines read it differently; use plain spaces"
            )


def _refuse_unicode_identifiers(tokens: list[Token]) -> None:
    """PostgreSQL reads `U&"pg_read_fil\\0065"` as one identifier (pg_read_file); sqlglot
    reads `U & "..."`. Refuse the form rather than decode it: no analysis needs it."""
    for u, amp, ident in zip(tokens, tokens[1:], tokens[2:], strict=False):
        if (
            ident.token_type == TokenType.IDENTIFIER
            and amp.token_type == TokenType.AMP
            and u.text.upper() == "U"
            and u.end + 1 == amp.start
            and amp.end + 1 == ident.start
        ):
            raise UnsafeSQL(
                'Unicode-escaped identifiers (U&"...") are not allowed: they can hide a '
                "function or table name; write the name plainly"
            )


def _single_statement(tokens: list[Token]) -> list[Token]:
    """Return the tokens of the one statement, or refuse a second one."""
    segments: list[list[Token]] = [[]]
    for tok in tokens:
        if tok.token_type == TokenType.SEMICOLON:
            segments.append([])
        else:
            segments[-1].append(tok)
    statements = [s for s in segments if s]
    if len(statements) > 1:
        raise UnsafeSQL(
            f"only one statement per call; found {len(statements)}. "
            "Send each statement in its own call"
        )
    if not statements:
        raise InvalidRequest("sql has no statement (only ';')")
    semis = len(segments) - 1
    if segments[0] == [] or semis > 1:
        raise UnsafeSQL("only one statement per call; remove the extra ';'")
    return statements[0]


_OPENERS = frozenset({TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE, TokenType.CASE})
_CLOSERS = frozenset({TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE, TokenType.END})
_PREFIX_OPS = frozenset({TokenType.NOT, TokenType.DASH, TokenType.PLUS, TokenType.TILDE})


def _check_nesting(tokens: list[Token]) -> None:
    """Refuse more than MAX_NESTING levels before sqlglot recurses into them. A level is an
    open bracket or CASE, or one operator of a run of prefix operators (`NOT NOT NOT a`)."""
    depth = run = 0
    for tok in tokens:
        kind = tok.token_type
        if kind in _PREFIX_OPS:
            run += 1
        else:
            run = 0
            if kind in _OPENERS:
                depth += 1
            elif kind in _CLOSERS and depth:
                depth -= 1
        if depth + run > MAX_NESTING:
            raise UnsafeSQL(_TOO_DEEP.format(n=MAX_NESTING, what=""))


def _first_words(tokens: list[Token], n: int = 2) -> list[str]:
    return [t.text.upper() for t in tokens[:n]]


def _check_tokens(
    text: str, tokens: list[Token], rules: Rules, *, nested: bool
) -> CheckedStatement:
    dialect = rules.dialect
    words = _first_words(tokens)
    lead = words[0]
    if lead == "EXPLAIN":
        if nested:
            raise UnsafeSQL("EXPLAIN inside EXPLAIN is not allowed: explain a query")
        return _check_explain(text, tokens, rules)
    extra = _DIALECT_STATEMENT_REASONS.get(dialect, {})
    if " ".join(words) in _STATEMENT_REASONS or " ".join(words) in extra:
        lead = " ".join(words)
    if lead not in _READ_STARTS[dialect]:
        why = extra.get(lead) or _STATEMENT_REASONS.get(lead)
        if why is None:
            raise UnsafeSQL(
                f"{_clip(lead)} statements are not allowed: only SELECT, WITH ... SELECT, "
                "VALUES and EXPLAIN of a query are accepted"
            )
        raise UnsafeSQL(f"{_clip(lead)} is not allowed: {why}")
    if lead == "SHOW" and dialect == "postgres":
        return _check_pg_show(text, tokens, rules)
    tree = _parse(text, _tokens_for_parsing(tokens, dialect), dialect)
    kind = _kind(tree, dialect, tokens)
    volatile = _walk(tree, rules)
    _scan_tokens(tokens, rules)
    return CheckedStatement(
        sql=text,
        tree=tree,
        kind=kind,
        pageable=kind == "select",
        volatile=volatile,
        percent_limit=_percent_limit(tree),
    )


def _for_parsing(text: str, tokens: list[Token], dialect: str) -> str:
    """The text sqlglot parses: for DuckDB, `:name` is spelled `$name` (same offsets)."""
    if dialect != "duckdb":
        return text
    chars = list(text)
    for start, _end, _name in _placeholder_spots(tokens):
        chars[start] = "$"
    return "".join(chars)


def _tokens_for_parsing(tokens: list[Token], dialect: str) -> list[Token] | None:
    """The tokens sqlglot parses, so the text is tokenized once: for DuckDB each `:name` is
    given as `$name` (a PARAMETER token, what sqlglot's tokenizer makes of `$`). None when
    the statement starts with a command keyword: `_lex` split that token's opaque rest, so
    these are not the tokens sqlglot's own parser expects; parse the text then."""
    commands = Dialect.get_or_raise(dialect).tokenizer_class.COMMANDS
    if tokens[0].token_type in commands:
        return None
    if dialect != "duckdb":
        return tokens
    spots = {start for start, _end, _name in _placeholder_spots(tokens)}
    if not spots:
        return tokens
    return [
        Token(TokenType.PARAMETER, "$", t.line, t.col, t.start, t.end, t.comments)
        if t.start in spots and t.token_type == TokenType.COLON
        else t
        for t in tokens
    ]


def _parse(text: str, tokens: list[Token] | None, dialect: str) -> exp.Expression:
    sqlglot_dialect = Dialect.get_or_raise(dialect)
    try:
        if tokens is None:
            parsed = sqlglot_dialect.parse(_for_parsing(text, _lex(text, dialect), dialect))
        else:
            parsed = sqlglot_dialect.parser().parse(tokens, text)
        trees = [t for t in parsed if t is not None]
    except SqlglotError as err:
        raise UnsafeSQL(
            f"could not parse the statement in dialect {dialect}: {_short(err)}"
        ) from None
    trees = [t for t in trees if not isinstance(t, exp.Semicolon)]
    if len(trees) != 1:
        raise UnsafeSQL(f"only one statement per call; found {len(trees)}")
    tree = trees[0]
    if not isinstance(tree, exp.Expression):
        raise UnsafeSQL(f"{type(tree).__name__.upper()} is not allowed: not a read statement")
    return tree


def _kind(tree: exp.Expression, dialect: str, tokens: list[Token]) -> str:
    if isinstance(tree, exp.Subquery):
        inner = tree.unnest()
        if isinstance(inner, (exp.Select, exp.SetOperation, exp.Values)):
            return "select"
    if isinstance(tree, (exp.Select, exp.SetOperation, exp.Values)):
        return "select"
    if dialect == "duckdb":
        if isinstance(tree, (exp.Describe, exp.Summarize)):
            return "describe"
        if isinstance(tree, exp.Show):
            return "show"
        if isinstance(tree, exp.Command) and str(tree.this).upper() == "SHOW":
            _check_show_target(tokens[1:])
            return "show"
        if isinstance(tree, exp.Pivot):
            raise UnsafeSQL(
                "a bare PIVOT/UNPIVOT statement is not accepted: wrap it as "
                "SELECT * FROM (PIVOT ...) so it can be paged"
            )
    name = _node_name(tree)
    why = _STATEMENT_REASONS.get(name)
    if why:
        raise UnsafeSQL(f"{_clip(name)} is not allowed: {why}")
    raise UnsafeSQL(
        f"{_clip(name)} statements are not allowed: only SELECT, WITH ... SELECT, VALUES and "
        "EXPLAIN of a query are accepted"
    )


def _node_name(node: exp.Expr) -> str:
    if isinstance(node, exp.Command):
        return str(node.this).upper()
    names = {
        exp.TruncateTable: "TRUNCATE",
        exp.Transaction: "BEGIN",
        exp.LoadData: "LOAD",
        exp.Refresh: "REFRESH",
        exp.ExecuteSql: "EXECUTE",
        exp.StoredProcedure: "CALL",
    }
    for cls, label in names.items():
        if isinstance(node, cls):
            return label
    if isinstance(node, exp.Column):
        return node.name.upper() or "COLUMN"
    return node.key.upper()


def _check_show_target(rest: list[Token]) -> None:
    """`SHOW name` (DuckDB: describe a table; PostgreSQL: a setting) takes plain words only."""
    for tok in rest:
        if tok.token_type in _STRINGISH or not (
            _NAME.match(tok.text) or tok.token_type in (TokenType.DOT, TokenType.IDENTIFIER)
        ):
            raise UnsafeSQL("SHOW takes a table or setting name only")
        if tok.token_type == TokenType.IDENTIFIER and _PATHLIKE.search(tok.text):
            raise UnsafeSQL(_path_message(tok.text))


def _check_pg_show(text: str, tokens: list[Token], rules: Rules) -> CheckedStatement:
    if len(tokens) < 2:
        raise UnsafeSQL("SHOW needs a setting name, e.g. SHOW work_mem")
    _check_show_target(tokens[1:])
    if not rules.introspection:
        name = "".join(t.text for t in tokens[1:]).lower()
        if name == "all":
            raise UnsafeSQL(
                "SHOW ALL is not allowed: it lists every setting, server file paths included; "
                "ask for one setting, e.g. SHOW work_mem"
            )
        _check_setting_name(name)
    rest = text[tokens[1].start :]
    tree = exp.Command(this="SHOW", expression=exp.Literal.string(rest))
    return CheckedStatement(sql=text, tree=tree, kind="show", pageable=False)


def _check_explain(text: str, tokens: list[Token], rules: Rules) -> CheckedStatement:
    dialect = rules.dialect
    i = 1
    if dialect == "sqlite":
        if _first_words(tokens[i:]) == ["QUERY", "PLAN"]:
            i += 2
    elif dialect in mysql_rules.MYSQL_DIALECTS:
        i = mysql_rules.explain_target(tokens)
    else:
        if i < len(tokens) and tokens[i].token_type == TokenType.L_PAREN:
            j = i + 1
            while j < len(tokens) and tokens[j].token_type != TokenType.R_PAREN:
                tok = tokens[j]
                ok = (
                    tok.token_type in (TokenType.COMMA, TokenType.NUMBER)
                    or tok.text.upper() in _EXPLAIN_OPTION_WORDS
                )
                if not ok:
                    raise UnsafeSQL(f"EXPLAIN option {_clip(repr(tok.text))} is not allowed")
                j += 1
            i = j + 1
        while i < len(tokens) and tokens[i].text.upper() in ("ANALYZE", "ANALYSE", "VERBOSE"):
            i += 1
    if i >= len(tokens):
        raise UnsafeSQL("EXPLAIN needs a query to explain")
    target_text = text[tokens[i].start :]
    target_tokens = _lex(target_text, dialect)
    try:
        target = _check_tokens(target_text, target_tokens, rules, nested=True)
    except UnsafeSQL as err:
        raise UnsafeSQL(f"EXPLAIN target refused: {err.public_message}") from None
    if target.kind != "select":
        raise UnsafeSQL("EXPLAIN target refused: only a query (SELECT ...) can be explained")
    prefix = " ".join(t.text.upper() for t in tokens[:i])
    tree = exp.Command(this=prefix, expression=target.tree)
    return CheckedStatement(sql=text, tree=tree, kind="explain", pageable=False)


def _walk(tree: exp.Expression, rules: Rules) -> bool:
    """Refuse any node that is not a read; return whether the statement is volatile.

    One breadth-first pass that also measures the tree's depth. Most nodes of a big
    statement are literals, columns and operators that need no check: a per-class flag
    (`_class_flags`) lets them through with one dict lookup.
    """
    volatile = False
    queue: deque[tuple[exp.Expr, int]] = deque([(tree, 1)])
    pop, push = queue.popleft, queue.append
    while queue:
        node, depth = pop()
        if depth > MAX_TREE_DEPTH:
            raise UnsafeSQL(
                _TOO_DEEP.format(
                    n=MAX_TREE_DEPTH,
                    what=" in its expression tree, e.g. a long chain of casts or subscripts",
                )
            )
        cls = type(node)
        if cls is exp.Literal:
            if not volatile and node.is_string:
                # 'now' / 'today' as a value: PostgreSQL casts ('now'::timestamp), SQLite
                # date functions (date('now'), strftime('%s', 'now')).
                volatile = node.name.strip().lower() in _CLOCK_WORDS
            continue
        flags = _class_flags(cls)
        for child in node.iter_expressions():
            push((child, depth + _level(node, flags, child)))
        if flags & _CHECK:
            volatile = _check_node(node, tree, rules) or volatile
    return volatile


_CHECK, _BINARY, _CONNECTOR, _SETOP = 1, 2, 4, 8
_CHECKED_TYPES: tuple[type, ...] = (
    *_WRITE_NODES,
    exp.Describe,
    exp.Show,
    exp.Summarize,
    exp.Select,
    exp.Into,
    exp.Lock,
    exp.Func,
    exp.Table,
    exp.LimitOptions,
    *_VOLATILE_NODES,
)


def _flags_of(cls: type) -> int:
    flags = _CHECK if issubclass(cls, _CHECKED_TYPES) else 0
    if issubclass(cls, exp.Binary):
        flags |= _BINARY
    if issubclass(cls, exp.Connector):
        flags |= _CONNECTOR
    if issubclass(cls, exp.SetOperation):
        flags |= _SETOP
    return flags


def _all_node_classes() -> list[type]:
    seen: list[type] = []
    todo: list[type] = [exp.Expr]
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo.extend(cls.__subclasses__())
    return seen


# What each node class needs from the walk, computed once at import (never mutated, so
# threads share it freely); a class defined later is computed on the fly.
_CLASS_FLAGS: Mapping[type, int] = {cls: _flags_of(cls) for cls in _all_node_classes()}


def _class_flags(cls: type) -> int:
    flags = _CLASS_FLAGS.get(cls)
    return _flags_of(cls) if flags is None else flags


def _level(parent: exp.Expr, flags: int, child: exp.Expr) -> int:
    """0 when sqlglot generates the child in the same loop as the parent, not by recursion:
    a chain of one binary operator (`a + b + c`), of AND/OR, of UNION/EXCEPT/INTERSECT."""
    if not flags & (_BINARY | _SETOP):
        return 1
    child_flags = _class_flags(type(child))
    if flags & child_flags & (_CONNECTOR | _SETOP):
        return 0
    if (
        type(child) is type(parent)
        and flags & _BINARY
        and child.args.get("negate") == parent.args.get("negate")
    ):
        return 0
    return 1


def _check_node(node: exp.Expr, tree: exp.Expression, rules: Rules) -> bool:
    """Refuse one node that may not be part of a read; return whether it is volatile."""
    if node is not tree and isinstance(node, (exp.Describe, exp.Show, exp.Summarize)):
        raise UnsafeSQL(f"{node.key.upper()} is only allowed as the whole statement")
    if isinstance(node, _WRITE_NODES) and not (node is tree and _is_read_root(node)):
        name = _node_name(node)
        why = _STATEMENT_REASONS.get(name, _MODIFIES)
        raise UnsafeSQL(f"{_clip(name)} is not allowed: {why}")
    if isinstance(node, exp.Select):
        if node.args.get("into"):
            raise UnsafeSQL("SELECT ... INTO is not allowed: it creates a table")
        if node.args.get("locks"):
            raise UnsafeSQL("locking clauses (FOR UPDATE / FOR SHARE) are not allowed: " + LOCKS)
    if isinstance(node, exp.Into):
        raise UnsafeSQL("SELECT ... INTO is not allowed: it creates a table")
    if isinstance(node, exp.Lock):
        raise UnsafeSQL("locking clauses (FOR UPDATE / FOR SHARE) are not allowed: " + LOCKS)
    if isinstance(node, exp.Func):
        for fname in _function_names(node):
            denied = rules.deny.reason(fname)
            if denied:
                raise UnsafeSQL(_function_message(fname, denied))
        if rules.dialect == "postgres" and not rules.introspection:
            _check_current_setting(node)
    if isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier):
        _check_table_name(node, rules)
    if isinstance(node, exp.LimitOptions) and node.args.get("percent"):
        _check_percent(node)
    return _is_volatile(node)


def _is_volatile(node: exp.Expr) -> bool:
    if isinstance(node, _VOLATILE_NODES):
        return True
    if isinstance(node, exp.Func):
        names = _function_names(node)
        if any(name in _VOLATILE_NAMES for name in names):
            return True
        # SQLite date functions read the clock when called without a time value: date().
        if any(name in _NOW_WITHOUT_ARGS for name in names):
            args = node.expressions if isinstance(node, exp.Anonymous) else node.args.values()
            return not any(args)
        return False
    return False


def _percent_limit(tree: exp.Expression) -> bool:
    node = tree.unnest() if isinstance(tree, exp.Subquery) else tree
    for key in ("limit", "fetch"):
        clause = node.args.get(key)
        if isinstance(clause, (exp.Limit, exp.Fetch)):
            options = clause.args.get("limit_options")
            if isinstance(options, exp.LimitOptions) and options.args.get("percent"):
                return True
    return False


def _check_percent(options: exp.LimitOptions) -> None:
    """sqlglot writes `LIMIT (5 + 5)%` back as `LIMIT (5 + 5) PERCENT`, which DuckDB cannot
    parse: a percentage must be a plain number so the statement survives regeneration."""
    clause = options.parent
    value = None
    if isinstance(clause, exp.Limit):
        value = clause.args.get("expression")
    elif isinstance(clause, exp.Fetch):
        value = clause.args.get("count")
    if not (isinstance(value, exp.Literal) and not value.is_string):
        raise UnsafeSQL("a percentage LIMIT must be a plain number (LIMIT 10%), not an expression")


def _check_current_setting(node: exp.Func) -> None:
    """PostgreSQL `current_setting('name')` is allowed for ordinary settings only: the name
    must be a literal (so it can be checked) and not one holding a path or command."""
    if not (isinstance(node, exp.Anonymous) and node.name.lower() == "current_setting"):
        return
    args = node.expressions
    first = args[0] if args else None
    if not (isinstance(first, exp.Literal) and first.is_string):
        raise UnsafeSQL(
            "current_setting needs the setting name as a string literal, "
            "e.g. current_setting('work_mem')"
        )
    _check_setting_name(first.name.strip().lower())


def _check_setting_name(name: str) -> None:
    if name in PATH_SETTINGS:
        raise UnsafeSQL(f"setting {_clip(name)} is not allowed: {PATH_SETTING}; {HINT}")


def _table_message(name: str, why: str) -> str:
    return f"table {_clip(name)} is not allowed: {why}; {HINT}"


def _check_table_name(node: exp.Table, rules: Rules) -> None:
    """Names that are not plain tables: DuckDB file paths (replacement scans), table
    functions an engine lets you name without parentheses (SQLite eponymous virtual tables
    such as `pragma_database_list` or `fsdir`, DuckDB's `duckdb_logs` view), and
    introspection views (pg_stat_activity, DuckDB's duckdb_databases), in any schema."""
    dialect = rules.dialect
    name = node.name
    why_table = rules.table_reason(name)
    if why_table:
        raise UnsafeSQL(_table_message(name, why_table))
    schema = node.db.lower()
    if schema and schema in rules.schemas:
        raise UnsafeSQL(f"schema {_clip(schema)} is not allowed: {rules.schemas[schema]}; {HINT}")
    if dialect == "duckdb":
        for part in ("this", "db", "catalog"):
            ident = node.args.get(part)
            if isinstance(ident, exp.Identifier) and _PATHLIKE.search(ident.name):
                raise UnsafeSQL(_path_message(ident.name))
    lowered = name.lower()
    if dialect == "sqlite" or lowered in EPONYMOUS.get(dialect, ()):
        why = rules.deny.reason(lowered)
        if why:
            raise UnsafeSQL(_table_message(name, why))


def _is_read_root(node: exp.Expr) -> bool:
    return isinstance(node, exp.Command) and str(node.this).upper() == "SHOW"


def _function_names(node: exp.Func) -> Iterable[str]:
    if isinstance(node, exp.Anonymous):
        return [node.name.lower()]
    return [n.lower() for n in type(node).sql_names()]


def _function_message(name: str, why: str) -> str:
    return f"function {_clip(name)} is not allowed: {why}; {HINT}"


def _path_message(name: str) -> str:
    return (
        f"table name {_clip(repr(name))} looks like a file path or URL, which DuckDB would "
        f"read directly: {FILES}; {HINT}"
    )


def _scan_tokens(tokens: list[Token], rules: Rules) -> None:
    """Second pass on tokens, independent of how sqlglot built the tree: any denied name
    followed by '(' is refused, and so is any introspection view's name anywhere.

    It catches calls sqlglot maps to a class under another name, chained calls such as
    DuckDB's `'HOME'.getenv()`, and a view name in a spot the tree walk would not see.
    """
    deny = rules.deny
    for i, tok in enumerate(tokens):
        if tok.token_type in _NO_NAME:
            continue
        why_table = rules.table_reason(tok.text) if rules.token_tables else None
        if why_table:
            raise UnsafeSQL(_table_message(tok.text.lower(), why_table))
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if nxt is None or nxt.token_type != TokenType.L_PAREN:
            continue
        why = deny.reason(tok.text)
        if why:
            raise UnsafeSQL(_function_message(tok.text.lower(), why))


def _placeholder_spots(tokens: list[Token]) -> list[tuple[int, int, str]]:
    """(start, end, name) of every `:name` placeholder, in text order."""
    spots = []
    for i, tok in enumerate(tokens[:-1]):
        if tok.token_type != TokenType.COLON:
            continue
        nxt = tokens[i + 1]
        if nxt.start != tok.end + 1 or nxt.token_type in _QUOTED or not _NAME.match(nxt.text):
            continue
        if i > 0:
            prev = tokens[i - 1]
            if prev.end + 1 == tok.start and prev.token_type in _VALUE_END:
                continue
        spots.append((tok.start, nxt.end, nxt.text))
    return spots


def _normalise_params(params: Mapping[str, object] | None) -> dict[str, object]:
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise InvalidRequest("params must be an object mapping parameter names to values")
    out: dict[str, object] = {}
    for key, value in params.items():
        if not isinstance(key, str):
            raise InvalidRequest(f"parameter names must be strings; got {_clip(repr(key))}")
        name = key[1:] if key.startswith(":") else key
        if not _NAME.match(name):
            raise InvalidRequest(
                f"parameter name {_clip(repr(key))} is not valid: "
                "use letters, digits and underscore"
            )
        if name in out:
            raise InvalidRequest(f"parameter {_clip(repr(name))} is given twice")
        out[name] = value
    return out


def _dialect_of(checked: CheckedStatement) -> str:
    """The dialect `check_read_only` recorded on the tree (bind must tokenize the same way)."""
    dialect = checked.tree.meta.get("wellhead_dialect")
    if dialect not in DIALECTS:
        raise InvalidRequest("bind_named needs a statement returned by check_read_only")
    return str(dialect)
