"""Exact, stateless pagination of any read query.

A page is the user's statement with a deterministic total order and a LIMIT/OFFSET window
applied to its top level. The order is the user's ORDER BY (if any) followed by every
output column as a tie-breaker, so rows that compare equal are identical and the walk over
all pages returns exactly the full result, in order, none lost and none repeated: also for
queries without ORDER BY. The engine sorts; Python only ever holds one page.

The cursor carries everything needed to fetch the next page (statement, parameters, offset,
the total if it was counted, the column types the order needs, and the caller it belongs
to), signed with HMAC so it cannot be forged or altered, and is independent of any process
state: any replica sharing the secret can continue it.

Pages are rendered from a `PageTemplate`: the ordered statement generated once with two
sentinel numbers for its window, so each page of a walk is a string substitution, not a
sqlglot tree copy and generation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import zlib
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from wellhead.errors import CursorError

_CURSOR_VERSION = 2
# Window numbers no statement contains by accident; a template is only used when each
# occurs exactly once in the generated SQL.
_LIMIT_SENTINEL = 987_654_321_987_654
_OFFSET_SENTINEL = 876_543_219_876_543
_MAC_BYTES = 16
_PAGED = (exp.Select, exp.SetOperation)
# PostgreSQL cannot order these types; they are left out of the tie-breaker.
_UNORDERABLE_PG_TYPES = (
    "json",
    "xml",
    "point",
    "line",
    "lseg",
    "box",
    "path",
    "polygon",
    "circle",
    "void",
    "xid",
    "cid",
    "aclitem",
)


@dataclass(frozen=True)
class CursorState:
    tool: str
    source: str
    sql: str
    params: dict[str, Any]
    offset: int
    total: int | None
    owner: str | None = None
    """Who made the cursor (a digest of principal and session); nobody else may use it."""
    column_types: list[str] | None = None
    """The result's column types: the total order of later pages needs them."""
    snapshot: str | None = None
    """The result snapshot later pages are read from (`wellhead.spill`), when one was taken."""


class CursorCodec:
    """Signs and verifies cursors with one HMAC key."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("cursor secret must be at least 16 bytes")
        self._secret = secret

    def encode(self, state: CursorState) -> str:
        body = json.dumps(
            [
                _CURSOR_VERSION,
                state.tool,
                state.source,
                state.sql,
                state.params,
                state.offset,
                state.total,
                state.owner,
                state.column_types,
                *([state.snapshot] if state.snapshot is not None else []),
            ],
            separators=(",", ":"),
            default=str,
        ).encode()
        payload = zlib.compress(body, 6)
        mac = hmac.new(self._secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]
        return base64.urlsafe_b64encode(payload + mac).decode().rstrip("=")

    def decode(self, token: str) -> CursorState:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            raise CursorError("cursor is not valid: pass next_cursor exactly as returned") from None
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        expected = hmac.new(self._secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]
        if len(raw) <= _MAC_BYTES or not hmac.compare_digest(mac, expected):
            raise CursorError(
                "cursor signature does not match: it was altered, or issued by a server with "
                "another cursor secret; run the query again without a cursor"
            )
        try:
            fields = json.loads(zlib.decompress(payload))
        except (ValueError, zlib.error):
            raise CursorError("cursor is not valid: run the query again without a cursor") from None
        if not isinstance(fields, list) or not fields or fields[0] != _CURSOR_VERSION:
            raise CursorError("cursor comes from another wellhead version; run the query again")
        if len(fields) not in (9, 10):
            raise CursorError("cursor is not valid: run the query again without a cursor")
        _, tool, source, sql, params, offset, total, owner, column_types = fields[:9]
        snapshot = fields[9] if len(fields) == 10 else None
        return CursorState(
            tool, source, sql, params, int(offset), total, owner, column_types, snapshot
        )


def paged_tree(
    tree: exp.Expression,
    *,
    column_count: int,
    offset: int,
    limit: int,
    dialect: str,
    column_types: list[str] | None = None,
) -> exp.Expression:
    """The statement restricted to rows [offset, offset + limit) of its total order.

    With literal (or no) LIMIT/OFFSET the page window is composed into the statement's own
    window exactly. A parameterised window (`LIMIT :n`) cannot be composed before binding,
    so the totally ordered statement becomes a subquery that the page window slices; the
    engines keep a subquery's order under a bare LIMIT/OFFSET.
    """
    tie_breakers = _tie_breaker_ordinals(column_count, dialect, column_types)
    node = tree.copy()
    if not isinstance(node, _PAGED):
        node = exp.select("*").from_(exp.Subquery(this=node, alias=exp.TableAlias(this="_wh_q")))
    node = _totally_ordered(node, tie_breakers)
    if not _literal_window(node):
        window = exp.select("*").from_(exp.Subquery(this=node, alias=exp.TableAlias(this="_wh_q")))
        return _with_window(window, offset, limit)
    return _with_window(node, offset, limit)


class PageTemplate:
    """A page query with its window left open: `render(offset, limit)` fills it in.

    Built once per statement and column types (the executor caches it), so walking pages
    costs string work only. The window composition is the same as `paged_tree`'s.
    """

    def __init__(
        self,
        tree: exp.Expression,
        *,
        dialect: str,
        column_count: int | None,
        column_types: list[str] | None = None,
    ) -> None:
        node = tree.copy()
        if not isinstance(node, _PAGED):
            node = _as_subquery(node)
        if column_count is not None:  # None: the statement's own order, for a first look
            node = _totally_ordered(
                node, _tie_breaker_ordinals(column_count, dialect, column_types)
            )
        if not _literal_window(node):
            node = _as_subquery(node)
        self._user_limit = _literal_int(node.args.get("limit"))
        self._user_offset = _literal_int(node.args.get("offset")) or 0
        self._dialect = dialect
        self._node = node
        limit, offset = node.args.get("limit"), node.args.get("offset")
        node.set("limit", exp.Limit(expression=exp.Literal.number(_LIMIT_SENTINEL)))
        node.set("offset", exp.Offset(expression=exp.Literal.number(_OFFSET_SENTINEL)))
        text = node.sql(dialect=dialect)
        node.set("limit", limit)  # put the statement's own window back (no second deep copy)
        node.set("offset", offset)
        self._text: str | None = None
        if text.count(str(_LIMIT_SENTINEL)) == 1 and text.count(str(_OFFSET_SENTINEL)) == 1:
            self._text = text

    def render(self, offset: int, limit: int) -> str:
        start = self._user_offset + offset
        count = limit if self._user_limit is None else max(0, min(limit, self._user_limit - offset))
        if self._text is None:  # a sentinel clashed with the statement's text: generate
            node = self._node.copy()
            _set_window(node, start, count)
            return node.sql(dialect=self._dialect)
        return self._text.replace(str(_LIMIT_SENTINEL), str(count)).replace(
            str(_OFFSET_SENTINEL), str(start)
        )


def _as_subquery(node: exp.Expression) -> exp.Select:
    return exp.select("*").from_(exp.Subquery(this=node, alias=exp.TableAlias(this="_wh_q")))


def _totally_ordered(node: exp.Expression, tie_breakers: list[int]) -> exp.Expression:
    """The user's ORDER BY, then every output column not already a key, by position."""
    existing = node.args.get("order")
    if existing is not None and _orders_by_all(existing):
        return node
    present = {
        int(o.this.this)
        for o in (existing.expressions if existing else [])
        if isinstance(o.this, exp.Literal) and not o.this.is_string
    }
    extra = [exp.Literal.number(i) for i in tie_breakers if i not in present]
    if not extra or not isinstance(node, exp.Select | exp.SetOperation):
        return node
    return node.order_by(*extra, append=True, copy=False)


def _with_window(node: exp.Expression, offset: int, limit: int) -> exp.Expression:
    user_limit = _literal_int(node.args.get("limit"))
    user_offset = _literal_int(node.args.get("offset")) or 0
    start = user_offset + offset
    count = limit if user_limit is None else max(0, min(limit, user_limit - offset))
    _set_window(node, start, count)
    return node


def _set_window(node: exp.Expression, start: int, count: int) -> None:
    node.set("limit", exp.Limit(expression=exp.Literal.number(count)))
    node.set("offset", exp.Offset(expression=exp.Literal.number(start)) if start else None)


def count_tree(tree: exp.Expression) -> exp.Expression:
    """`SELECT count(*) FROM (<statement>)`: the size of the whole result."""
    subquery = exp.Subquery(this=tree.copy(), alias=exp.TableAlias(this="_wh_q"))
    return exp.select(exp.Count(this=exp.Star())).from_(subquery)


def probe_tree(tree: exp.Expression) -> exp.Expression:
    """The statement with no rows: learns the output columns without doing the work."""
    subquery = exp.Subquery(this=tree.copy(), alias=exp.TableAlias(this="_wh_q"))
    return exp.select("*").from_(subquery).limit(0)


def _tie_breaker_ordinals(
    column_count: int, dialect: str, column_types: list[str] | None
) -> list[int]:
    ordinals = []
    for index in range(column_count):
        type_name = (column_types[index] if column_types else "").lower()
        if dialect == "postgres" and type_name.startswith(_UNORDERABLE_PG_TYPES):
            continue
        ordinals.append(index + 1)
    return ordinals


def _orders_by_all(order: exp.Order) -> bool:
    return any(
        isinstance(o.this, exp.Column | exp.Var) and o.this.name.upper() == "ALL"
        for o in order.expressions
    )


def _literal_window(node: exp.Expression) -> bool:
    """LIMIT/OFFSET are absent or integer literals, so page windows can be composed exactly."""
    for key in ("limit", "offset"):
        clause = node.args.get(key)
        if clause is not None and _literal_int(clause) is None:
            return False
    return True


def _literal_int(clause: exp.Expression | None) -> int | None:
    """The clause's row count when it is a plain integer (not PERCENT, not WITH TIES)."""
    if clause is None:
        return None
    if clause.args.get("limit_options") is not None:  # LIMIT 10 PERCENT, FETCH ... WITH TIES
        return None
    value = clause.args.get("expression") if isinstance(clause, exp.Limit | exp.Offset) else clause
    if isinstance(value, exp.Literal) and not value.is_string:
        try:
            return int(value.this)
        except ValueError:
            return None
    return None
