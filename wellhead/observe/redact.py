"""Secret redaction for logs, audit events and error messages.

One place decides what a secret looks like so that no handler, audit sink or error path
has to remember: passwords inside DSNs/URLs, `password=...` pairs, bearer tokens,
`Authorization` headers, cloud access keys, and any mapping value under a secret-sounding key.
Redaction over-masks rather than under-masks: a masked harmless value costs little, a
leaked password costs a rotation.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

MASK = "***"

# scheme://user:PASSWORD@host — the password runs to the last '@' before whitespace or a
# double quote, so an unencoded '@' inside the password is masked too (over-masking the rest
# of a token is acceptable). Unencoded whitespace or '"' in a URL password cannot be told
# from the end of the URL.
#
# Written to run in linear time (the obvious regex was quadratic: `a://b:` repeated froze a
# server for seconds, each start scanning to the end of the text for an '@'). A match starts
# only where a whitespace-delimited stretch starts; the atomic group commits to the stretch's
# first `scheme://user:` (a scheme is a whole run of scheme characters, never a suffix of one,
# and possessive, so no run is scanned twice), and the password then runs to the stretch's
# last '@'. If the first such prefix has no '@' after it, no later one in the stretch has,
# and the stretch is given up after one scan. The scheme may start with a digit or after a
# '_' (the old pattern wanted a letter at a word boundary): over-masking, never less.
_URL_CREDENTIALS = re.compile(
    r"(?<![^\s\"])"
    r"(?>(?P<prefix>[^\s\"]*?(?<![a-zA-Z0-9+.\-])[a-zA-Z0-9+.\-]++://[^:/?#@\s'\"<>]*+:))"
    r"(?P<secret>[^\s\"]*)@"
)

# The patterns below run on the lowercased text (same length, see `_lowered`), where a
# case-sensitive pattern lets the regex engine skip ahead to its first letters: about five
# times faster than IGNORECASE on a megabyte, which matters on every log record.

# Authorization: Bearer xyz / authorization=Basic xyz — keep the scheme, mask the credential.
_AUTH_HEADER = re.compile(
    r"(?P<prefix>\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?"
    r"(?:(?:bearer|basic|token|digest|negotiate|apikey)\s+)?)"
    r"(?P<secret>[^\s,;'\"]+)"
)

_BEARER = re.compile(r"(?P<prefix>\bbearer\s+)(?P<secret>[a-z0-9\-._~+/]+=*)")

# Key names that end in a secret word (db_password, client_secret, access_token,
# x-api-key, aws_secret_access_key). `max_tokens` and `token_count` do not match.
_SECRET_WORD = (
    r"(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|apikey|access[_-]?key"
    r"|secret[_-]?key|private[_-]?key|client[_-]?secret|credentials?|cookie|session[_-]?key)"
)
_SECRET_KEY_NAME = rf"[\w.\-]*?{_SECRET_WORD}(?:[_\-](?:access[_\-])?(?:key|id|value))?"
# A secret key name and its value, matched from the secret word on: the key's start (the
# old pattern's lazy `[\w.\-]*?` from a lookbehind) is found by `_key_is_path` instead, since
# an IGNORECASE pattern that may start anywhere costs the regex engine work at every position.
_KEY_VALUE_TAIL = re.compile(
    rf"{_SECRET_WORD}(?:[_\-](?:access[_\-])?(?:key|id|value))?[\"']?\s*[:=]\s*"
    r"(?P<secret>\"(?:[^\"\\]++|\\.)*+\"|'(?:[^'\\]++|\\.)*+'|[^\s,;&'\"})\]]+)"
)
_KEY_RUN = re.compile(r"[\w.\-]*")
_KEY_LOOKBACK = 256
"""How far back `_key_is_path` looks for the start of a key name; a longer name is a key."""

# AWS access key ids have a fixed shape; secret keys are caught by the key-value rule.
_AWS_ACCESS_KEY = re.compile(
    r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA|ABIA|ACCA)[A-Z0-9]{16}\b"
)

_SECRET_KEY_RE = re.compile(rf"^{_SECRET_KEY_NAME}$", re.IGNORECASE)
_AUTH_KEY_RE = re.compile(r"^(?:proxy[_-]?)?authorization$|^x[_-]?auth[\w\-]*$", re.IGNORECASE)


def _mask_quoted(value: str) -> str:
    """Keep the quotes of a quoted secret so the text stays parseable."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return f"{value[0]}{MASK}{value[0]}"
    return MASK


# Cheap substring pre-checks: most strings (ids, SQL, names) hold no secret, and this runs
# on every audit event and log record, so each regex runs only when it could match.
_AWS_HINT = re.compile(r"A[BCGIKNRS][A-Z]{2}[A-Z0-9]{16}")
_KEY_VALUE_HINTS = ("pass", "pwd", "secret", "token", "key", "credential", "cookie")
_SCALARS = (int, float, bool, type(None))


def redact_text(s: str) -> str:
    """Mask every secret we can recognise in free text (log messages, error strings, SQL).

    Linear in the length of the text (a megabyte takes tens of milliseconds, whatever it
    holds): it runs on the event loop, on text a caller chose.
    """
    if len(s) < 8:
        return s
    low = _lowered(s)
    if not (
        "://" in low
        or "authorization" in low
        or "bearer" in low
        or any(hint in low for hint in _KEY_VALUE_HINTS)
        or _AWS_HINT.search(s)
    ):
        return s
    if "://" in s and "@" in s:
        masked = _URL_CREDENTIALS.sub(lambda m: f"{m['prefix']}{MASK}@", s)
        if masked != s:
            s, low = masked, _lowered(masked)
    if "authorization" in low:
        masked = _sub_lowered(_AUTH_HEADER, s, low, lambda _: MASK)
        if masked is not s:
            s, low = masked, _lowered(masked)
    if "bearer" in low:
        masked = _sub_lowered(_BEARER, s, low, lambda _: MASK)
        if masked is not s:
            s, low = masked, _lowered(masked)
    if ("=" in s or ":" in s) and any(hint in low for hint in _KEY_VALUE_HINTS):
        s = _mask_key_values(s, low)
    if _AWS_HINT.search(s):
        s = _AWS_ACCESS_KEY.sub(MASK, s)
    return s


def _lowered(s: str) -> str:
    """`s.lower()` with every index unchanged ('İ' is the one character lower() lengthens)."""
    if "\u0130" in s:
        s = s.replace("\u0130", "i")
    return s.lower()


def _sub_lowered(pattern: re.Pattern[str], s: str, low: str, mask: Callable[[str], str]) -> str:
    """Replace the `secret` group of each match of `pattern` in `low` at the same place in `s`."""
    out: list[str] = []
    copied = 0
    for m in pattern.finditer(low):
        start, end = m.span("secret")
        out.append(s[copied:start])
        out.append(mask(s[start:end]))
        copied = end
    if not out:
        return s
    out.append(s[copied:])
    return "".join(out)


def _mask_key_values(s: str, low: str) -> str:
    """`password=***`, `"client_secret": "***"`: values under secret-sounding key names."""
    out: list[str] = []
    copied = pos = 0
    while True:
        m = _KEY_VALUE_TAIL.search(low, pos)
        if m is None:
            break
        if _key_is_path(low, m.start()):
            pos = m.start() + 1
            continue
        start, end = m.span("secret")
        out.append(s[copied:start])
        out.append(_mask_quoted(s[start:end]))
        copied = pos = end
    if not out:
        return s
    out.append(s[copied:])
    return "".join(out)


def _key_is_path(low: str, word: int) -> bool:
    """True when the name holding the secret word at `word` follows a '/' (a URL path such as
    `/api/token=...` is not a key). A name longer than the look-back counts as a key."""
    lo = max(0, word - _KEY_LOOKBACK)
    behind = low[lo:word][::-1]
    run = _KEY_RUN.match(behind)
    length = run.end() if run is not None else 0
    if length == len(behind):
        return False  # the name starts the text, or is longer than we look: mask
    return behind[length] == "/"


_KEY_CACHE_MAX_CHARS = 128
"""Longer keys are checked but not cached: the cache must not hold what callers invent."""


def is_secret_key(key: str) -> bool:
    """True when a mapping key names a secret (password, api_key, Authorization, ...)."""
    if len(key) > _KEY_CACHE_MAX_CHARS:
        return _is_secret_key(key)
    return _cached_is_secret_key(key)


def _is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY_RE.match(key) or _AUTH_KEY_RE.match(key))


_cached_is_secret_key = functools.lru_cache(maxsize=4096)(_is_secret_key)


def redact_value(value: Any) -> Any:
    """Redact any value: strings are scanned, containers are walked, other scalars pass."""
    if type(value) in _SCALARS:
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return redact_mapping(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return redact_text(bytes(value).decode("utf-8", errors="replace"))
    return value


def redact_mapping(d: Mapping[Any, Any]) -> dict[Any, Any]:
    """Return a copy with values under secret keys masked and every string scanned.

    Values under a secret key are replaced whole (whatever their type, None kept as None so
    "no password set" stays visible); DSN strings under any key lose their password.
    """
    out: dict[Any, Any] = {}
    for key, value in d.items():
        if isinstance(key, str) and is_secret_key(key) and value is not None:
            out[key] = {k: MASK for k in value} if isinstance(value, Mapping) else MASK
        else:
            out[key] = redact_value(value)
    return out


def hash_value(v: Any) -> str:
    """Stable short sha256 of a value, for the `hashed` argument-logging policy.

    Equal arguments hash equally (keys sorted), so an auditor can correlate calls
    without ever seeing the values.
    """
    try:
        canonical = json.dumps(v, sort_keys=True, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        canonical = repr(v)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


STANDARD_RECORD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)
"""Attributes every LogRecord has; anything else was passed through `extra=`."""


def redact_event(fields: dict[str, Any]) -> None:
    """Redact an event's fields in place (a `tool_call` line: a constant message, ids and
    numbers). Only its arguments can hold a secret (the `full` policy passes them as given),
    so only they are scanned."""
    arguments = fields.get("arguments")
    if arguments is not None:
        fields["arguments"] = redact_value(arguments)


class RedactingFilter(logging.Filter):
    """Scrub secrets from a record before any handler formats it.

    Attach it to handlers (handler filters also see records propagated from child
    loggers; logger filters do not). The message is rendered once with its args and
    the args dropped, so a secret inside an exception passed as `%s` is masked too.
    Exception tracebacks are rendered, scrubbed and stored in `exc_text`; `exc_info` is
    cleared so no formatter re-renders the unscrubbed original.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.__dict__.get("_wh_redacted"):
            redact_event(record.__dict__)
            return True
        if isinstance(record.msg, Mapping) and not record.args:
            record.msg = redact_mapping(record.msg)  # structured message: keep it a mapping
        else:
            try:
                message = record.getMessage()
            except Exception:  # a bad format string must not hide the record
                message = f"{record.msg} {record.args!r}" if record.args else str(record.msg)
            record.msg = redact_text(message)
            record.args = None
        if record.exc_info and record.exc_info[0] is not None:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact_text(text)
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        for key in list(record.__dict__):
            if key in STANDARD_RECORD_ATTRS:
                continue
            value = record.__dict__[key]
            if is_secret_key(key) and value is not None:
                record.__dict__[key] = MASK
            elif isinstance(value, str | Mapping | list | tuple | bytes):
                record.__dict__[key] = redact_value(value)
        return True
