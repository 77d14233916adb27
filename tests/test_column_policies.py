"""Column policies on DuckDB, SQLite and PostgreSQL: a corpus of attempts to read a denied or
masked column in other forms, none of which may return a clear value, and legitimate
queries over the other columns that must still answer exactly.

The same `pii_people` / `pii_visits` tables exist on every engine: built here in tmp_path
for DuckDB and SQLite, loaded from tests/pg_fixtures.sql for PostgreSQL (real server).
Scopes that lift a policy are tested over real HTTP with two static tokens.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from fastmcp import Client

from tests.helpers import client_for, service_env, walk
from tests.server_process import ServerProcess
from wellhead.config import parse_settings
from wellhead.errors import ConfigError
from wellhead.sql.policies import ColumnPolicies, mask_value

pytestmark = pytest.mark.anyio

DDL = """
CREATE TABLE pii_people (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT NOT NULL, ssn TEXT NOT NULL,
    email TEXT NOT NULL, phone TEXT, salary INTEGER NOT NULL
);
INSERT INTO pii_people VALUES
    (1, 'Ada', 'Paris', '123-45-6789', 'ada@example.com', '+33 6 11 22 33 44', 51000),
    (2, 'Bob', 'Lyon', '987-65-4321', 'bob@example.com', '+33 6 55 66 77 88', 62000),
    (3, 'Cyd', 'Paris', '555-12-0000', 'cyd@example.com', NULL, 73000);
CREATE TABLE pii_visits (person_id INTEGER NOT NULL, day DATE NOT NULL);
INSERT INTO pii_visits VALUES (1, '2024-01-01'), (1, '2024-01-02'), (2, '2024-01-03');
"""
POLICIES = {
    "pii_people": {
        "ssn": "deny",
        "email": "hash",
        "phone": {"policy": "partial", "keep": 4},
        "salary": "null",
        "name": {"policy": "redact", "unless_scopes": ["pii:read"]},
    }
}
# Pieces of the clear values that no masked result can contain ('-' and '@' never occur in a
# hex digest, upper-case letters neither; '+33' and the digit pairs only in the clear phone).
SECRETS = [
    "123-45",
    "45-67",
    "987-65",
    "65-43",
    "555-12",
    "12-00",
    "ada@",
    "bob@",
    "cyd@",
    "example.com",
    "Ada",
    "Bob",
    "Cyd",
    "+33",
    "11 22",
    "55 66",
    "51000",
    "62000",
    "73000",
]
ADA_HASH = hashlib.sha256(b"ada@example.com").hexdigest()


def _sqlite_db(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.executescript(DDL)
    con.close()
    return path


def _duckdb_db(path: Path) -> Path:
    con = duckdb.connect(str(path))
    con.execute(DDL)
    con.close()
    return path


def _settings(engine: str, tmp_path: Path, policies: Any = POLICIES, **extra: Any) -> Any:
    if engine == "duckdb":
        source = {"kind": "duckdb", "path": str(_duckdb_db(tmp_path / "people.duckdb"))}
    elif engine == "sqlite":
        source = {"kind": "sqlite", "path": str(_sqlite_db(tmp_path / "people.sqlite"))}
    else:
        dsn = service_env("WELLHEAD_TEST_PG_DSN", "PostgreSQL", ".ci/postgres.sh")
        source = {"kind": "postgres", "dsn": dsn, "schemas": ["public"]}
    return parse_settings(
        {
            "sources": {"people": source},
            "column_policies": {"people": policies},
            "cursor": {"secret": "test-secret-test-secret-0123456789"},
            **extra,
        }
    )


# --------------------------------------------------------------------------- the corpus
# (sql, expectation): "deny" = refused by the policy (policy_denied); "rows" = answers, with
# masked values only; "none" = answers with no row (a predicate on a masked column compares
# the mask); "refused" = any error (the engine or the safety check refuses it first).

COMMON: list[tuple[str, str]] = [
    ("SELECT ssn FROM pii_people", "deny"),
    ("SELECT * FROM pii_people", "deny"),
    ("SELECT p.* FROM pii_people p", "deny"),
    ("SELECT p.ssn AS x FROM pii_people AS p", "deny"),
    ("SELECT s FROM (SELECT ssn AS s FROM pii_people) t", "deny"),
    ("WITH c AS (SELECT * FROM pii_people) SELECT id FROM c", "deny"),
    ("WITH c AS (SELECT email AS e, name AS n FROM pii_people) SELECT e, n FROM c", "rows"),
    ("SELECT id, email, phone, name, salary FROM pii_people", "rows"),
    ("SELECT upper(email), lower(name), upper(name) FROM pii_people", "rows"),
    ("SELECT length(email), length(name), length(phone) FROM pii_people", "rows"),
    (
        "SELECT CAST(email AS TEXT), CAST(salary AS TEXT), CAST(name AS TEXT) FROM pii_people",
        "rows",
    ),
    ("SELECT substr(email, 1, 5), substr(phone, 1, 8), substr(name, 1, 1) FROM pii_people", "rows"),
    ("SELECT email || '|' || name || '|' || coalesce(phone, '') FROM pii_people", "rows"),
    ("SELECT email FROM pii_people UNION SELECT 'x'", "rows"),
    ("SELECT 'x' UNION ALL SELECT ssn FROM pii_people", "deny"),
    ("SELECT name FROM pii_visits JOIN pii_people ON id = person_id EXCEPT SELECT 'y'", "rows"),
    ("SELECT (SELECT max(ssn) FROM pii_people)", "deny"),
    ("SELECT max(email), min(name), max(phone), max(salary), sum(salary) FROM pii_people", "rows"),
    ("SELECT email, row_number() OVER (ORDER BY email) FROM pii_people", "rows"),
    (
        "SELECT first_value(name) OVER (PARTITION BY city ORDER BY id), "
        "lag(email) OVER (ORDER BY id), max(salary) OVER () FROM pii_people",
        "rows",
    ),
    ("SELECT id, rank() OVER (ORDER BY ssn) FROM pii_people", "deny"),
    ("SELECT id FROM pii_people WHERE ssn = '123-45-6789'", "deny"),
    ("SELECT id FROM pii_people ORDER BY ssn", "deny"),
    ("SELECT count(*) FROM pii_people GROUP BY ssn", "deny"),
    ("SELECT id FROM pii_people WHERE email = 'ada@example.com'", "none"),
    ("SELECT id FROM pii_people WHERE name LIKE 'A%'", "none"),
    ("SELECT id FROM pii_people WHERE substr(phone, 1, 3) = '+33'", "none"),
    ("SELECT id FROM pii_people WHERE salary > 60000", "none"),
    ("SELECT v.day FROM pii_visits v JOIN pii_people p ON p.ssn = '123-45-6789'", "deny"),
    (
        "SELECT p.email, p.name, v.day FROM pii_visits v JOIN pii_people p ON p.id = v.person_id",
        "rows",
    ),
    ("SELECT * FROM pii_visits v JOIN pii_people p ON p.id = v.person_id", "deny"),
    ("SELECT SsN FROM Pii_People", "deny"),
    ("SELECT e FROM (SELECT e FROM (SELECT email AS e FROM pii_people) a) b", "rows"),
    ("SELECT CASE WHEN ssn LIKE '1%' THEN 1 ELSE 0 END FROM pii_people", "deny"),
    ("SELECT coalesce(phone, email), nullif(name, 'x') FROM pii_people", "rows"),
    ("SELECT replace(email, '@', ' at '), replace(name, 'x', 'y') FROM pii_people", "rows"),
    (
        "SELECT person_id FROM pii_visits WHERE EXISTS "
        "(SELECT 1 FROM pii_people p WHERE p.ssn = '123-45-6789')",
        "deny",
    ),
    ("SELECT 1 WHERE '123-45-6789' IN (SELECT ssn FROM pii_people)", "deny"),
    (
        "WITH RECURSIVE r(n, e) AS (SELECT 1, (SELECT min(email) FROM pii_people) "
        "UNION ALL SELECT n + 1, e FROM r WHERE n < 3) SELECT n, e FROM r",
        "rows",
    ),
    ("SELECT p FROM pii_people p", "deny"),
    ("SELECT name, count(*) FROM pii_people GROUP BY name", "rows"),
    ("SELECT city, max(email) FROM pii_people GROUP BY city HAVING max(name) <> ''", "rows"),
    ("SELECT id, email FROM pii_people ORDER BY name, email", "rows"),
    (
        "SELECT id FROM pii_people p1 WHERE "
        "(SELECT count(*) FROM pii_people p2 WHERE p2.ssn < p1.ssn) = 0",
        "deny",
    ),
    ("SELECT ssn FROM pii_people INTERSECT SELECT '123-45-6789'", "deny"),
    ("SELECT a.id FROM pii_people a JOIN pii_people b ON a.ssn = b.ssn", "deny"),
    ("EXPLAIN SELECT ssn FROM pii_people", "deny"),
    ("EXPLAIN SELECT id FROM pii_people WHERE email = 'ada@example.com'", "deny"),
    ("SELECT DISTINCT name, email FROM pii_people", "rows"),
    ("SELECT id FROM (SELECT * FROM pii_people) AS everything", "deny"),
    ("SELECT (SELECT p.ssn) FROM pii_people p", "deny"),
    ("SELECT a.id FROM pii_people a JOIN pii_people b USING (ssn)", "deny"),
    ("SELECT p.email, v.day FROM (pii_people p JOIN pii_visits v ON p.id = v.person_id)", "rows"),
    ("SELECT p.ssn FROM (pii_people p JOIN pii_visits v ON p.id = v.person_id)", "deny"),
    ("SELECT a.id FROM pii_people a NATURAL JOIN pii_visits b", "deny"),
    ("SELECT a.id, a.name FROM pii_people a JOIN pii_people b USING (email)", "rows"),
    ("SELECT ssn FROM pii_visits, pii_people", "deny"),
    ("SELECT person_id FROM pii_visits, pii_people WHERE ssn > ''", "deny"),
    ("SELECT (SELECT max(v.day) FROM pii_visits v WHERE p.ssn > '') FROM pii_people p", "deny"),
    (
        "SELECT (SELECT max(p.email) FROM pii_people p WHERE p.id = v.person_id) FROM pii_visits v",
        "rows",
    ),
]

PER_ENGINE: dict[str, list[tuple[str, str]]] = {
    "duckdb": [
        ('SELECT "SSN" FROM "PII_PEOPLE"', "deny"),
        ("SELECT ssn FROM main.pii_people", "deny"),
        ("SELECT email, name FROM main.pii_people", "rows"),
        ("SELECT to_json(p) FROM pii_people p", "deny"),
        ("SELECT struct_pack(e := email, n := name, s := salary) FROM pii_people", "rows"),
        ("SELECT * EXCLUDE (ssn) FROM pii_people", "rows"),
        ("SELECT COLUMNS('.*') FROM pii_people", "rows"),
        ("SELECT COLUMNS('s.*') FROM pii_people", "rows"),
        ("FROM pii_people", "deny"),
        ("SUMMARIZE pii_people", "deny"),
        ("SELECT * FROM (SUMMARIZE pii_people)", "refused"),
        ("DESCRIBE pii_people", "deny"),
        ("SELECT * FROM pragma_storage_info('pii_people')", "deny"),
        ("SELECT list(email), string_agg(name, ','), list(phone) FROM pii_people", "rows"),
        ("SELECT email::VARCHAR, name::VARCHAR(2) FROM pii_people", "rows"),
        (
            "SELECT l.e, l.n FROM pii_visits v, LATERAL "
            "(SELECT email AS e, name AS n FROM pii_people p WHERE p.id = v.person_id) l",
            "rows",
        ),
        (
            "SELECT l.s FROM pii_visits v, LATERAL "
            "(SELECT ssn AS s FROM pii_people p WHERE p.id = v.person_id) l",
            "deny",
        ),
        ("SELECT unnest([ssn]) FROM pii_people", "deny"),
        ("SELECT * FROM query('SELECT ssn FROM pii_people')", "refused"),
        ("SELECT * FROM query_table('pii_people')", "refused"),
        ("SELECT * FROM read_csv('/etc/passwd')", "refused"),
        (
            "SELECT * FROM (PIVOT pii_people ON city IN ('Paris', 'Lyon') "
            "USING max(email) GROUP BY id)",
            "rows",
        ),
        ("SELECT p.id, p.name FROM pii_people p POSITIONAL JOIN pii_visits v", "rows"),
        ("SELECT {'n': name, 'e': email} FROM pii_people", "rows"),
    ],
    "sqlite": [
        ('SELECT "SSN" FROM "PII_PEOPLE"', "deny"),
        ("SELECT ssn FROM main.pii_people", "deny"),
        ("SELECT email, name FROM main.pii_people", "rows"),
        ("SELECT [ssn] FROM [pii_people]", "deny"),
        ("SELECT `ssn` FROM `pii_people`", "deny"),
        ("SELECT json_object('e', email, 'n', name, 'p', phone) FROM pii_people", "rows"),
        ("SELECT json_group_array(email), json_group_array(name) FROM pii_people", "rows"),
        ("SELECT json_object('s', ssn) FROM pii_people", "deny"),
        ("SELECT group_concat(name, ','), group_concat(email) FROM pii_people", "rows"),
        ("SELECT printf('%s %s', email, name), hex(name) FROM pii_people", "rows"),
        ("SELECT rowid, ssn FROM pii_people", "deny"),
        ("SELECT * FROM sqlite_stat4", "deny"),
        ("SELECT * FROM sqlite_stat1", "deny"),
        ("SELECT * FROM pragma_table_info('pii_people')", "rows"),
        ("SELECT sql FROM sqlite_master WHERE name = 'pii_people'", "rows"),
        ("SELECT instr(email, '@'), instr(name, 'A') FROM pii_people", "rows"),
        ("SELECT * FROM pii_people NATURAL JOIN pii_visits", "deny"),
    ],
    "postgres": [
        ('SELECT "SSN" FROM "PII_PEOPLE"', "refused"),
        ("SELECT ssn FROM public.pii_people", "deny"),
        ('SELECT "ssn" FROM "public"."pii_people"', "deny"),
        ("SELECT email, name FROM public.pii_people", "rows"),
        ("SELECT row_to_json(p) FROM pii_people p", "deny"),
        ("SELECT to_json(p), to_jsonb(p) - 'ssn' FROM pii_people p", "deny"),
        ("SELECT json_agg(p) FROM pii_people p", "deny"),
        ("SELECT p::text FROM pii_people p", "deny"),
        ("SELECT (p).email FROM pii_people p", "deny"),
        ("TABLE pii_people", "deny"),
        ("SELECT * FROM ONLY pii_people", "deny"),
        ("SELECT email, name FROM ONLY pii_people", "rows"),
        ("SELECT * FROM pg_stats WHERE tablename = 'pii_people'", "deny"),
        ("SELECT most_common_vals FROM pg_catalog.pg_stats", "deny"),
        ("SELECT query_to_xml('SELECT ssn FROM pii_people', true, false, '')", "refused"),
        ("SELECT json_build_object('e', email, 'n', name, 'p', phone) FROM pii_people", "rows"),
        ("SELECT string_agg(name, ',' ORDER BY email), array_agg(email) FROM pii_people", "rows"),
        ("SELECT email::varchar(5), name::varchar(2) FROM pii_people", "rows"),
        ("SELECT array_agg(ssn) FROM pii_people", "deny"),
        (
            "SELECT x.name FROM pii_visits v JOIN LATERAL "
            "(SELECT name FROM pii_people WHERE id = v.person_id) x ON true",
            "rows",
        ),
        (
            "SELECT x.s FROM pii_visits v JOIN LATERAL "
            "(SELECT ssn AS s FROM pii_people WHERE id = v.person_id) x ON true",
            "deny",
        ),
        ("SELECT ROW(email, name, phone) FROM pii_people", "rows"),
        ("SELECT ROW(ssn) FROM pii_people", "deny"),
        ("SELECT ssn, count(*) FROM pii_people GROUP BY GROUPING SETS ((ssn), ())", "deny"),
        ("SELECT DISTINCT ON (ssn) id FROM pii_people", "deny"),
        ("SELECT id FROM pii_people WHERE ssn ~ '^1'", "deny"),
        ("SELECT * FROM pii_people AS p(a, b, c, d)", "deny"),
    ],
}


def _leaks(text: str, sql: str, params: dict[str, Any]) -> list[str]:
    """Clear values found in a result, except those the attempt itself spelled out."""
    given = sql + json.dumps(params)
    return [s for s in SECRETS if s in text and s not in given]


async def _run_corpus(engine: str, tmp_path: Path) -> None:
    corpus = COMMON + PER_ENGINE[engine]
    assert len(corpus) >= 40
    failures: list[str] = []
    async with client_for(_settings(engine, tmp_path)) as client:
        for sql, expect in corpus:
            result = await client.call_tool("query", {"sql": sql}, raise_on_error=False)
            text = result.content[0].text + json.dumps(result.structured_content, default=str)
            leaked = _leaks(text, sql, {})
            if leaked:
                failures.append(f"LEAK {leaked}: {sql}")
                continue
            if expect == "deny":
                kind = json.loads(result.content[0].text).get("error") if result.is_error else None
                if kind != "policy_denied":
                    failures.append(f"not denied: {sql} -> {text[:200]}")
            elif expect == "refused":
                if not result.is_error:
                    failures.append(f"not refused: {sql} -> {text[:200]}")
            elif result.is_error:
                failures.append(f"error instead of {expect}: {sql} -> {text[:300]}")
            elif expect == "none" and result.structured_content["rows"]:
                failures.append(f"rows where none: {sql} -> {result.structured_content['rows']}")
            elif expect == "rows" and not result.structured_content["rows"]:
                failures.append(f"no rows: {sql}")
    assert not failures, "\n".join(failures)


async def test_corpus_duckdb(tmp_path: Path) -> None:
    await _run_corpus("duckdb", tmp_path)


async def test_corpus_sqlite(tmp_path: Path) -> None:
    await _run_corpus("sqlite", tmp_path)


async def test_corpus_postgres(tmp_path: Path) -> None:
    await _run_corpus("postgres", tmp_path)


# --------------------------------------------------------------------------- legit answers

LEGIT: list[tuple[str, list[list[Any]]]] = [
    ("SELECT id, city FROM pii_people ORDER BY id", [[1, "Paris"], [2, "Lyon"], [3, "Paris"]]),
    (
        "SELECT city, count(*) AS n FROM pii_people GROUP BY city ORDER BY city",
        [["Lyon", 1], ["Paris", 2]],
    ),
    (
        "SELECT p.id, count(*) AS n FROM pii_people p JOIN pii_visits v ON v.person_id = p.id "
        "GROUP BY p.id ORDER BY p.id",
        [[1, 2], [2, 1]],
    ),
    ("SELECT email FROM pii_people WHERE id = 1", [[ADA_HASH]]),
    ("SELECT phone FROM pii_people ORDER BY id", [["***3 44"], ["***7 88"], [None]]),
    ("SELECT DISTINCT name, salary FROM pii_people", [["[redacted]", None]]),
    ("SELECT count(*) FROM pii_people a JOIN pii_people b ON a.email = b.email", [[3]]),
    ("SELECT count(*) FROM pii_visits", [[3]]),
    ("SELECT c.id FROM pii_people AS c WHERE c.city = 'Lyon'", [[2]]),
]


@pytest.mark.parametrize("engine", ["duckdb", "sqlite", "postgres"])
async def test_legitimate_queries_answer_exactly(engine: str, tmp_path: Path) -> None:
    async with client_for(_settings(engine, tmp_path)) as client:
        for sql, rows in LEGIT:
            result = await client.call_tool("query", {"sql": sql}, raise_on_error=False)
            assert not result.is_error, (sql, result.content[0].text)
            assert result.structured_content["rows"] == rows, sql
        bound = await client.call_tool(
            "query",
            {"sql": "SELECT id FROM pii_people WHERE email = :e", "params": {"e": ADA_HASH}},
        )
        assert bound.structured_content["rows"] == [[1]]  # the pseudonym joins and filters
        clear = await client.call_tool(
            "query",
            {
                "sql": "SELECT id FROM pii_people WHERE email = :e",
                "params": {"e": "ada@example.com"},
            },
        )
        assert clear.structured_content["rows"] == []  # a guess at the clear value matches nothing
        rows, pages = await walk(client, "SELECT id, email, name FROM pii_people", max_rows=1)
        assert pages == 3 and sorted(r[0] for r in rows) == [1, 2, 3]
        assert not _leaks(json.dumps(rows), "", {})


@pytest.mark.parametrize("engine", ["duckdb", "sqlite", "postgres"])
async def test_describe_table_shows_each_policy_and_masks_samples(
    engine: str, tmp_path: Path
) -> None:
    async with client_for(_settings(engine, tmp_path)) as client:
        result = await client.call_tool("describe_table", {"table": "pii_people"})
        plain = await client.call_tool("describe_table", {"table": "pii_visits"})
    described = result.structured_content
    assert described["column_policies"] == {
        "ssn": "deny",
        "email": "hash",
        "phone": "partial (last 4)",
        "salary": "null",
        "name": "redact",
    }
    names = [c[0] for c in described["columns"]]
    assert "ssn" in names  # listed, so the agent knows it exists and is denied
    assert len(described["sample_rows"]) == 3
    assert not _leaks(json.dumps(described), "", {})
    ada = next(r for r in described["sample_rows"] if r[0] == 1)
    assert ada[names.index("email")] == ADA_HASH
    assert ada[names.index("ssn")] is None
    assert plain.structured_content["column_policies"] == {}


async def test_sql_tools_are_policed_too(tmp_path: Path) -> None:
    tools = {
        "people_in": {
            "description": "People of a city.",
            "sql": "SELECT name, email FROM pii_people WHERE city = :city",
            "parameters": {"city": {"type": "string"}},
        },
        "ssn_of": {
            "description": "Denied column.",
            "sql": "SELECT ssn FROM pii_people WHERE id = :id",
            "parameters": {"id": {"type": "integer"}},
        },
    }
    settings = _settings("sqlite", tmp_path, tools=tools)
    async with client_for(settings) as client:
        ok = await client.call_tool("people_in", {"city": "Paris"})
        denied = await client.call_tool("ssn_of", {"id": 1}, raise_on_error=False)
    assert ok.structured_content["rows"][0][0] == "[redacted]"
    assert not _leaks(json.dumps(ok.structured_content), "", {})
    assert denied.is_error and "pii_people.ssn is denied" in denied.content[0].text
    assert not _leaks(denied.content[0].text, "", {})


# --------------------------------------------------------------------------- scopes

PII_READER = "pii-reader-token-0123456789abcdef"
ANALYST = "analyst-token-0123456789abcdef-xy"


async def test_a_scope_lifts_a_policy_for_its_holder_only(tmp_path: Path) -> None:
    """Real HTTP, two tokens: the holder of `pii:read` sees names; the other caller, asking
    the same SQL right after (same compiled-statement cache), still sees them redacted."""
    config = tmp_path / "wellhead.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "sources": {
                    "people": {"kind": "sqlite", "path": str(_sqlite_db(tmp_path / "p.sqlite"))}
                },
                "column_policies": {"people": POLICIES},
                "auth": {
                    "kind": "static",
                    "tokens": {
                        PII_READER: {"client_id": "hr", "scopes": ["pii:read"]},
                        ANALYST: {"client_id": "analyst", "scopes": ["data"]},
                    },
                },
            }
        )
    )
    sql = "SELECT name, email FROM pii_people ORDER BY id"
    server = ServerProcess(config)
    try:
        async with Client(server.mcp_url, auth=PII_READER) as hr:
            lifted = await hr.call_tool("query", {"sql": sql})
            described = await hr.call_tool("describe_table", {"table": "pii_people"})
        async with Client(server.mcp_url, auth=ANALYST) as analyst:
            masked = await analyst.call_tool("query", {"sql": sql})
        async with Client(server.mcp_url, auth=PII_READER) as hr:
            again = await hr.call_tool("query", {"sql": sql})
    finally:
        server.stop()
    assert [r[0] for r in lifted.structured_content["rows"]] == ["Ada", "Bob", "Cyd"]
    assert lifted.structured_content["rows"][0][1] == ADA_HASH  # only `name` is lifted
    assert described.structured_content["column_policies"]["name"] == "redact (lifted)"
    assert [r[0] for r in masked.structured_content["rows"]] == ["[redacted]"] * 3
    assert not _leaks(json.dumps(masked.structured_content), "", {})
    assert again.structured_content["rows"] == lifted.structured_content["rows"]


# --------------------------------------------------------------------------- config


def test_config_refuses_bad_policies() -> None:
    base = {"sources": {"s": {"kind": "sqlite", "path": "/x.sqlite"}}}
    cases = {
        "unknown source": ({"nope": {"t": {"c": "deny"}}}, "unknown source(s) nope"),
        "unknown policy": ({"s": {"t": {"c": "scramble"}}}, "column_policies.s.t.c"),
        "keep without partial": ({"s": {"t": {"c": {"policy": "hash", "keep": 2}}}}, "keep"),
        "unknown key": ({"s": {"t": {"c": {"policy": "deny", "scope": "x"}}}}, "unknown key"),
    }
    for name, (policies, message) in cases.items():
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_settings({**base, "column_policies": policies})
        assert name


async def test_a_policy_on_a_missing_column_fails_closed(tmp_path: Path) -> None:
    policies = {"pii_people": {"ssn": "deny", "emial": "hash"}}
    async with client_for(_settings("sqlite", tmp_path, policies)) as client:
        result = await client.call_tool(
            "query", {"sql": "SELECT id FROM pii_visits"}, raise_on_error=False
        )
        other = await client.call_tool(
            "query", {"sql": "SELECT city FROM pii_people"}, raise_on_error=False
        )
    for outcome in (result, other):  # nothing runs on the source until the policy is fixed
        assert outcome.is_error
        assert "column_policies.people.pii_people.emial" in outcome.content[0].text


def test_masks_in_python_match_the_sql_masks() -> None:
    assert mask_value("hash", 4, "ada@example.com") == ADA_HASH
    assert mask_value("partial", 4, "+33 6 11 22 33 44") == "***3 44"
    assert mask_value("partial", 4, "abc") == "***"
    assert mask_value("redact", 4, "x") == "[redacted]"
    assert mask_value("null", 4, "x") is None and mask_value("hash", 4, None) is None


def test_no_policies_is_no_object() -> None:
    """A source without policies gets no policy object: the executor skips the layer."""
    policies = ColumnPolicies.from_config({"a": {"t": {}}}, {"a": "duckdb"})
    assert not policies and policies.get("a") is None


async def test_the_statement_cache_keys_on_lifted_policies(tmp_path: Path) -> None:
    """Executor level: the same SQL compiled for a caller holding the lifting scope and for
    one without is two cache entries, each with its own masking; a table without policies on
    the same source runs as written."""
    from wellhead.app import build_runtime
    from wellhead.sql.executor import PageRequest

    runtime = build_runtime(_settings("sqlite", tmp_path))
    source = runtime.sources["people"]
    await source.start()
    executor = runtime.executor
    try:
        sql = "SELECT name FROM pii_people ORDER BY id"

        async def names(scopes: frozenset[str]) -> list[Any]:
            request = PageRequest(tool="t", source="people", sql=sql, params={}, scopes=scopes)
            return [row[0] for row in (await executor.run(request)).rows]

        assert await names(frozenset({"pii:read", "other"})) == ["Ada", "Bob", "Cyd"]
        assert await names(frozenset()) == ["[redacted]"] * 3
        assert await names(frozenset({"other"})) == ["[redacted]"] * 3  # same key as no scope
        assert len(executor.statements) == 2
        plain = await executor.compile(source, "SELECT count(*) FROM pii_visits", {})
        assert plain.sql == "SELECT count(*) FROM pii_visits"  # not rewritten
        masked = await executor.compile(source, "SELECT city FROM pii_people", {})
        assert "[redacted]" in masked.sql and '"ssn"' in masked.sql  # NULL AS "ssn"
    finally:
        await source.close()


async def test_a_policy_on_a_data_lake_view(tmp_path: Path) -> None:
    """DuckDB views over allow-listed files are policed by their view name like tables."""
    csv = tmp_path / "people.csv"
    csv.write_text(
        "id,name,city,ssn,email,phone,salary\n"
        "1,Ada,Paris,123-45-6789,ada@example.com,+33 6 11 22 33 44,51000\n"
        "2,Bob,Lyon,987-65-4321,bob@example.com,+33 6 55 66 77 88,62000\n"
    )
    settings = parse_settings(
        {
            "sources": {"lake": {"kind": "duckdb", "views": {"pii_people": str(csv)}}},
            "column_policies": {"lake": POLICIES},
        }
    )
    async with client_for(settings) as client:
        masked = await client.call_tool(
            "query", {"sql": "SELECT id, name, email, phone, salary FROM pii_people ORDER BY id"}
        )
        denied = await client.call_tool(
            "query", {"sql": "SELECT * FROM pii_people"}, raise_on_error=False
        )
        legit = await client.call_tool(
            "query", {"sql": "SELECT city, count(*) FROM pii_people GROUP BY city ORDER BY city"}
        )
    assert masked.structured_content["rows"][0] == [1, "[redacted]", ADA_HASH, "***3 44", None]
    assert not _leaks(json.dumps(masked.structured_content), "", {})
    assert denied.is_error and "pii_people.ssn is denied" in denied.content[0].text
    assert legit.structured_content["rows"] == [["Lyon", 1], ["Paris", 1]]
