"""The MySQL/MariaDB safety rules at the check level, in both dialects (no server needed).

The same corpus runs against the real MariaDB server in tests/test_source_mysql.py; MySQL 8
cannot run on this machine, so its dialect is covered here only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlglot.tokens import Token, TokenType

from wellhead.errors import InvalidRequest, UnsafeSQL
from wellhead.sources._mysql import bind, grant_problems, parse_dsn, strip_secret
from wellhead.sql.safety import bind_named, check_read_only
from wellhead.sql.safety.mysql_rules import check_lexical

CORPUS = yaml.safe_load((Path(__file__).parent / "corpora" / "mysql.yaml").read_text())
DIALECTS = ("mariadb", "mysql")


def _legit() -> list[dict[str, Any]]:
    return [c if isinstance(c, dict) else {"sql": c} for c in CORPUS["legit"]]


def test_corpus_sizes() -> None:
    assert len(CORPUS["attacks"]) >= 60
    assert len(_legit()) >= 30
    sqls = [c["sql"] for c in CORPUS["attacks"]]
    assert len(sqls) == len(set(sqls)), "duplicate attack"


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("case", CORPUS["attacks"], ids=lambda c: c["sql"][:50])
def test_attack_is_refused_with_its_reason(dialect: str, case: dict[str, str]) -> None:
    with pytest.raises(UnsafeSQL) as info:
        check_read_only(case["sql"], dialect)
    assert case["reason"] in info.value.public_message


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("case", _legit(), ids=lambda c: c["sql"][:50])
def test_legit_query_is_accepted(dialect: str, case: dict[str, Any]) -> None:
    checked = check_read_only(case["sql"], dialect)
    assert checked.kind == case.get("kind", "select")


@pytest.mark.parametrize("case", CORPUS["dialects"], ids=lambda c: c["sql"][:50])
@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_check_follows_the_servers_dialect(dialect: str, case: dict[str, Any]) -> None:
    reason = case[dialect]
    if reason is None:
        assert check_read_only(case["sql"], dialect).kind == "select"
    else:
        with pytest.raises(UnsafeSQL, match=reason):
            check_read_only(case["sql"], dialect)


def test_double_dash_without_a_space_is_arithmetic_in_both_dialects() -> None:
    """`SELECT 1 --1` returns 2 on MySQL and MariaDB: the check must see `1 - -1`, not a
    comment (else `SELECT 1 --x, LOAD_FILE(...)` would hide a call from the check)."""
    for dialect in DIALECTS:
        checked = check_read_only("SELECT 1 --1", dialect)
        assert checked.tree.sql("mysql") == "SELECT 1 - -1"
        with pytest.raises(UnsafeSQL, match="load_file"):
            check_read_only("SELECT 1 --1, LOAD_FILE('/etc/passwd')", dialect)


def test_a_token_reaching_into_a_comment_is_refused() -> None:
    """If sqlglot ever lexed a comment differently from the server, the coverage check
    refuses the statement instead of checking a different one."""
    sql = "SELECT 1 /* c */ + 2"
    # Tokens as a tokenizer that ignored the comment boundary would give: '1 /* c */' as one.
    bad = [
        Token(TokenType.SELECT, "SELECT", start=0, end=5),
        Token(TokenType.NUMBER, "1 /* c */", start=7, end=15),
        Token(TokenType.PLUS, "+", start=17, end=17),
        Token(TokenType.NUMBER, "2", start=19, end=19),
    ]
    with pytest.raises(UnsafeSQL, match="read two ways"):
        check_lexical(sql, "mariadb", bad)
    missing = [bad[0], bad[2], bad[3]]  # code the server reads ('1') that no token covers
    with pytest.raises(UnsafeSQL, match="read two ways"):
        check_lexical(sql, "mariadb", missing)


def test_strings_with_backslashes_hide_nothing() -> None:
    """With the pinned sql_mode, `\\'` escapes a quote: the whole text is one string."""
    checked = check_read_only("SELECT 'a\\'; DELETE FROM notes; -- '", "mariadb")
    assert checked.kind == "select"
    with pytest.raises(UnsafeSQL, match="only one statement"):
        check_read_only("SELECT 'a\\\\'; DELETE FROM notes", "mariadb")


def test_named_parameters_become_question_marks() -> None:
    checked = check_read_only("SELECT * FROM t WHERE a = :a AND b LIKE 'x%' AND c = :a", "mariadb")
    sql, values = bind_named(checked, {"a": 1}, "qmark")
    assert sql == "SELECT * FROM t WHERE a = ? AND b LIKE 'x%' AND c = ?"
    assert values == [1, 1]


def test_bind_escapes_values_and_ignores_question_marks_in_strings() -> None:
    def literal(value: Any) -> str:
        return "NULL" if value is None else "'" + str(value).replace("'", "\\'") + "'"

    sql = bind(
        "SELECT '?', `a?` FROM t WHERE x = ? AND y LIKE '%?%' AND z = ?", ["it's", None], literal
    )
    assert sql == "SELECT '?', `a?` FROM t WHERE x = 'it\\'s' AND y LIKE '%?%' AND z = NULL"
    with pytest.raises(InvalidRequest, match="2 placeholder"):
        bind("SELECT ? + ?", [1], literal)
    with pytest.raises(InvalidRequest, match="single values"):
        bind("SELECT ?", [[1, 2]], literal)


def test_dsn_parsing_and_secrets() -> None:
    endpoint = parse_dsn("mysql://reader:p%40ss@db.internal:3307/shop?ssl=require", "s")
    assert (endpoint.host, endpoint.port, endpoint.user, endpoint.database) == (
        "db.internal",
        3307,
        "reader",
        "shop",
    )
    assert endpoint.password == "p@ss"
    assert "p@ss" not in repr(endpoint) and "p%40ss" not in repr(endpoint)
    assert endpoint.ssl is not None
    with pytest.raises(Exception, match="unknown dsn option"):
        parse_dsn("mysql://u:p@h/db?sslmode=require", "s")
    with pytest.raises(Exception, match="one database"):
        parse_dsn("mysql://u:p@h/", "s")
    with pytest.raises(Exception, match="mysql://"):
        parse_dsn("postgresql://u:p@h/db", "s")


def test_grant_parsing() -> None:
    lines = [
        "GRANT USAGE ON *.* TO `r`@`%` IDENTIFIED BY PASSWORD "
        "'*CE9ABE35A18BDE5F524628DDF116A9691F433F71'",
        "GRANT SELECT, SHOW VIEW ON `shop`.* TO `r`@`%`",
        "GRANT SELECT (a, b), INSERT (a) ON `shop`.`t` TO `r`@`%`",
        "GRANT PROCESS, FILE ON *.* TO `r`@`%`",
        "GRANT SELECT ON `other`.* TO `r`@`%` WITH GRANT OPTION",
        "GRANT `analyst` TO `r`@`%`",
        "GRANT PROXY ON ''@'%' TO 'r'@'%'",
        "GRANT EXECUTE ON PROCEDURE `shop`.`p` TO `r`@`%`",
    ]
    problems, roles = grant_problems(lines)
    described = [(p.privileges, p.target, p.grant_option) for p in problems]
    assert described == [
        (["INSERT (a)"], "`shop`.`t`", False),
        (["PROCESS", "FILE"], "*.*", False),
        ([], "`other`.*", True),
        (["PROXY"], "''@'%'", False),
        (["EXECUTE"], "PROCEDURE `shop`.`p`", False),
    ]
    assert roles == ["`analyst`"]
    assert "PASSWORD" not in strip_secret(lines[0]) and "*CE9" not in strip_secret(lines[0])
