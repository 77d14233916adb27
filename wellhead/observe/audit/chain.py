"""Tamper evidence for the JSONL trail: every line hashed together with the line before it.

A chained line ends with `"chain_seq":N,"chain":"<sha256 hex>"}`: `chain_seq` counts lines
across rotations and restarts, `chain` is SHA-256 (HMAC-SHA-256 with `audit.chain.secret`)
of the previous line's chain followed by this line up to its chain fields. A file's first
line carries a random per-file `chain_seed` (which takes the previous chain's place in its
hash) and `chain_prev`, the chain of the line before it in the previous file, so the chain
runs across rotations. Editing a line breaks its own hash; removing or moving one breaks
`chain_seq`.

Without a secret anyone who can write the file can also recompute every hash: the chain
then proves that nothing changed by accident or by a careless hand, and that the copy
forwarded to a SIEM matches. With a secret kept off the host, it proves more.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

_SUFFIX = re.compile(rb',?"chain":"([0-9a-f]{64})"\}$')


def link(previous: bytes, content: bytes, key: bytes | None) -> str:
    """The chain value of a line whose hashed part is `content`."""
    if key:
        return hmac.new(key, previous + content, hashlib.sha256).hexdigest()
    return hashlib.sha256(previous + content).hexdigest()


class Chain:
    """The writer's side: numbers and hashes lines in the order they are written.

    Used only by the JSONL sink's writer thread, so the hashing costs a call nothing.
    """

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key
        self.seq = 0
        self.last: str | None = None

    def resume(self, path: Path) -> bool:
        """Continue after the last chained line of an existing file; False if there is none."""
        tail = _last_line(path)
        if tail is None:
            return False
        match = _SUFFIX.search(tail)
        if match is None:
            return False
        try:
            self.seq = int(json.loads(tail)["chain_seq"])
        except (ValueError, KeyError, TypeError):
            return False
        self.last = match.group(1).decode()
        return True

    def seal(self, line: bytes, first_in_file: bool) -> bytes:
        """`line` (one JSON object and a newline) with its chain fields added."""
        body = line.rstrip(b"\n")
        if not body.endswith(b"}"):
            raise ValueError("an audit line must be one JSON object")
        body = body[:-1]
        self.seq += 1
        extra = b'"chain_seq":%d' % self.seq
        if body != b"{":
            extra = b"," + extra
        if first_in_file or self.last is None:
            seed = os.urandom(16)
            prev = b"null" if self.last is None else b'"' + self.last.encode() + b'"'
            extra += b',"chain_seed":"' + seed.hex().encode() + b'","chain_prev":' + prev
            previous = seed
        else:
            previous = bytes.fromhex(self.last)
        content = body + extra + b"}"
        self.last = link(previous, content, self.key)
        return body + extra + b',"chain":"' + self.last.encode() + b'"}\n'


def _last_line(path: Path) -> bytes | None:
    """The last complete line of a file (without its newline), or None."""
    try:
        with path.open("rb") as f:
            end = f.seek(0, os.SEEK_END)
            if end == 0:
                return None
            start = max(0, end - 256 * 1024)  # a line is bounded well below this
            f.seek(start)
            data = f.read()
    except FileNotFoundError:
        return None
    if not data.endswith(b"\n"):
        return None  # a torn last line: start a new chain segment after it
    lines = data[:-1].rsplit(b"\n", 1)
    return lines[-1]


def trail_files(path: Path) -> list[Path]:
    """A rotated trail, oldest first: path.N … path.1, path."""
    backups = [
        p for p in path.parent.glob(path.name + ".*") if p.name[len(path.name) + 1 :].isdigit()
    ]
    backups.sort(key=lambda p: int(p.name[len(path.name) + 1 :]), reverse=True)
    return [*backups, path] if path.exists() else backups


@dataclass
class Problem:
    """The first line that breaks the chain: where, what kind, and why it is thought so."""

    file: Path
    line: int
    kind: str  # altered | removed | reordered
    detail: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.kind}: {self.detail}"


@dataclass
class Report:
    files: list[Path]
    lines: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head: str | None = None
    problem: Problem | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None and bool(self.files)


@dataclass
class _Line:
    file: Path
    number: int
    raw: bytes
    seq: int | None = None
    fields: dict[str, object] | None = None


def verify(path: str | os.PathLike[str], key: bytes | None = None) -> Report:
    """Check a trail (the file and its rotated predecessors); report the first bad line."""
    files = trail_files(Path(path))
    report = Report(files=files)
    if not files:
        report.notes.append(f"no audit file at {path}")
        return report
    lines = list(_read(files))
    where_seq = {entry.seq: i for i, entry in enumerate(lines) if entry.seq is not None}
    expected: int | None = None
    last: str | None = None
    for i, entry in enumerate(lines):
        problem = _check(entry, i, lines, where_seq, expected, last, key, report)
        if problem is not None:
            report.problem = problem
            return report
        assert entry.fields is not None and entry.seq is not None
        last = str(entry.fields["chain"])
        expected = entry.seq + 1
        report.lines += 1
        report.first_seq = entry.seq if report.first_seq is None else report.first_seq
        report.last_seq, report.head = entry.seq, last
    return report


def _read(files: list[Path]) -> list[_Line]:
    out: list[_Line] = []
    for file in files:
        data = file.read_bytes()
        raw_lines = data.split(b"\n")
        if raw_lines and raw_lines[-1] == b"":
            raw_lines.pop()
        for number, raw in enumerate(raw_lines, start=1):
            entry = _Line(file, number, raw)
            try:
                parsed = json.loads(raw)
                if isinstance(parsed, dict) and isinstance(parsed.get("chain_seq"), int):
                    entry.fields, entry.seq = parsed, parsed["chain_seq"]
            except ValueError:
                pass
            out.append(entry)
    return out


def _check(
    entry: _Line,
    i: int,
    lines: list[_Line],
    where_seq: dict[int, int],
    expected: int | None,
    last: str | None,
    key: bytes | None,
    report: Report,
) -> Problem | None:
    def problem(kind: str, detail: str) -> Problem:
        return Problem(entry.file, entry.number, kind, detail)

    match = _SUFFIX.search(entry.raw)
    if entry.fields is None or entry.seq is None or match is None:
        return problem("altered", "not a chained audit line (not JSON, or no chain_seq/chain)")
    seq = entry.seq
    if expected is not None and seq != expected:
        if seq < expected:
            return problem("reordered", f"seq {seq} comes after seq {expected - 1}")
        found = where_seq.get(expected)
        if found is not None and found > i:
            other = lines[found]
            return problem(
                "reordered",
                f"seq {expected} belongs here but is at {other.file}:{other.number}; "
                f"found seq {seq}",
            )
        return problem(
            "removed",
            f"{seq - expected} line(s) missing before this one (seq {expected}..{seq - 1})",
        )
    first_in_file = entry.number == 1
    seed = entry.fields.get("chain_seed")
    if seed is not None:
        prev = entry.fields.get("chain_prev")
        if last is None and prev is not None:
            report.notes.append(
                f"the trail starts at seq {seq}, after files no longer present "
                "(deleted by rotation, audit.backup_count)"
            )
        elif last is not None and prev != last:
            return problem(
                "removed" if first_in_file else "altered",
                "its chain_prev does not match the chain of the line before it "
                "(the end of the previous file was cut, or this line was edited)",
            )
        try:
            previous = bytes.fromhex(str(seed))
        except ValueError:
            return problem("altered", "its chain_seed is not hex")
    elif first_in_file or last is None:
        return problem("removed", "a file must start with a seeded line: lines were cut above")
    else:
        previous = bytes.fromhex(last)
    content = entry.raw[: match.start()] + b"}"
    if link(previous, content, key) != match.group(1).decode():
        return problem("altered", "its content does not match its hash")
    return None
