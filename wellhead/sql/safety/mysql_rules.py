"""MySQL 8 and MariaDB: what the check refuses, and the lexical pass sqlglot cannot do.

sqlglot drops comments, but the server does not: `/*! ... */` (both) and `/*M! ... */`
(MariaDB) are executed, `/*+ ... */` carries optimizer hints (MySQL 8 `SET_VAR` changes a
setting for the statement). So before sqlglot sees the text, `check_lexical` scans it the way
the server does (strings with backslash escapes, backtick identifiers, `#` and `-- ` line
comments, unnested block comments), refuses those comment forms, and then checks that
sqlglot's tokens cover exactly the code the server would read: a comment the two read
differently (nesting, a `--` followed by something unusual) is refused, never guessed at.

The dialects differ, and the check follows the configured server's:
- MariaDB runs `/*M! ... */` and six-digit `/*!100000 ... */` (and skips `/*!80000 ... */`);
  MySQL 8 runs `/*!80000 ... */` and reads `/*M! ... */` as a plain comment. Every `/*!` is
  refused in both (which version runs what is the server's business); `/*M!` only for MariaDB.
- In both, `--1` is not a comment (`SELECT 1 --1` returns 2); sqlglot agrees, and the
  coverage check holds it to that.

The session wellhead opens pins `sql_mode` (no ANSI_QUOTES, no NO_BACKSLASH_ESCAPES, no
PIPES_AS_CONCAT), so the server reads quotes and `||` the way this scanner and sqlglot do.
"""

from __future__ import annotations

import re

from sqlglot.dialects.mysql import MySQL
from sqlglot.tokens import Token, TokenType

from wellhead.errors import UnsafeSQL
from wellhead.sql.safety.reasons import (
    DYNAMIC,
    EXTENSIONS,
    FILES,
    INTERNALS,
    LOCKS,
    OTHER_SESSIONS,
    SEQUENCE,
    SERVER,
    SETTINGS,
    WRITES,
    WRITES_FILES,
    Rule,
)

MYSQL_DIALECTS = ("mysql", "mariadb")


class MariaDB(MySQL):
    """sqlglot has no MariaDB dialect: the MySQL one, registered as `mariadb` (by class name),
    so paging and the executor can pass a MariaDB source's dialect to sqlglot unchanged."""


SLEEPS = "it holds a server thread without doing work (SLEEP/BENCHMARK/waits)"
UDF = "it calls a user-defined function that runs commands on the server"
PROCEDURE = "SELECT ... PROCEDURE runs a server procedure"

EXACT: dict[str, str] = {
    "load_file": FILES,
    "sleep": SLEEPS,
    "benchmark": SLEEPS,
    "master_pos_wait": SLEEPS,
    "source_pos_wait": SLEEPS,
    "master_gtid_wait": SLEEPS,
    "wait_for_executed_gtid_set": SLEEPS,
    "wait_until_sql_thread_after_gtids": SLEEPS,
    "get_lock": LOCKS,
    "release_lock": LOCKS,
    "release_all_locks": LOCKS,
    "is_free_lock": LOCKS,
    "is_used_lock": LOCKS,
    "last_insert_id": SETTINGS,
    "nextval": SEQUENCE,
    "setval": SEQUENCE,
    "lastval": SEQUENCE,
    "sys_exec": UDF,
    "sys_eval": UDF,
    "sys_get": UDF,
    "sys_set": UDF,
    "sys_bineval": UDF,
    "do_system": UDF,
    "binlog_gtid_pos": INTERNALS,
}
PREFIX: list[Rule] = [("lib_mysqludf_", UDF), ("sys_", UDF)]

# Schemas refused as a qualifier anywhere (`mysql.user`, `performance_schema.threads`,
# `sys.processlist`, `sys.format_statement(...)`): other sessions, secrets, server internals.
SCHEMAS: dict[str, str] = {
    "mysql": "it reveals accounts, password hashes and server internals",
    "performance_schema": OTHER_SESSIONS,
    "sys": OTHER_SESSIONS,
}

# information_schema tables refused by name in any schema.
TABLES: dict[str, str] = {
    name: OTHER_SESSIONS
    for name in (
        "processlist",
        "innodb_trx",
        "innodb_locks",
        "innodb_lock_waits",
        "metadata_lock_info",
        "user_statistics",
        "client_statistics",
        "query_cache_info",
        "query_response_time",
        "query_response_time_read",
        "query_response_time_write",
        "thread_pool_groups",
        "thread_pool_queues",
        "thread_pool_stats",
        "thread_pool_waits",
        "global_temporary_tables",
    )
} | {
    name: INTERNALS
    for name in (
        "global_variables",
        "session_variables",
        "global_status",
        "session_status",
        "system_variables",
        "files",
        "disks",
        "innodb_sys_tablespaces",
        "innodb_sys_datafiles",
        "innodb_tablespaces",
        "innodb_datafiles",
        "innodb_tablespaces_encryption",
        "innodb_buffer_page",
        "innodb_buffer_page_lru",
    )
}

# System variables that hold a path, a command, SQL run at connect, or a password.
PATH_VARIABLES = frozenset(
    {
        "datadir",
        "basedir",
        "tmpdir",
        "slave_load_tmpdir",
        "plugin_dir",
        "secure_file_priv",
        "general_log_file",
        "slow_query_log_file",
        "log_error",
        "pid_file",
        "socket",
        "character_sets_dir",
        "lc_messages_dir",
        "init_connect",
        "init_file",
        "init_slave",
        "init_replica",
        "ft_stopword_file",
        "aria_log_dir_path",
        "innodb_tmpdir",
        "innodb_undo_directory",
        "innodb_temp_data_file_path",
        "report_password",
        "hostname",
        "log_basename",
    }
)
PATH_VARIABLE_PREFIXES = (
    "ssl_",
    "wsrep_",
    "log_bin",
    "relay_log",
    "innodb_data_",
    "innodb_log_group",
    "server_audit_file",
)

# Leading keywords of MySQL statements that are not reads (added to the shared table).
STATEMENTS: dict[str, str] = {
    "SHOW": "SHOW statements reveal server state and other sessions; "
    "use list_tables and describe_table",
    "DESCRIBE": "use describe_table to see a table's columns",
    "DESC": "use describe_table to see a table's columns",
    "HANDLER": "HANDLER reads tables outside a transaction and holds them open",
    "XA": "XA transactions outlive the connection and hold locks",
    "FLUSH": SERVER,
    "PURGE": SERVER,
    "CHANGE": SERVER,
    "STOP": SERVER,
    "SHUTDOWN": SERVER,
    "RESTART": SERVER,
    "BINLOG": SERVER,
    "BACKUP": SERVER,
    "CLONE": SERVER,
    "UNINSTALL": EXTENSIONS,
    "RENAME": "it changes the schema or database objects",
    "OPTIMIZE": "it rebuilds tables (a write)",
    "REPAIR": "it rewrites tables (a write)",
    "CHECK": "it runs table maintenance",
    "CHECKSUM": "it runs table maintenance",
    "CACHE": SERVER,
    "HELP": "HELP is not a query",
    "SIGNAL": DYNAMIC,
    "RESIGNAL": DYNAMIC,
    "GET": DYNAMIC,
    "HANDLER READ": LOCKS,
    "LOAD DATA": FILES,
    "LOCK TABLES": LOCKS,
    "UNLOCK TABLES": LOCKS,
    "LOAD XML": FILES,
}

READ_STARTS = {"SELECT", "WITH", "VALUES", "TABLE", "(", "EXPLAIN"}
EXPLAIN_WORDS = frozenset({"EXTENDED", "PARTITIONS", "ANALYZE"})
EXPLAIN_FORMATS = frozenset({"TRADITIONAL", "JSON", "TREE"})

# --------------------------------------------------------------------------- lexical pass

# What the server sees as it reads the text: quoted runs, comments, and everything else.
_LEXEME = re.compile(
    r"""
      (?P<sq>'(?:[^'\\]|\\.|'')*(?:'|\Z))
    | (?P<dq>"(?:[^"\\]|\\.|"")*(?:"|\Z))
    | (?P<bq>`(?:[^`]|``)*(?:`|\Z))
    | (?P<block>/\*.*?(?:\*/|\Z))
    | (?P<line>(?:\#|--(?=[\x00-\x20\x7f]|\Z))[^\n]*)
    | (?P<space>[\x00-\x20\x7f]+)
    | (?P<code>(?:[^'"`/#\-\x00-\x20\x7f]|/(?!\*)|-(?!-(?:[\x00-\x20\x7f]|\Z)))+)
    """,
    re.VERBOSE | re.DOTALL,
)


def check_lexical(sql: str, dialect: str, tokens: list[Token]) -> None:
    """Refuse executable comments and hints, then hold sqlglot's tokens to the server's view."""
    code: list[tuple[int, int]] = []
    comments: list[tuple[int, int]] = []
    pos = 0
    for m in _LEXEME.finditer(sql):
        if m.start() != pos:  # every character must be read as something: fail closed
            raise UnsafeSQL(_DISAGREE)
        pos = m.end()
        kind = m.lastgroup
        text = m.group()
        if kind in ("sq", "dq", "bq"):
            if len(text) < 2 or not text.endswith(text[0]) or _unterminated(text):
                raise UnsafeSQL("the statement has an unterminated string or quoted identifier")
            code.append(m.span())
        elif kind == "block":
            _check_block_comment(text, dialect)
            comments.append(m.span())
        elif kind == "line":
            comments.append(m.span())
        elif kind == "code":
            code.append(m.span())
    if pos != len(sql):
        raise UnsafeSQL(_DISAGREE)
    if not tokens or tokens[0].token_type in MySQL.Tokenizer.COMMANDS:
        return  # refused by its leading keyword; sqlglot lexes its rest as one opaque string
    _check_coverage(sql, code, comments, tokens)
    if tokens[0].text.upper() in READ_STARTS:  # others are refused by their keyword
        _check_token_forms(tokens)


def _unterminated(text: str) -> bool:
    """True when the closing quote is really an escaped one (`'abc\\'` at the end of input)."""
    body = text[1:-1]
    quote = text[0]
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and quote != "`":
            i += 2
            continue
        if ch == quote:
            i += 2  # a doubled quote
            continue
        i += 1
    return i > len(body)


def _check_block_comment(text: str, dialect: str) -> None:
    if not text.endswith("*/") or len(text) < 4:
        raise UnsafeSQL("the statement has an unterminated /* comment")
    if text.startswith("/*!"):
        raise UnsafeSQL(
            "executable comments (/*! ... */) are not allowed: the server runs their content, "
            "which the safety check cannot see; write the SQL without them"
        )
    if text.startswith("/*M!") and dialect == "mariadb":
        raise UnsafeSQL(
            "MariaDB executable comments (/*M! ... */) are not allowed: MariaDB runs their "
            "content; write the SQL without them"
        )
    if text.startswith("/*+"):
        raise UnsafeSQL(
            "optimizer hints (/*+ ... */) are not allowed: they can change settings for the "
            "statement (SET_VAR, MAX_EXECUTION_TIME); remove the hint"
        )
    if "/*" in text[2:-2]:
        raise UnsafeSQL(
            "nested comments are not allowed: the server and the check read them differently"
        )


def _check_coverage(
    sql: str, code: list[tuple[int, int]], comments: list[tuple[int, int]], tokens: list[Token]
) -> None:
    """Every character the server reads as code is in a token, and no token reaches into a
    comment: otherwise sqlglot would check a different statement from the one that runs."""
    n = len(sql)
    covered = bytearray(n + 1)
    in_comment = bytearray(n + 1)
    for start, end in comments:
        in_comment[start:end] = b"\x01" * (end - start)
    for tok in tokens:
        start, end = tok.start, tok.end + 1
        if in_comment.find(1, start, end) != -1:
            raise UnsafeSQL(_DISAGREE)
        covered[start:end] = b"\x01" * (end - start)
    for start, end in code:
        if covered.find(0, start, end) != -1:
            raise UnsafeSQL(_DISAGREE)


_DISAGREE = (
    "the statement's comments or quoting can be read two ways (by the server and by the "
    "safety check); remove the comments and unusual quoting"
)


def _check_token_forms(tokens: list[Token]) -> None:
    """MySQL forms that are not reads, however the tree shows them."""
    for i, tok in enumerate(tokens):
        kind = tok.token_type
        word = tok.text.upper() if kind not in _QUOTED else ""
        if kind == TokenType.COLON_EQ:
            raise UnsafeSQL("assigning user variables (@x := ...) is not allowed: " + SETTINGS)
        if word == "INTO":
            target = tokens[i + 1].text.upper() if i + 1 < len(tokens) else ""
            if target in ("OUTFILE", "DUMPFILE"):
                raise UnsafeSQL(f"SELECT ... INTO {target} is not allowed: {WRITES_FILES}")
            raise UnsafeSQL(
                "SELECT ... INTO is not allowed: it writes variables or files; "
                "the rows come back to you as the result"
            )
        if word == "PROCEDURE":
            raise UnsafeSQL(f"PROCEDURE is not allowed: {PROCEDURE}")
        if word == "LOCK" and i > 0:
            raise UnsafeSQL(
                "locking clauses (LOCK IN SHARE MODE / FOR UPDATE) are not allowed: " + LOCKS
            )
        if kind == TokenType.SESSION_PARAMETER:
            _check_variable(tokens, i)
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if nxt is None or nxt.token_type != TokenType.DOT or kind in _QUOTED - _NAMES:
            continue
        name = tok.text.lower()
        if name in SCHEMAS and (i == 0 or tokens[i - 1].token_type != TokenType.DOT):
            raise UnsafeSQL(
                f"schema {name} is not allowed: {SCHEMAS[name]}; "
                "query the configured tables and views instead"
            )
        if name == "information_schema" and i + 2 < len(tokens):
            table = tokens[i + 2].text.lower()
            if table in TABLES:
                raise UnsafeSQL(
                    f"table information_schema.{table} is not allowed: {TABLES[table]}; "
                    "query the configured tables and views instead"
                )


_QUOTED = frozenset(
    {
        TokenType.STRING,
        TokenType.NATIONAL_STRING,
        TokenType.HEX_STRING,
        TokenType.BIT_STRING,
        TokenType.BYTE_STRING,
        TokenType.RAW_STRING,
        TokenType.IDENTIFIER,
    }
)
_NAMES = frozenset({TokenType.IDENTIFIER})


def _check_variable(tokens: list[Token], i: int) -> None:
    """`@@name`, `@@session.name`, `@@global.name`: refused when it holds a path or secret."""
    parts: list[str] = []
    j = i + 1
    while j < len(tokens):
        tok = tokens[j]
        if tok.token_type == TokenType.DOT and parts:
            j += 1
            continue
        if parts and tokens[j - 1].token_type != TokenType.DOT:
            break
        if not re.fullmatch(r"[A-Za-z0-9_$]+", tok.text):
            break
        parts.append(tok.text.lower())
        j += 1
    name = parts[-1] if parts else ""
    if not name:
        raise UnsafeSQL("a system variable must be named plainly, e.g. @@version")
    if name in PATH_VARIABLES or name.startswith(PATH_VARIABLE_PREFIXES):
        raise UnsafeSQL(
            f"system variable {name[:64]} is not allowed: it holds a server file path, a "
            "command, SQL or a secret; query the configured tables and views instead"
        )


def explain_target(tokens: list[Token]) -> int:
    """Index of the explained statement in `EXPLAIN [EXTENDED|PARTITIONS|ANALYZE]
    [FORMAT = JSON|TREE|TRADITIONAL] SELECT ...`; anything else there is refused."""
    i = 1
    while i < len(tokens):
        word = tokens[i].text.upper()
        if word in EXPLAIN_WORDS:
            i += 1
        elif word == "FORMAT":
            if (
                i + 2 < len(tokens)
                and tokens[i + 1].token_type == TokenType.EQ
                and tokens[i + 2].text.upper() in EXPLAIN_FORMATS
            ):
                i += 3
            else:
                raise UnsafeSQL("EXPLAIN FORMAT must be TRADITIONAL, JSON or TREE")
        else:
            break
    return i


__all__ = ["EXACT", "MYSQL_DIALECTS", "PREFIX", "SCHEMAS", "TABLES", "WRITES"]
