"""Identity-bound SQL tool parameters and governance config, in memory on the demo DuckDB.

The principal is set the way the request layer sets it (`acting_as`), so the logic is checked
without HTTP; tests/test_governance_roles.py checks the same over real HTTP with real tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from pydantic import ValidationError

from wellhead.app import build_server
from wellhead.config import Settings, StaticToken
from wellhead.governance.principal import Principal, acting_as
from wellhead.tools.sql_tool_config import ParamConfig

pytestmark = pytest.mark.anyio

TOOL = {
    "description": "Orders of the caller's customer.",
    "sql": "SELECT order_id, customer_id FROM orders WHERE customer_id = :customer "
    "ORDER BY order_id",
    "max_rows": 2,
    "parameters": {"customer": {"type": "integer", "identity": "claims.org.customer"}},
}


def settings(demo_db: Path) -> Settings:
    return Settings.model_validate(
        {
            "sources": {"demo": {"kind": "duckdb", "path": str(demo_db)}},
            "tools": {"my_orders": TOOL},
        }
    )


def payload(result: Any) -> dict[str, Any]:
    assert result.is_error, result.structured_content
    return json.loads(result.content[0].text)  # type: ignore[no-any-return]


async def call_as(server: Any, who: Principal | None, arguments: dict[str, Any]) -> Any:
    with acting_as(who):
        async with Client(server) as client:
            return await client.call_tool("my_orders", arguments, raise_on_error=False)


async def test_the_parameter_comes_from_the_caller_and_cursors_stay_with_its_value(
    demo_db: Path,
):
    server = build_server(settings(demo_db))
    one = Principal(client_id="x", claims={"org": {"customer": 17}})
    other = Principal(client_id="x", claims={"org": {"customer": 18}})
    async with Client(server) as client:
        tools = {t.name: t for t in await client.list_tools()}
    assert "customer" not in tools["my_orders"].input_schema["properties"]

    first = await call_as(server, one, {})
    page = first.structured_content
    assert page["rows"] and {row[1] for row in page["rows"]} == {17}
    cursor = page["next_cursor"]
    assert cursor
    # Same client id, another claim value (a refreshed token for another customer): refused.
    assert payload(await call_as(server, other, {"cursor": cursor}))["error"] == "invalid_cursor"
    assert not (await call_as(server, one, {"cursor": cursor})).is_error

    passed = payload(await call_as(server, one, {"customer": 18}))
    assert passed["error"] == "invalid_request"
    assert "bound from the caller's identity (claims.org.customer)" in passed["message"]
    with_cursor = payload(await call_as(server, one, {"cursor": cursor, "customer": 17}))
    assert with_cursor["error"] == "invalid_request"

    missing = payload(await call_as(server, None, {}))
    assert missing["error"] == "access_denied" and "claims.org.customer" in missing["message"]
    wrong_type = Principal(client_id="x", claims={"org": {"customer": "seventeen"}})
    unfit = payload(await call_as(server, wrong_type, {}))
    assert unfit["error"] == "access_denied" and "does not fit" in unfit["message"]


def test_identity_specs_and_token_claims_are_checked():
    for bad in ("claims.", "token", "claims.a b", "CLIENT_ID"):
        with pytest.raises(ValidationError, match="identity"):
            ParamConfig.model_validate({"type": "string", "identity": bad})
    with pytest.raises(ValidationError, match="takes no default"):
        ParamConfig.model_validate({"type": "string", "identity": "subject", "default": "x"})
    assert ParamConfig.model_validate({"type": "string", "identity": "claims.tenant_id"})
    with pytest.raises(ValidationError, match="must not set client_id"):
        StaticToken.model_validate({"client_id": "a", "claims": {"client_id": "b"}})


def test_cursor_owners_tell_apart_users_of_one_oauth_client():
    """One OAuth client acting for two users (JWT `sub`): their cursors are not shared."""
    from fastmcp.server.auth import AccessToken
    from mcp.server.auth.middleware.auth_context import auth_context_var
    from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser

    from wellhead.identity import caller_owner

    def owner(subject: str | None) -> str | None:
        token = AccessToken(token="t", client_id="agents-app", scopes=[], subject=subject)
        reset = auth_context_var.set(AuthenticatedUser(token))
        try:
            return caller_owner()
        finally:
            auth_context_var.reset(reset)

    alice, bob = owner("alice@example.test"), owner("bob@example.test")
    assert alice and bob and alice != bob
    assert owner("alice@example.test") == alice
    assert owner(None) not in (alice, bob, None)
