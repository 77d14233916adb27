"""Identity to PostgreSQL role: each caller's statements run as its own role, RLS applies.

Against the real server (`tests/pg_fixtures.sql`, governance section): the login role
`wellhead_gov` holds only membership (NOINHERIT) in `wh_tenant_a` / `wh_tenant_b`, and
`gov.tickets` has a row-level security policy per tenant role and a column grant that leaves
`internal_note` to tenant a. The last test drives a `wellhead serve` subprocess over real
HTTP with static tokens whose claims pick the role and bind a SQL tool parameter.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastmcp import Client

from tests.helpers import service_env
from tests.server_process import ServerProcess
from wellhead.errors import AccessDenied, ConfigError, QueryFailed, QueryTimeout
from wellhead.governance.principal import Principal, acting_as
from wellhead.governance.roles import RolesConfig
from wellhead.sources.postgres import PostgresSource

pytestmark = pytest.mark.anyio

ALICE = Principal(client_id="alice", claims={"groups": ["support", "tenant-a"]})
BOB = Principal(client_id="bob")
CAROL = Principal(client_id="carol", claims={"groups": ["marketing"]})
RULES = {
    "rules": [
        {"claim": "groups", "value": "tenant-a", "role": "wh_tenant_a"},
        {"client_id": "bob", "role": "wh_tenant_b"},
    ]
}
TICKETS = "SELECT id, tenant, title FROM gov.tickets ORDER BY id"


def gov_dsn() -> str:
    """The governance login role: the reader's DSN with the user swapped (same test password)."""
    reader = service_env("WELLHEAD_TEST_PG_DSN", "PostgreSQL", ".ci/postgres.sh")
    return reader.replace("//wellhead_ro:", "//wellhead_gov:", 1)


def source(roles: dict[str, Any] | None = None, **kwargs: Any) -> PostgresSource:
    config = RolesConfig.model_validate(roles if roles is not None else RULES)
    return PostgresSource(
        "gov",
        dsn=gov_dsn(),
        schemas=["gov", "public"],
        roles=config,
        temp_file_limit=None,
        **kwargs,
    )


async def rows_as(src: PostgresSource, who: Principal | None, sql: str = TICKETS) -> list[Any]:
    with acting_as(who):
        batch = await src.fetch(sql, [], max_rows=100, timeout=10)
    return [list(r) for r in batch.rows]


async def test_two_principals_see_their_own_rows_and_columns_and_a_third_is_refused():
    src = source()
    await src.start()
    try:
        assert await rows_as(src, ALICE) == [[1, "a", "printer jam"], [2, "a", "vpn down"]]
        assert await rows_as(src, BOB) == [[3, "b", "invoice wrong"]]
        who = "SELECT current_user::text, session_user::text"
        assert await rows_as(src, ALICE, who) == [["wh_tenant_a", "wellhead_gov"]]
        assert await rows_as(src, BOB, who) == [["wh_tenant_b", "wellhead_gov"]]
        # Column grants apply per caller too: only tenant a may read internal_note.
        notes = "SELECT id, internal_note FROM gov.tickets ORDER BY id"
        assert await rows_as(src, ALICE, notes) == [[1, "vip"], [2, None]]
        with pytest.raises(QueryFailed, match="permission denied"):
            await rows_as(src, BOB, notes)
        for stranger in (CAROL, None):
            with pytest.raises(AccessDenied, match="no rule under sources.gov.roles") as info:
                await rows_as(src, stranger)
            assert "GRANT" not in info.value.public_message
        # Catalog reads run as the caller's role as well.
        with acting_as(ALICE):
            names = {t.name for t in await src.list_tables()}
        assert {"gov.tickets", "public.orders"} <= names
        with acting_as(CAROL), pytest.raises(AccessDenied):
            await src.list_tables()
        # A column grant: tenant b lists and describes the table, minus the column it may not
        # read, and its sample rows are its own (RLS) and leave that column out.
        with acting_as(BOB):
            assert "gov.tickets" in {t.name for t in await src.list_tables()}
            described = await src.describe_table("gov.tickets", sample_rows=3)
        assert [c.name for c in described.columns] == ["id", "tenant", "title"]
        assert described.sample_rows == [[3, "b", "invoice wrong"]]
        with acting_as(ALICE):
            described = await src.describe_table("gov.tickets", sample_rows=3)
        assert [c.name for c in described.columns] == ["id", "tenant", "title", "internal_note"]
        assert [row[0] for row in described.sample_rows] == [1, 2]
    finally:
        await src.close()


async def test_a_default_role_serves_callers_no_rule_matches():
    src = source({**RULES, "default": "wh_tenant_b"})
    await src.start()
    try:
        assert await rows_as(src, CAROL) == [[3, "b", "invoice wrong"]]
        assert await rows_as(src, None) == [[3, "b", "invoice wrong"]]
        assert [r[0] for r in await rows_as(src, ALICE)] == [1, 2]
    finally:
        await src.close()


async def test_the_reset_before_reuse_leaves_no_role_behind():
    src = source(pool_min=1, pool_max=1)
    await src.start()
    probe = (
        "SELECT current_user::text, session_user::text, current_setting('role'), "
        "current_setting('transaction_read_only')"
    )
    try:
        await rows_as(src, ALICE)
        with acting_as(ALICE), pytest.raises(QueryTimeout):
            await src.fetch("SELECT pg_sleep(5)", [], max_rows=1, timeout=0.3)
        await asyncio.sleep(0.05)  # the settle task hands the connection back
        pool = src._pool
        assert pool is not None
        async with pool.acquire() as conn:  # the one pooled connection, as the next caller gets it
            state = await conn.fetchrow(probe)
            pid = conn.get_server_pid()
        assert tuple(state) == ("wellhead_gov", "wellhead_gov", "none", "on")
        await rows_as(src, BOB)
        async with pool.acquire() as conn:
            assert conn.get_server_pid() == pid  # the same backend, used by bob in between
            assert tuple(await conn.fetchrow(probe)) == (
                "wellhead_gov",
                "wellhead_gov",
                "none",
                "on",
            )
    finally:
        await src.close()


@pytest.mark.parametrize(
    ("role", "message"),
    [
        ("wh_gov_writer", 'role "wh_gov_writer": postgres source'),
        ("wh_gov_column_writer", "it can INSERT/UPDATE/DELETE/TRUNCATE gov.tickets"),
        ("wh_gov_stranger", 'run GRANT "wh_gov_stranger" TO wellhead_gov'),
        ("wh_gov_missing", 'mapped role "wh_gov_missing" does not exist'),
    ],
)
async def test_start_checks_every_mapped_role(role: str, message: str):
    src = source({"rules": [{"client_id": "x", "role": role}], "default": "wh_tenant_a"})
    with pytest.raises(ConfigError) as info:
        await src.start()
    assert message in info.value.public_message
    if role == "wh_gov_writer":
        assert "it can INSERT/UPDATE/DELETE/TRUNCATE gov.tickets" in info.value.public_message
    assert "wellhead_ro_pw" not in info.value.public_message


def test_role_names_are_checked_identifiers():
    for bad in ('wh"; DROP TABLE x; --', "1role", "a b", "x" * 64):
        with pytest.raises(ValueError, match="plain PostgreSQL identifier"):
            RolesConfig.model_validate({"rules": [{"client_id": "c", "role": bad}]})
    with pytest.raises(ValueError, match="exactly one of"):
        RolesConfig.model_validate({"rules": [{"client_id": "c", "subject": "s", "role": "r"}]})
    with pytest.raises(ValueError, match="needs `value`"):
        RolesConfig.model_validate({"rules": [{"claim": "groups", "role": "r"}]})
    with pytest.raises(ValueError, match="at least one rule or a default"):
        RolesConfig.model_validate({})


TOKENS = {
    "alice": "alice-token-0123456789abcdef",
    "bob": "bob-token-0123456789abcdef-xy",
    "carol": "carol-token-0123456789abcdef",
}


def http_config(tmp_path: Path) -> Path:
    config = {
        "sources": {
            "gov": {
                "kind": "postgres",
                "dsn": gov_dsn(),
                "schemas": ["gov", "public"],
                "temp_file_limit": None,
                "roles": RULES,
            }
        },
        "cursor": {"secret": "a-test-cursor-secret-0123456789"},
        "auth": {
            "kind": "static",
            "tokens": [
                {
                    "token": TOKENS["alice"],
                    "client_id": "alice",
                    "claims": {"groups": ["support", "tenant-a"], "customer_id": 7},
                },
                {"token": TOKENS["bob"], "client_id": "bob", "claims": {"customer_id": 8}},
                {"token": TOKENS["carol"], "client_id": "carol", "claims": {"customer_id": 9}},
            ],
        },
        "tools": {
            "tickets": {
                "description": "The caller's tickets.",
                "sql": TICKETS,
            },
            "my_orders": {
                "description": "The caller's own orders, newest id first.",
                "sql": "SELECT id, customer_id FROM public.orders "
                "WHERE customer_id = :customer ORDER BY id",
                "max_rows": 3,
                "parameters": {
                    "customer": {"type": "integer", "identity": "claims.customer_id"},
                },
            },
        },
    }
    path = tmp_path / "wellhead.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def error(result: Any) -> dict[str, Any]:
    assert result.is_error, result.structured_content
    return json.loads(result.content[0].text)


async def test_over_http_tokens_map_to_roles_and_claims_bind_parameters(tmp_path: Path):
    server = ServerProcess(http_config(tmp_path))
    try:
        seen: dict[str, Any] = {}
        for name in ("alice", "bob", "carol"):
            async with Client(server.mcp_url, auth=TOKENS[name]) as client:
                tools = {t.name: t for t in await client.list_tools()}
                seen[name] = {
                    "query": await client.call_tool(
                        "query", {"sql": TICKETS}, raise_on_error=False
                    ),
                    "tool": await client.call_tool("tickets", {}, raise_on_error=False),
                    "orders": await client.call_tool("my_orders", {}, raise_on_error=False),
                    "override": await client.call_tool(
                        "my_orders", {"customer": 8}, raise_on_error=False
                    ),
                }
                seen[name]["schema"] = tools["my_orders"].input_schema
        alice_cursor = seen["alice"]["orders"].structured_content["next_cursor"]
        async with Client(server.mcp_url, auth=TOKENS["bob"]) as bob:
            replay = await bob.call_tool(
                "my_orders", {"cursor": alice_cursor}, raise_on_error=False
            )
        async with Client(server.mcp_url, auth=TOKENS["alice"]) as alice:
            second = await alice.call_tool("my_orders", {"cursor": alice_cursor})
    finally:
        server.stop()

    for via in ("query", "tool"):
        assert seen["alice"][via].structured_content["rows"] == [
            [1, "a", "printer jam"],
            [2, "a", "vpn down"],
        ]
        assert seen["bob"][via].structured_content["rows"] == [[3, "b", "invoice wrong"]]
        refused = error(seen["carol"][via])
        assert refused["error"] == "access_denied" and "client_id 'carol'" in refused["message"]

    # The identity-bound parameter: hidden from the schema, never overridable, the caller's own.
    assert "customer" not in seen["alice"]["schema"]["properties"]
    alice_orders = seen["alice"]["orders"].structured_content
    assert {row[1] for row in alice_orders["rows"]} == {7} and alice_orders["next_cursor"]
    assert {row[1] for row in seen["bob"]["orders"].structured_content["rows"]} == {8}
    assert error(seen["carol"]["orders"])["error"] == "access_denied"  # no role for carol
    override = error(seen["alice"]["override"])
    assert (
        override["error"] == "invalid_request"
        and "bound from the caller's identity" in (override["message"])
    )
    # A cursor of alice's replayed by bob is refused; alice herself continues it.
    assert error(replay)["error"] == "invalid_cursor"
    page = second.structured_content
    assert page["offset"] == 3 and {row[1] for row in page["rows"]} == {7}
    everything = server.log_text()
    assert all(token not in everything for token in TOKENS.values())


async def test_a_jwt_subject_and_group_claim_pick_the_role():
    """A real JWT, verified by FastMCP's JWTVerifier, read by the request layer."""
    from fastmcp.server.auth.providers.jwt import JWTVerifier, RSAKeyPair

    from wellhead.governance.request import principal_of

    keys = RSAKeyPair.generate()
    verifier = JWTVerifier(public_key=keys.public_key, issuer="https://idp.test", audience="wh")

    async def principal(subject: str, groups: list[str]) -> Principal:
        jwt = keys.create_token(
            subject=subject,
            issuer="https://idp.test",
            audience="wh",
            additional_claims={"client_id": "agents-app", "groups": groups},
        )
        token = await verifier.verify_token(jwt)
        assert token is not None
        return principal_of(token)

    src = source(
        {
            "rules": [
                {"subject": "bob@example.test", "role": "wh_tenant_b"},
                {"claim": "groups", "value": "tenant-a", "role": "wh_tenant_a"},
            ]
        }
    )
    await src.start()
    try:
        alice = await principal("alice@example.test", ["tenant-a"])
        bob = await principal("bob@example.test", ["tenant-a"])  # the subject rule comes first
        nobody = await principal("eve@example.test", ["tenant-z"])
        assert (alice.client_id, alice.subject) == ("agents-app", "alice@example.test")
        assert [r[0] for r in await rows_as(src, alice)] == [1, 2]
        assert [r[0] for r in await rows_as(src, bob)] == [3]
        with pytest.raises(AccessDenied, match="client_id 'agents-app'"):
            await rows_as(src, nobody)
    finally:
        await src.close()


async def test_a_login_role_that_inherits_is_warned_about(caplog: pytest.LogCaptureFixture):
    reader = service_env("WELLHEAD_TEST_PG_DSN", "PostgreSQL", ".ci/postgres.sh")
    roles = RolesConfig.model_validate({"default": "wh_tenant_a"})
    src = PostgresSource("inherits", dsn=reader, roles=roles, temp_file_limit=None)
    with caplog.at_level("WARNING", logger="wellhead.sources.postgres"):
        with pytest.raises(ConfigError, match='run GRANT "wh_tenant_a" TO wellhead_ro'):
            await src.start()
    assert "login role wellhead_ro has INHERIT" in caplog.text
    assert "ALTER ROLE wellhead_ro NOINHERIT" in caplog.text
