"""Secrets never survive redaction: DSNs, key-value pairs, headers, tokens, log records."""

from __future__ import annotations

import io
import json
import logging
import string
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wellhead.observe.logs import JsonLineFormatter
from wellhead.observe.redact import (
    MASK,
    RedactingFilter,
    hash_value,
    is_secret_key,
    redact_mapping,
    redact_text,
)

# Long enough that it cannot appear by chance in the surrounding text.
passwords = st.text(
    alphabet=string.ascii_letters + string.digits + "!$%&()*+,-.:;<=>?@[]^_{|}~#/ '\"",
    min_size=8,
    max_size=40,
)
users = st.text(alphabet=string.ascii_lowercase + string.digits + "_", min_size=1, max_size=12)
schemes = st.sampled_from(["postgresql", "postgres", "mysql", "redis", "rediss", "https", "amqp"])


@settings(max_examples=300, deadline=None)
@given(scheme=schemes, user=users, password=passwords)
def test_dsn_password_never_appears(scheme: str, user: str, password: str) -> None:
    encoded = quote(password, safe="")
    dsn = f"{scheme}://{user}:{encoded}@db.internal:5432/analytics?sslmode=require"
    text = f"connection to {dsn} failed: timeout"
    out = redact_text(text)
    expected = f"{scheme}://{user}:{MASK}@db.internal:5432/analytics?sslmode=require"
    assert out == f"connection to {expected} failed: timeout"


@settings(max_examples=200, deadline=None)
@given(password=passwords.filter(lambda p: any(c in p for c in "@:/<'")))
def test_unencoded_special_characters_in_dsn_password_are_masked(password: str) -> None:
    # Operators paste unencoded passwords; whatever survives must not contain the secret.
    password = password.replace(" ", "x").replace('"', "x")
    out = redact_text(f"dsn=postgresql://app:{password}@db:5432/x")
    assert password not in out


@settings(max_examples=200, deadline=None)
@given(password=passwords.map(lambda p: p.replace(" ", "_").replace("'", "")))
def test_secret_in_mapping_and_nested_dsn(password: str) -> None:
    event = {
        "tool": "query",
        "source": {
            "dsn": f"postgresql://app:{quote(password, safe='')}@db/x",
            "password": password,
        },
        "headers": [{"Authorization": f"Bearer {password}"}],
        "api_key": password,
        "max_tokens": 1000,
    }
    out = redact_mapping(event)
    assert password not in json.dumps(out)
    assert quote(password, safe="") not in json.dumps(out)
    assert out["max_tokens"] == 1000
    assert out["tool"] == "query"
    assert out["api_key"] == MASK
    assert event["api_key"] == password  # the input is not mutated


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        ("host=db user=app password=hunter2 dbname=x", "hunter2", "user=app"),
        ("PGPASSWORD='s3cr et' psql", "s3cr et", "psql"),
        ('{"password": "p\\"w1", "user": "bob"}', 'p\\"w1', '"user": "bob"'),
        ("Authorization: Bearer eyJhbGciOi.eyJzdWIi.sig", "eyJhbGciOi", "Authorization: Bearer"),
        ("authorization=Basic dXNlcjpwYXNz", "dXNlcjpwYXNz", "Basic"),
        ("curl -H 'Bearer abc.def-ghi_jkl'", "abc.def-ghi_jkl", "curl"),
        ("key AKIAIOSFODNN7EXAMPLE in env", "AKIAIOSFODNN7EXAMPLE", "in env"),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG", "wJalrXUtnFEMI", "aws_secret_access_key"),
        ("client_secret=abc123&grant=x", "abc123", "grant=x"),
        ("X-Api-Key: 0123456789abcdef", "0123456789abcdef", "X-Api-Key"),
        ("redis://:onlypass@cache:6379/0", "onlypass", "cache:6379"),
    ],
)
def test_recognised_secrets(text: str, secret: str, kept: str) -> None:
    out = redact_text(text)
    assert secret not in out
    assert kept in out
    assert MASK in out


@pytest.mark.parametrize(
    "text",
    [
        "select count(*) from orders where total > 10",
        "max_tokens=1000 token_count=3",
        "https://example.com:8443/path",
        "user bob@example.com logged in",
    ],
)
def test_harmless_text_is_untouched(text: str) -> None:
    assert redact_text(text) == text


def test_redaction_is_idempotent() -> None:
    once = redact_text("postgresql://u:p4ss@h/db password=x Bearer tok")
    assert redact_text(once) == once


def test_secret_keys() -> None:
    for key in [
        "password",
        "DB_PASSWORD",
        "passwd",
        "client_secret",
        "api_key",
        "x-api-key",
        "access_token",
        "Authorization",
        "aws_secret_access_key",
        "private_key",
    ]:
        assert is_secret_key(key), key
    for key in ["max_tokens", "token_count", "dsn", "user", "tool", "secretary"]:
        assert not is_secret_key(key), key


def test_hash_value_is_stable_and_short() -> None:
    a = hash_value({"sql": "select 1", "params": [1, 2]})
    b = hash_value({"params": [1, 2], "sql": "select 1"})
    assert a == b
    assert len(a) == 16
    assert all(c in "0123456789abcdef" for c in a)
    assert hash_value({"sql": "select 2"}) != a
    assert hash_value(object()) != ""  # unserialisable values still hash


def _capture_logger(name: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter())
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, stream


def test_filter_scrubs_message_args_extra_and_traceback() -> None:
    logger, stream = _capture_logger("wellhead.test.redact")
    dsn = "postgresql://app:Sup3rS3cret@db:5432/x"
    try:
        raise ConnectionError(f"could not connect to {dsn}")
    except ConnectionError as exc:
        logger.exception(
            "source %s failed: %s",
            "pg",
            exc,
            extra={"dsn": dsn, "password": "Sup3rS3cret", "args_full": {"token": "abc"}},
        )
    logger.info("plain %d", 42)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert "Sup3rS3cret" not in stream.getvalue()
    assert '"abc"' not in stream.getvalue()
    first = lines[0]
    assert (
        first["message"]
        == f"source pg failed: could not connect to postgresql://app:{MASK}@db:5432/x"
    )
    assert first["dsn"] == f"postgresql://app:{MASK}@db:5432/x"
    assert first["password"] == MASK
    assert first["args_full"] == {"token": MASK}
    assert "ConnectionError" in first["exc_info"]
    assert lines[1]["message"] == "plain 42"


def test_filter_survives_bad_format_args() -> None:
    logger, stream = _capture_logger("wellhead.test.redact.bad")
    logger.info("two %s %s", "password=leak")
    out = stream.getvalue()
    assert "leak" not in out
    assert "two" in out


def test_filter_keeps_structured_messages_structured() -> None:
    logger, stream = _capture_logger("wellhead.test.redact.dict")
    logger.info({"event": "tool_call", "arguments": {"password": "leak1234"}, "rows": 3})
    (line,) = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert line["event"] == "tool_call"
    assert line["arguments"] == {"password": MASK}
    assert line["rows"] == 3
