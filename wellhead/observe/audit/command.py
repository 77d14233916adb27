"""`wellhead audit verify [FILE] [--config C]`: exit 0 if the trail is intact, 1 if not."""

from __future__ import annotations

import argparse
import os
import sys

from wellhead.errors import ConfigError
from wellhead.observe.audit.chain import verify

SECRET_ENV = "WELLHEAD_AUDIT_CHAIN_SECRET"


def run(args: argparse.Namespace) -> int:
    path = args.file
    key: bytes | None = None
    if args.config:
        from wellhead.config import load_settings

        audit = load_settings(args.config).audit
        path = path or audit.path
        key = audit.chain.secret.encode() if audit.chain.secret else None
    if os.environ.get(SECRET_ENV):
        key = os.environ[SECRET_ENV].encode()
    if not path:
        raise ConfigError("name the audit file, or give --config with audit.path set")
    report = verify(path, key)
    for note in report.notes:
        print(f"note: {note}")
    if report.problem is not None:
        print(f"{report.problem}", file=sys.stdout)
        print(f"verified {report.lines} line(s) before it", file=sys.stdout)
        return 1
    if not report.files:
        return 1
    print(
        f"ok: {report.lines} line(s) in {len(report.files)} file(s), chain_seq "
        f"{report.first_seq}..{report.last_seq}, head {report.head}"
    )
    print(
        "note: lines cut from the end of the newest file leave no trace in it: compare the "
        "head with a copy kept elsewhere (the SIEM that a collector tailing this file feeds)"
    )
    return 0
