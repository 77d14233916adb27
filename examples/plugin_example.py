"""An example wellhead plugin: a team's own tools, with every guardrail inherited.

Load it with `wellhead serve --plugin examples.plugin_example` (from the repository root), or
list it under `plugins:` in the config. README shows this file; tests/test_plugins.py runs it.
"""

from __future__ import annotations

from fastmcp import Context, FastMCP
from fastmcp.exceptions import ToolError
from pydantic import BaseModel


class Shipping(BaseModel):
    country: str
    days: int


def register(mcp: FastMCP, runtime) -> None:  # type: ignore[no-untyped-def]
    """wellhead calls this with its server and runtime (sources, executor) at start-up."""

    @mcp.tool(annotations={"readOnlyHint": True})
    async def shipping_estimate(country: str) -> Shipping:
        """Delivery time in days for a country code such as 'DE'."""
        days = {"DE": 2, "FR": 3, "US": 7}.get(country.upper())
        if days is None:
            raise ToolError(f"no shipping estimate for {country!r}; try DE, FR or US")
        return Shipping(country=country.upper(), days=days)

    @mcp.tool(annotations={"readOnlyHint": True})
    async def orders_for_customer(customer_id: int, ctx: Context) -> dict:
        """Order count and revenue of one customer, through wellhead's safe query path."""
        from wellhead.sql.executor import PageRequest

        page = await runtime.executor.run(
            PageRequest(
                tool="orders_for_customer",
                source=runtime.settings.primary_source,
                sql="SELECT count(*) AS orders, sum(total) AS revenue "
                "FROM orders WHERE customer_id = :id",
                params={"id": customer_id},
            )
        )
        orders, revenue = page.rows[0]
        return {"customer_id": customer_id, "orders": orders, "revenue": revenue}
