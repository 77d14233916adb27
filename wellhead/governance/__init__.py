"""Governance: whose permissions a call runs with, and what a caller may bind or spend.

`principal` (who is calling, as plain data in a context variable) and `roles` (mapping a
principal to a PostgreSQL role) sit below the sources, which read them; `request` sits above
the tools and fills the principal from the authenticated request.
"""
