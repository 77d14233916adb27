"""The export formats: name -> (MIME type, file extension). Kept apart from the writers, so
listing formats does not import pyarrow (a fifth of a second at startup)."""

from __future__ import annotations

FORMATS: dict[str, tuple[str, str]] = {
    "parquet": ("application/vnd.apache.parquet", ".parquet"),
    "csv": ("text/csv", ".csv"),
    "jsonl": ("application/jsonl", ".jsonl"),
}
