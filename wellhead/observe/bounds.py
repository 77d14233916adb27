"""Bounded text for logs, audit events and error messages: cut, marked, never silent.

A caller chooses what it sends; nothing it chooses may make a log line, an audit record or
an error text grow with it. Every cut says so and how much went (`…[cut 123 bytes]`), and
text is redacted before it is cut: a cut through a secret could otherwise leave its first
half where the pattern that recognises it no longer matches.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from wellhead.observe.redact import redact_text

MAX_LOGGED_ARGUMENT_BYTES = 4096
"""Default of `limits.max_logged_argument_bytes`: one argument value in a log line."""

MAX_LOGGED_KEY_CHARS = 128
"""An argument name longer than this is cut in log lines (names are the caller's too)."""

MAX_LOGGED_ARGUMENTS = 64
"""At most this many arguments are named in a log line; the rest are counted."""

MAX_LOG_MESSAGE_BYTES = 16384
"""A log message or traceback longer than this is cut (an exception may quote its input)."""


def cut_marker(cut_bytes: int) -> str:
    return f"…[cut {cut_bytes} bytes]"


def utf8_prefix(data: bytes, limit: int) -> bytes:
    """The longest prefix of `data` of at most `limit` bytes that ends on a character boundary."""
    if len(data) <= limit:
        return data
    end = max(limit, 0)
    while end > 0 and (data[end] & 0xC0) == 0x80:
        end -= 1
    return data[:end]


def cut_text(text: str, max_bytes: int) -> str:
    """`text` if it fits `max_bytes` UTF-8 bytes, else its head and a marker, within the bound.

    The marker counts in the bound; the count it gives is of the bytes left out.
    """
    if len(text) * 4 <= max_bytes:  # fits whatever the characters are
        return text
    data = text.encode("utf-8", errors="replace")
    if len(data) <= max_bytes:
        return text
    # The marker's own length depends on the number it shows: at most that of len(data).
    room = max_bytes - len(cut_marker(len(data)).encode())
    head = utf8_prefix(data, max(room, 0))
    return head.decode("utf-8", errors="replace") + cut_marker(len(data) - len(head))


def cut_middle(text: str, max_bytes: int, tail_bytes: int = 256) -> str:
    """Like `cut_text`, but keeps the last `tail_bytes` too: an error's advice comes last."""
    if len(text) * 4 <= max_bytes:
        return text
    data = text.encode("utf-8", errors="replace")
    if len(data) <= max_bytes:
        return text
    marker_room = len(cut_marker(len(data)).encode())
    tail_bytes = min(tail_bytes, max(max_bytes - marker_room, 0) // 2)
    tail = _utf8_suffix(data, tail_bytes)
    head = utf8_prefix(data, max(max_bytes - marker_room - len(tail), 0))
    cut = len(data) - len(head) - len(tail)
    return (
        head.decode("utf-8", errors="replace")
        + cut_marker(cut)
        + tail.decode("utf-8", errors="replace")
    )


def _utf8_suffix(data: bytes, limit: int) -> bytes:
    """The longest suffix of at most `limit` bytes that starts on a character boundary."""
    if limit <= 0:
        return b""
    start = max(len(data) - limit, 0)
    while start < len(data) and (data[start] & 0xC0) == 0x80:
        start += 1
    return data[start:]


def bound_value(value: Any, max_bytes: int = MAX_LOGGED_ARGUMENT_BYTES) -> Any:
    """A value as it may appear in a log line: as given if it fits, else a marked cut string.

    Small values pass untouched (the line's own redaction still applies to them); an
    oversized one is rendered (JSON for containers), redacted, then cut.
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        if len(value) * 4 <= max_bytes:
            return value
        return cut_text(redact_text(value), max_bytes)
    if isinstance(value, bytes | bytearray):
        return bound_value(bytes(value).decode("utf-8", errors="replace"), max_bytes)
    try:
        rendered = json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        rendered = repr(value)
    if len(rendered.encode("utf-8", errors="replace")) <= max_bytes:
        return value
    return cut_text(redact_text(rendered), max_bytes)


def bound_arguments(arguments: Any, max_bytes: int = MAX_LOGGED_ARGUMENT_BYTES) -> Any:
    """Tool arguments for a log line or audit event: each value bounded by `bound_value`,
    names cut at `MAX_LOGGED_KEY_CHARS`, at most `MAX_LOGGED_ARGUMENTS` of them named."""
    if not isinstance(arguments, Mapping):
        return bound_value(arguments, max_bytes)
    out: dict[str, Any] = {}
    for index, (key, value) in enumerate(arguments.items()):
        if index == MAX_LOGGED_ARGUMENTS:
            out["…"] = f"[cut {len(arguments) - index} more arguments]"
            break
        name = str(key)
        if len(name) > MAX_LOGGED_KEY_CHARS:
            name = cut_text(redact_text(name), MAX_LOGGED_KEY_CHARS)
        out[name] = bound_value(value, max_bytes)
    return out
