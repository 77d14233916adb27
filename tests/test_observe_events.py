"""`emit_event`: the `tool_call` line written directly is the line `logging` would write.

Under pytest the root logger carries pytest's capture handlers, so these tests build their
own logger, with `propagate` off, to see both paths.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from wellhead.observe.logs import EVENT_FIELDS, JsonLineHandler, emit_event

FIELDS = {
    "event": "tool_call",
    "tool_name": "query",
    "invocation_id": "ab" * 16,
    "rows": 3,
    "truncated": False,
    "error_id": None,
    "execution_time_ms": 1.25,
    "arguments": {"sql": "select 1", "dsn": "postgresql://app:Sup3rS3cret@db:5432/x"},
}
TS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}$")


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    logger = logging.getLogger("wellhead.test.events")
    logger.handlers[:] = [JsonLineHandler(stream)]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.handlers[:] = []
    logger.propagate = True


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def through_logging(logger: logging.Logger, fields: dict[str, Any]) -> dict[str, Any]:
    """The line the handler writes for the record `emit_event` would otherwise log."""
    stream = io.StringIO()
    handler = JsonLineHandler(stream)
    extra = {**fields, EVENT_FIELDS: tuple(fields), "_wh_redacted": True}
    record = logger.makeRecord(
        logger.name, logging.WARNING, "x", 1, "tool_call", (), None, None, extra
    )
    handler.handle(record)
    return lines(stream)[0]


def test_direct_line_equals_the_logging_line(logger: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = logger
    emit_event(log, logging.WARNING, "tool_call", dict(FIELDS))
    [direct] = lines(stream)
    expected = through_logging(log, dict(FIELDS))
    assert TS.match(direct.pop("ts")) and TS.match(expected.pop("ts"))
    assert direct == expected
    assert list(direct) == list(expected)  # same key order, too
    assert direct["level"] == "WARNING" and direct["logger"] == "wellhead.test.events"
    assert "Sup3rS3cret" not in stream.getvalue()  # arguments are redacted on both paths
    assert direct["arguments"]["sql"] == "select 1"


def test_another_listener_gets_the_record(logger: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = logger
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    log.addHandler(Keep())
    emit_event(log, logging.INFO, "tool_call", dict(FIELDS))
    assert [r.getMessage() for r in records] == ["tool_call"]
    assert records[0].tool_name == "query" and records[0].rows == 3  # type: ignore[attr-defined]
    [line] = lines(stream)  # wellhead's handler still wrote its line, via logging
    assert line["tool_name"] == "query" and "Sup3rS3cret" not in stream.getvalue()


def test_a_changed_handler_is_respected(logger: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = logger
    handler = log.handlers[0]
    handler.addFilter(lambda record: getattr(record, "tool_name", "") != "query")
    emit_event(log, logging.INFO, "tool_call", dict(FIELDS))
    assert stream.getvalue() == ""  # the user's filter ran: no direct write past it
    handler.filters.pop()
    handler.setLevel(logging.ERROR)
    emit_event(log, logging.WARNING, "tool_call", dict(FIELDS))
    assert stream.getvalue() == ""


def test_levels_and_disabled_loggers_write_nothing(
    logger: tuple[logging.Logger, io.StringIO],
) -> None:
    log, stream = logger
    log.setLevel(logging.ERROR)
    emit_event(log, logging.WARNING, "tool_call", dict(FIELDS))
    log.setLevel(logging.INFO)
    log.disabled = True
    emit_event(log, logging.INFO, "tool_call", dict(FIELDS))
    log.disabled = False
    assert stream.getvalue() == ""
    emit_event(log, logging.INFO, "tool_call", dict(FIELDS))
    assert len(lines(stream)) == 1
