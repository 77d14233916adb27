"""Rows to their JSON text, a column at a time: the encoding of `wellhead.sql.encoding`, faster.

A snapshot stores each row as the exact JSON text a page would carry,
`encoding.dumps([encoding.to_json_value(v) for v in row])`, so a page read back is byte for
byte what the engine path would have sent. Converting cell by cell costs about 10 µs a row
in Python; here each column whose values share one plain type (int, float, str, bool,
datetime, date, Decimal) is converted with C-level `map` calls that apply the same rules,
and any other column falls back to the cell-by-cell path. The result is identical by
construction; `tests/test_spill.py` checks it against the reference on every type.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from wellhead.sql import encoding

_string = json.encoder.encode_basestring  # type: ignore[attr-defined]
"""The encoder's own string escaping with ensure_ascii=False (the C version when built)."""
_SAFE = encoding.MAX_SAFE_INTEGER


def _cells(values: Sequence[Any]) -> list[str]:
    """The reference: each value's JSON text, one at a time."""
    dumps, convert = encoding.dumps, encoding.to_json_value
    return [dumps(convert(v)) for v in values]


def _ints(values: Sequence[Any]) -> list[str]:
    if min(values) < -_SAFE or max(values) > _SAFE:
        return _cells(values)  # out of JSON's safe range: decimal strings, as the reference
    return list(map(int.__repr__, values))


def _floats(values: Sequence[Any]) -> list[str]:
    if not all(map(math.isfinite, values)):
        return _cells(values)
    return list(map(float.__repr__, values))


def _strings(values: Sequence[Any]) -> list[str]:
    return list(map(_string, values))


def _bools(values: Sequence[Any]) -> list[str]:
    return ["true" if v else "false" for v in values]


def _datetimes(values: Sequence[Any]) -> list[str]:
    return list(map(_string, map(operator.methodcaller("isoformat"), values)))


def _decimals(values: Sequence[Any]) -> list[str]:
    """A Decimal is its float when the float's repr reads back as the same value, else its
    string (encoding.to_json_value): the same test, run over the whole column."""
    try:
        floats = list(map(float, values))
    except (ValueError, OverflowError):  # sNaN and friends: the reference handles them
        return _cells(values)
    reprs = list(map(float.__repr__, floats))
    same = list(map(operator.eq, map(decimal.Decimal, reprs), values))
    if all(same) and all(map(math.isfinite, floats)):
        return reprs
    return [
        r if ok and math.isfinite(f) else _string(str(v))
        for r, ok, f, v in zip(reprs, same, floats, values, strict=True)
    ]


_BY_TYPE: dict[type, Callable[[Sequence[Any]], list[str]]] = {
    int: _ints,
    float: _floats,
    str: _strings,
    bool: _bools,
    dt.datetime: _datetimes,
    dt.date: _datetimes,
    dt.time: _datetimes,
    decimal.Decimal: _decimals,
}


def encode_column(values: Sequence[Any]) -> list[str]:
    """The JSON text of each value of one column (None as `null`)."""
    present = [v for v in values if v is not None]
    if not present:
        return ["null"] * len(values)
    kinds = set(map(type, present))
    convert = _BY_TYPE.get(kinds.pop()) if len(kinds) == 1 else None
    if convert is None:
        return _cells(values)
    if len(present) == len(values):
        return convert(present)
    texts = iter(convert(present))
    return ["null" if v is None else next(texts) for v in values]


def encode_rows(rows: Sequence[Sequence[Any]], width: int) -> pa.StringArray:
    """Each row's JSON text (`[v1,v2,...]`), as `encoding.dumps` of its JSON values.

    Cells are encoded a column at a time in Python, rows are joined by Arrow (in C++).
    """
    if not rows:
        return pa.array([], pa.string())
    if width == 0:
        return pa.array(["[]"] * len(rows), pa.string())
    columns = [pa.array(encode_column(column), pa.string()) for column in zip(*rows, strict=True)]
    inner = pc.binary_join_element_wise(*columns, ",")
    return pc.binary_join_element_wise("[", inner, "]", "")
