"""Export files from a streamed result: Parquet, CSV or JSON Lines, one batch at a time.

A `FileSink` is the `RowSink` a source streams into. It holds one batch, never the
result: Arrow batches (DuckDB) are written as they come, Python rows (SQLite,
PostgreSQL) become an Arrow batch of a schema fixed by the first batch, so every batch
of one file has the same column types. The file's size is checked after every batch,
and passing the cap stops the stream with an error that says so (never a cut file
passed off as whole).
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import uuid
from collections.abc import Sequence
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from wellhead.errors import BudgetExceeded, QueryFailed
from wellhead.exports.formats import FORMATS
from wellhead.sources.base import Column, Interval
from wellhead.sql import encoding

_BYTEA = pa.binary()
_PG_TYPES: dict[str, pa.DataType] = {
    "bool": pa.bool_(),
    "int2": pa.int16(),
    "int4": pa.int32(),
    "int8": pa.int64(),
    "oid": pa.int64(),
    "float4": pa.float32(),
    "float8": pa.float64(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "time": pa.time64("us"),
    "bytea": _BYTEA,
    "interval": pa.month_day_nano_interval(),
}
"""PostgreSQL result types with an exact Arrow twin; all others are written as text
(numeric keeps every digit, json stays JSON, uuid and enums their text form)."""


_CSV_TYPES: dict[str, pa.DataType] = {
    **{name: kind for name, kind in _PG_TYPES.items() if name not in ("time", "interval")},
    **{
        name: pa.string()
        for name in (
            "text",
            "varchar",
            "bpchar",
            "name",
            "numeric",
            "uuid",
            "interval",
            "json",
            "jsonb",
            "inet",
            "cidr",
        )
    },
}
"""PostgreSQL types whose CSV text Arrow reads into the same values the row path writes
(with the session in UTC and ISO 8601 intervals); other types take the row path."""
_CSV_SIDE_FACTOR = 4
"""A Parquet export's intermediate CSV may be this many times the file cap (it compresses)."""
_CSV_BLOCK_BYTES = 1 << 20
"""Arrow reads the side CSV a MiB at a time: 8 MiB blocks cost 50 MB more RSS, no speed."""


def _from_hex(array: pa.Array) -> pa.Array:
    """PostgreSQL's `\\xdeadbeef` bytea text as the bytes."""
    return pa.array(
        [None if v is None else bytes.fromhex(v[2:].decode()) for v in array.to_pylist()],
        type=pa.binary(),
    )


_ENGINE_CSV = object()
"""Stands for the writer of a CSV the engine wrote itself."""


class FileSink:
    """Writes one export file; `close()` finishes it (and must be called, also on error)."""

    def __init__(self, path: str, fmt: str, max_bytes: int) -> None:
        if fmt not in FORMATS:
            raise ValueError(fmt)
        self.path = path
        self.format = fmt
        self.max_bytes = max_bytes
        self.rows = 0
        self.columns: list[Column] = []
        self._schema: pa.Schema | None = None
        self._file: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._writer: Any = None
        self._batch_types: list[pa.DataType] = []
        self._side: IO[bytes] | None = None

    # -- RowSink -----------------------------------------------------------------------

    def begin(self, columns: list[Column]) -> None:
        self.columns = columns

    def write_rows(self, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            self.write_arrow(self._rows_to_batch(rows))

    def write_arrow(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0 and self._writer is not None:
            return
        batch = self._for_format(batch)
        if self._writer is None:
            self._open(batch.schema)
        if self.format == "jsonl":
            self._write_jsonl(batch)
        else:
            self._writer.write_batch(batch)
        self.rows += batch.num_rows
        self._check_size()

    # -- CSV written by the engine itself (PostgreSQL's COPY) ---------------------------

    @property
    def engine_csv(self) -> bool:
        """This file may take the engine's own CSV (with its header row): as it is for a CSV
        export, converted by Arrow for Parquet when every column has a plain type."""
        if self._writer is not None:
            return False
        if self.format == "csv":
            return True
        return self.format == "parquet" and all(c.type in _CSV_TYPES for c in self.columns)

    def write_csv(self, data: bytes) -> None:
        if self.format == "csv":
            self._writer = _ENGINE_CSV
            self._file.write(data)
            self._check_size()
            return
        if self._side is None:  # Parquet: the CSV goes to a side file, converted at the end
            self._side = open(self.path + ".csv", "wb")  # noqa: SIM115 - closed in counted()
        self._side.write(data)
        if self._side.tell() > _CSV_SIDE_FACTOR * self.max_bytes:
            raise BudgetExceeded(
                f"the export passed its {self.max_bytes:,}-byte cap (exports.max_export_bytes) "
                "and was discarded; narrow the query (WHERE, fewer columns)"
            )

    def counted(self, rows: int) -> None:
        """The engine's row count for the CSV it wrote (quoted newlines included); for
        Parquet, the side CSV is now converted (blocks: call it in a worker thread)."""
        if self._side is not None:
            self._side.close()
            self._parquet_from_csv(self._side.name)
            os.unlink(self._side.name)
            self._side = None
        self.rows = rows

    def _parquet_from_csv(self, path: str) -> None:
        names = [c.name for c in self.columns]
        slots = [f"c{i}" for i in range(len(names))]  # header names may repeat: read by slot
        kinds = {slot: _CSV_TYPES[c.type] for slot, c in zip(slots, self.columns, strict=True)}
        reader = pa_csv.open_csv(
            path,
            read_options=pa_csv.ReadOptions(
                column_names=slots, skip_rows=1, block_size=_CSV_BLOCK_BYTES
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types={s: pa.binary() if k is _BYTEA else k for s, k in kinds.items()},
                true_values=["t"],
                false_values=["f"],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
        try:
            for batch in reader:
                arrays = [
                    _from_hex(array) if kinds[slot] is _BYTEA else array
                    for slot, array in zip(slots, batch.columns, strict=True)
                ]
                self.write_arrow(pa.RecordBatch.from_arrays(arrays, names=names))
        except pa.ArrowInvalid as exc:
            raise QueryFailed(
                f"a value could not be written to Parquet ({str(exc)[:200]}); export this "
                "result as csv, or cast the column to text"
            ) from None

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Finish the file: a result without rows still gets a valid file with its columns."""
        try:
            if self._writer is None:
                names = [c.name for c in self.columns]
                empty = pa.schema([pa.field(n, pa.string()) for n in names])
                self._open(empty)
            if self.format != "jsonl" and self._writer not in (None, _ENGINE_CSV):
                self._writer.close()
        finally:
            self._file.close()

    def abort(self) -> None:
        """Close and delete a file that will not be kept."""
        try:
            if self.format != "jsonl" and self._writer not in (None, _ENGINE_CSV):
                self._writer.close()
        except Exception:  # noqa: BLE001 - the file is deleted anyway
            pass
        finally:
            self._file.close()
            paths = [self.path]
            if self._side is not None:
                self._side.close()
                paths.append(self._side.name)
            for path in paths:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass

    @property
    def size(self) -> int:
        return os.path.getsize(self.path)

    # -- internals ---------------------------------------------------------------------

    def _open(self, schema: pa.Schema) -> None:
        if self.format == "parquet":
            self._writer = pq.ParquetWriter(self._file, schema, compression="zstd")
        elif self.format == "csv":
            self._writer = pa_csv.CSVWriter(self._file, schema)
        else:
            self._writer = True  # JSON Lines needs no writer object
        self._schema = schema

    def _check_size(self) -> None:
        size = self._file.tell()
        if size > self.max_bytes:
            raise BudgetExceeded(
                f"the export passed its {self.max_bytes:,}-byte cap "
                f"(exports.max_export_bytes) after {self.rows:,} rows and was discarded; "
                "narrow the query (WHERE, fewer columns) or choose parquet, which compresses"
            )

    def _for_format(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Columns a format cannot hold become text, exactly as the JSON results show them."""
        if self.format == "jsonl":
            return batch
        arrays = []
        fields = []
        changed = False
        for field, column in zip(batch.schema, batch.columns, strict=True):
            if _writable(field.type, self.format):
                arrays.append(column)
                fields.append(field)
                continue
            changed = True
            arrays.append(pa.array([_text(v) for v in column.to_pylist()], type=pa.string()))
            fields.append(pa.field(field.name, pa.string()))
        if not changed:
            return batch
        return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))

    def _write_jsonl(self, batch: pa.RecordBatch) -> None:
        """One JSON object per row, built column by column (a row loop only joins text)."""
        if batch.num_rows == 0:
            return
        columns = [
            [_JSON(name) + ":" + text for text in _json_texts(column)]
            for name, column in zip(batch.schema.names, batch.columns, strict=True)
        ]
        if not columns:
            lines = ["{}"] * batch.num_rows
        else:
            lines = ["{" + ",".join(parts) + "}" for parts in zip(*columns, strict=True)]
        self._file.write(("\n".join(lines) + "\n").encode())

    def _rows_to_batch(self, rows: list[tuple[Any, ...]]) -> pa.RecordBatch:
        names = [c.name for c in self.columns] or [f"c{i}" for i in range(len(rows[0]))]
        if self._schema is None:
            types = [_PG_TYPES.get(c.type) if c.type else None for c in self.columns]
            types += [None] * (len(names) - len(types))
        else:
            types = list(self._batch_types)
        arrays = []
        for index, values in enumerate(zip(*rows, strict=True)):
            arrays.append(_array(names[index], values, types[index]))
        if self._schema is None:
            self._batch_types = [a.type for a in arrays]
        return pa.RecordBatch.from_arrays(arrays, names=names)


def _writable(kind: pa.DataType, fmt: str) -> bool:
    if pa.types.is_interval(kind):
        return False
    if fmt == "parquet":
        return True
    return bool(
        pa.types.is_boolean(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_date(kind)
        or pa.types.is_timestamp(kind)
        or pa.types.is_time(kind)
        or pa.types.is_null(kind)
    )


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
"""One encoder for every value: `json.dumps` with options builds a new one per call."""


def _json_texts(column: pa.Array) -> list[str]:
    """Each value of a column as JSON text, as `encoding.to_json_value` would write it."""
    kind = column.type
    if pa.types.is_boolean(kind) or (pa.types.is_integer(kind) and _within_safe_integers(column)):
        return column.cast(pa.string()).fill_null("null").to_pylist()
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return ["null" if v is None else _JSON(v) for v in column.to_pylist()]
    return [_JSON(encoding.to_json_value(_plain(v))) for v in column.to_pylist()]


def _within_safe_integers(column: pa.Array) -> bool:
    """No integer JavaScript would round (larger ones are written as text by `encoding`)."""
    if column.null_count == len(column):
        return True
    bounds = pc.min_max(column)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    return -encoding.MAX_SAFE_INTEGER <= low and high <= encoding.MAX_SAFE_INTEGER


def _plain(value: Any) -> Any:
    """Arrow's Python values in the forms `encoding` knows (an interval keeps its parts)."""
    if isinstance(value, pa.MonthDayNano):
        return Interval(value.months, value.days, value.nanoseconds // 1000)
    return value


def _text(value: Any) -> str | None:
    """A value as text, the way a JSON result shows it (nested values as JSON)."""
    if value is None:
        return None
    converted = encoding.to_json_value(_plain(value))
    if isinstance(converted, str):
        return converted
    return json.dumps(converted, ensure_ascii=False, separators=(",", ":"))


def _array(name: str, values: Sequence[Any], kind: pa.DataType | None) -> pa.Array:
    """One column of Python values as Arrow, of `kind` when known (fixed by the first batch).

    Arrow's own conversion (C) first; a Python pass only for values it cannot take.
    """
    if kind is not None and pa.types.is_interval(kind):
        values = [
            None if v is None else pa.MonthDayNano([v.months, v.days, v.microseconds * 1000])
            for v in values
        ]
    if kind is None or pa.types.is_string(kind):
        return _text_or_inferred(values, kind)
    try:
        return pa.array(values, type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        raise QueryFailed(
            f"column '{name}' holds values of more than one type (SQLite stores each value "
            f"with its own type); CAST it in the query, e.g. CAST({name} AS TEXT)"
        ) from None


def _text_or_inferred(values: Sequence[Any], kind: pa.DataType | None) -> pa.Array:
    """A column of unknown type (inferred) or of text; decimals and odd values become text."""
    sample = next((v for v in values if v is not None), None)
    if isinstance(sample, decimal.Decimal | uuid.UUID):  # str() is 10x Arrow's decimal path
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())
    try:
        array = pa.array(values, type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        try:
            array = pa.array(values)  # decimals (text in the first batch), say
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            array = pa.array([_scalar(v) for v in values])
    if pa.types.is_null(array.type) or pa.types.is_decimal(array.type):
        array = array.cast(pa.string())  # all NULL so far, or decimals whose scale may vary
    if kind is not None and array.type != kind:
        try:
            array = array.cast(kind)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            array = pa.array([_scalar(v) for v in values], type=kind)
    return array


def _scalar(value: Any) -> Any:
    """Values Arrow would guess wrongly or not at all, as text (exact)."""
    if value is None or isinstance(value, bool | int | float | str | bytes | dt.date | dt.time):
        return value
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)  # every digit as the engine has it (`12.50`)
    if isinstance(value, Interval | dict | list | tuple):
        return _text(value)
    return str(value)
