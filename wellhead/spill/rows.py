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
from typing import Any, TypeAlias

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


Texts: TypeAlias = "list[str] | pa.Array"


def _quoted(texts: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise('"', texts, '"', "")


def _ints(values: Sequence[Any]) -> Texts:
    if min(values) < -_SAFE or max(values) > _SAFE:
        return _cells(values)  # out of JSON's safe range: decimal strings, as the reference
    return pc.cast(pa.array(values, pa.int64()), pa.string())


def _floats(values: Sequence[Any]) -> Texts:
    if not all(map(math.isfinite, values)):
        return _cells(values)
    return list(map(float.__repr__, values))


_NEEDS_ESCAPE = '[\\x00-\\x1f"\\\\]'


def _strings(values: Sequence[Any]) -> Texts:
    array = pa.array(values, pa.string())
    if pc.any(pc.match_substring_regex(array, _NEEDS_ESCAPE)).as_py():
        return list(map(_string, values))
    return _quoted(array)


def _bools(values: Sequence[Any]) -> Texts:
    return ["true" if v else "false" for v in values]


def _datetimes(values: Sequence[Any]) -> Texts:
    """isoformat: `T` between date and time, microseconds only when there are some."""
    if any(v.tzinfo is not None for v in values):
        return list(map(_string, map(operator.methodcaller("isoformat"), values)))
    text = pc.cast(pa.array(values, pa.timestamp("us")), pa.string())
    text = pc.replace_substring_regex(text, "\\.000000$", "")
    return _quoted(pc.replace_substring(text, " ", "T", max_replacements=1))


def _dates(values: Sequence[Any]) -> Texts:
    return _quoted(pc.cast(pa.array(values, pa.date32()), pa.string()))


def _times(values: Sequence[Any]) -> Texts:
    return list(map(_string, map(operator.methodcaller("isoformat"), values)))


_PLAIN_DECIMAL = "^-?[0-9]+(\\.[0-9]+)?$"


def _decimals(values: Sequence[Any]) -> Texts:
    """A Decimal is its float when the float's repr reads back as the same value, else its
    string (encoding.to_json_value). A plain decimal of at most 15 digits always does, and
    the repr is then its digits without trailing zeros (Python writes 1e-05 from 0.0001 down):
    those columns are rewritten by Arrow; any other runs the reference's test value by value."""
    text = pa.array(list(map(str, values)), pa.string())
    digits = pc.subtract(
        pc.utf8_length(text),
        pc.add(
            pc.cast(pc.starts_with(text, "-"), pa.int32()),
            pc.cast(pc.match_substring(text, "."), pa.int32()),
        ),
    )
    plain = pc.and_(pc.match_substring_regex(text, _PLAIN_DECIMAL), pc.less_equal(digits, 15))
    tiny = pc.match_substring_regex(text, "^-?0\\.0000")
    if pc.all(pc.and_(plain, pc.invert(tiny))).as_py():
        fraction = pc.match_substring(text, ".")
        trimmed = pc.replace_substring_regex(text, "0+$", "")
        trimmed = pc.replace_substring_regex(trimmed, "\\.$", ".0")
        return pc.if_else(fraction, trimmed, pc.binary_join_element_wise(text, ".0", ""))
    return _exact_decimals(values)


def _exact_decimals(values: Sequence[Any]) -> Texts:
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


_BY_TYPE: dict[type, Callable[[Sequence[Any]], Texts]] = {
    int: _ints,
    float: _floats,
    str: _strings,
    bool: _bools,
    dt.datetime: _datetimes,
    dt.date: _dates,
    dt.time: _times,
    decimal.Decimal: _decimals,
}


def encode_column(values: Sequence[Any]) -> list[str]:
    """The JSON text of each value of one column (None as `null`)."""
    texts = _encode(values)
    return texts if isinstance(texts, list) else texts.to_pylist()


def _encode(values: Sequence[Any]) -> Texts:
    present = [v for v in values if v is not None]
    if not present:
        return ["null"] * len(values)
    kinds = set(map(type, present))
    convert = _BY_TYPE.get(kinds.pop()) if len(kinds) == 1 else None
    if convert is None:
        return _cells(values)
    if len(present) == len(values):
        return convert(present)
    texts = convert(present)
    if not isinstance(texts, list):
        texts = texts.to_pylist()
    it = iter(texts)
    return ["null" if v is None else next(it) for v in values]


def encode_rows(rows: Sequence[Sequence[Any]], width: int) -> pa.StringArray:
    """Each row's JSON text (`[v1,v2,...]`), as `encoding.dumps` of its JSON values.

    Cells are encoded a column at a time in Python, rows are joined by Arrow (in C++).
    """
    if not rows:
        return pa.array([], pa.string())
    if width == 0:
        return pa.array(["[]"] * len(rows), pa.string())
    columns = [_as_array(_encode(column)) for column in zip(*rows, strict=True)]
    inner = pc.binary_join_element_wise(*columns, ",")
    return pc.binary_join_element_wise("[", inner, "]", "")


def _as_array(texts: Texts) -> pa.Array:
    return pa.array(texts, pa.string()) if isinstance(texts, list) else texts
