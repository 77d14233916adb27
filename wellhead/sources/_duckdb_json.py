"""DuckDB writes each row's JSON text itself, for result snapshots (`wellhead.spill`).

The text must be exactly `encoding.dumps([encoding.to_json_value(v) for v in row])` of the
values the DuckDB source hands to Python, so every expression here mirrors one rule of
`wellhead.sql.encoding` for one column type, in the engine, vectorised. A value outside what an
expression mirrors exactly (a float Python would write with an exponent, a year Python cannot
hold, a decimal a float cannot carry) makes the statement fail with `SLOW_MARKER`, and the
snapshot is taken the slow way, through Python. Types not listed here (intervals, nested
types, TIMESTAMPTZ, BLOB, ...) go the slow way from the start. `tests/test_spill.py` compares
both ways on every listed type and edge.
"""

from __future__ import annotations

import re

from wellhead.sources.base import Column

SLOW_MARKER = "wellhead: snapshot needs the exact Python path"
_SLOW = f"error('{SLOW_MARKER}')"
_SAFE = 2**53 - 1
_SMALL_INTS = {"TINYINT", "SMALLINT", "INTEGER", "UTINYINT", "USMALLINT", "UINTEGER"}
_BIG_INTS = {"BIGINT", "UBIGINT", "HUGEINT", "UHUGEINT"}
_DECIMAL = re.compile(r"DECIMAL\((\d+),\s*(\d+)\)")
_NAMED = {8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r"}
_FLOAT_RANGE = "({v} = 0 OR (abs({v}) >= 0.0001 AND abs({v}) < 1e16))"


def _escaped(ref: str) -> str:
    """JSON string escaping as `json.encoder.encode_basestring` (ensure_ascii=False) does."""
    text = f"replace(replace({ref}, '\\', '\\\\'), '\"', '\\\"')"
    for code in range(32):
        escape = _NAMED.get(code, f"\\u{code:04x}")
        text = f"replace({text}, chr({code}), '{escape}')"
    return text


def _value(ref: str, kind: str) -> str | None:
    """The JSON text of one non-NULL value of this type, or None: not mirrored here."""
    if kind in _SMALL_INTS:
        return f"CAST({ref} AS VARCHAR)"
    if kind in _BIG_INTS:
        return (
            f"CASE WHEN {ref} BETWEEN -{_SAFE} AND {_SAFE} THEN CAST({ref} AS VARCHAR) "
            f"ELSE '\"' || CAST({ref} AS VARCHAR) || '\"' END"
        )
    if kind == "BOOLEAN":
        return f"CASE WHEN {ref} THEN 'true' ELSE 'false' END"
    if kind in ("DOUBLE", "FLOAT"):
        value = ref if kind == "DOUBLE" else f"CAST({ref} AS DOUBLE)"
        # DuckDB writes a double as Python's repr does in this range (shortest round trip)
        return (
            f"CASE WHEN {_FLOAT_RANGE.format(v=value)} THEN CAST({value} AS VARCHAR) "
            f"ELSE {_SLOW} END"
        )
    if kind == "VARCHAR":
        return (
            f"CASE WHEN regexp_matches({ref}, '[\\x00-\\x1f\"\\\\]') "
            f"THEN '\"' || {_escaped(ref)} || '\"' ELSE '\"' || {ref} || '\"' END"
        )
    if kind == "DATE":
        return (
            f"CASE WHEN {ref} BETWEEN DATE '0001-01-01' AND DATE '9999-12-31' "
            f"THEN '\"' || CAST({ref} AS VARCHAR) || '\"' ELSE {_SLOW} END"
        )
    if kind == "TIMESTAMP":
        micros = f"(epoch_us({ref}) - epoch_us(date_trunc('second', {ref})))"
        return (
            f"CASE WHEN {ref} BETWEEN TIMESTAMP '0001-01-01' AND "
            f"TIMESTAMP '9999-12-31 23:59:59.999999' THEN '\"' || "
            f"strftime({ref}, '%Y-%m-%dT%H:%M:%S') || CASE WHEN {micros} = 0 THEN '' "
            f"ELSE '.' || lpad(CAST({micros} AS VARCHAR), 6, '0') END || '\"' ELSE {_SLOW} END"
        )
    decimal = _DECIMAL.fullmatch(kind)
    if decimal is not None:
        precision, scale = int(decimal.group(1)), int(decimal.group(2))
        if precision > 15:  # past 15 digits a float may not carry it: the exact test is Python's
            return None
        text = f"CAST({ref} AS VARCHAR)"
        if scale == 0:
            return f"{text} || '.0'"
        # a float's repr of a decimal of at most 15 digits: its digits, trailing zeros dropped
        trimmed = f"regexp_replace(regexp_replace({text}, '0+$', ''), '\\.$', '.0')"
        if scale < 5:
            return trimmed
        return f"CASE WHEN {ref} <> 0 AND abs({ref}) < 0.0001 THEN {_SLOW} ELSE {trimmed} END"
    return None


def json_rows_sql(sql: str, columns: list[Column], guards: list[str]) -> str | None:
    """`SELECT <row JSON text>` over the statement, or None when a column is not mirrored."""
    if not columns:
        return None
    cells = []
    for index, column in enumerate(columns):
        ref = f"c{index}"
        value = _value(ref, column.type.upper())
        if value is None:
            return None
        cells.append(f"CASE WHEN {ref} IS NULL THEN 'null' ELSE {value} END")
    names = ", ".join(f"c{i}" for i in range(len(columns)))
    row = " || ',' || ".join(cells)
    wrapped = f"SELECT '[' || {row} || ']' AS j FROM ({sql}\n) AS _wh_t({names})"
    if guards:
        wrapped += " WHERE " + " AND ".join(guards)
    return wrapped
