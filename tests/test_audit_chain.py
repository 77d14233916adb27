"""Tamper evidence: a hash-chained JSONL trail, checked by `wellhead audit verify`.

Each test writes a real trail with the sink (rotations included), then edits, deletes or
swaps lines the way someone covering their tracks would, and checks that verify names the
first line that no longer fits, and what happened to it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wellhead.observe.audit import JsonlFileAuditSink
from wellhead.observe.audit.chain import link, trail_files, verify

REPO = Path(__file__).resolve().parent.parent


def write_trail(path: Path, n: int, key: bytes | None = None, max_bytes: int = 4_000) -> None:
    sink = JsonlFileAuditSink(path, max_bytes=max_bytes, backup_count=50, chain_key=key)
    for i in range(n):
        sink.emit({"event": "tool_call", "i": i, "tool_name": "query", "outcome": "ok"})
    assert sink.close()


def lines_of(file: Path) -> list[bytes]:
    return file.read_bytes().splitlines(keepends=True)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wellhead", "audit", "verify", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "FASTMCP_CHECK_FOR_UPDATES": "off", **(env or {})},
        timeout=60,
    )


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    write_trail(path, 200)
    assert len(trail_files(path)) > 3, "the trail should span rotations"
    return path


def test_an_untouched_trail_verifies_across_rotations(trail: Path) -> None:
    report = verify(trail)
    assert report.ok, report.problem
    assert report.lines == 200
    assert (report.first_seq, report.last_seq) == (1, 200)
    events = [json.loads(line) for f in trail_files(trail) for line in lines_of(f)]
    assert [e["i"] for e in events] == list(range(200))  # the event's own fields are intact
    for f in trail_files(trail):  # every file starts seeded and linked to the one before
        first = json.loads(lines_of(f)[0])
        assert len(first["chain_seed"]) == 32
    assert json.loads(lines_of(trail_files(trail)[0])[0])["chain_prev"] is None
    result = cli(str(trail))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: 200 line(s)" in result.stdout


def test_an_edited_line_is_reported_as_altered(trail: Path) -> None:
    target = trail_files(trail)[1]
    lines = lines_of(target)
    lines[3] = lines[3].replace(b'"outcome":"ok"', b'"outcome":"no"')
    target.write_bytes(b"".join(lines))
    report = verify(trail)
    assert report.problem is not None
    assert (report.problem.file, report.problem.line, report.problem.kind) == (
        target,
        4,
        "altered",
    )
    result = cli(str(trail))
    assert result.returncode == 1
    assert f"{target}:4: altered" in result.stdout


def test_a_deleted_line_is_reported_as_removed(trail: Path) -> None:
    target = trail_files(trail)[2]
    lines = lines_of(target)
    del lines[5]
    target.write_bytes(b"".join(lines))
    problem = verify(trail).problem
    assert problem is not None
    assert (problem.file, problem.line, problem.kind) == (target, 6, "removed")
    assert "1 line(s) missing" in problem.detail


def test_swapped_lines_are_reported_as_reordered(trail: Path) -> None:
    target = trail_files(trail)[0]
    lines = lines_of(target)
    lines[2], lines[3] = lines[3], lines[2]
    target.write_bytes(b"".join(lines))
    problem = verify(trail).problem
    assert problem is not None
    assert (problem.file, problem.line, problem.kind) == (target, 3, "reordered")


def test_a_deleted_rotated_file_and_a_cut_file_end_are_found(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_trail(path, 200)
    files = trail_files(path)
    files[2].unlink()  # a whole rotated file in the middle
    problem = verify(path).problem
    assert problem is not None
    assert (problem.file, problem.line, problem.kind) == (files[3], 1, "removed")

    other = tmp_path / "b" / "audit.jsonl"
    write_trail(other, 200)
    files = trail_files(other)
    files[1].write_bytes(b"".join(lines_of(files[1])[:-1]))  # the last line of a rotated file
    problem = verify(other).problem
    assert problem is not None
    assert (problem.file, problem.line, problem.kind) == (files[2], 1, "removed")


def test_cutting_the_start_of_a_file_is_found(trail: Path) -> None:
    target = trail_files(trail)[0]
    target.write_bytes(b"".join(lines_of(target)[2:]))
    problem = verify(trail).problem
    assert problem is not None
    assert (problem.file, problem.line, problem.kind) == (target, 1, "removed")


def test_the_oldest_files_gone_by_retention_is_a_note_not_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonlFileAuditSink(path, max_bytes=2_000, backup_count=2)
    for i in range(100):
        sink.emit({"event": "tool_call", "i": i})
    assert sink.close()
    report = verify(path)
    assert report.ok, report.problem
    assert report.first_seq is not None and report.first_seq > 1
    assert any("deleted by rotation" in note for note in report.notes)


def test_a_restart_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_trail(path, 10, max_bytes=0)
    write_trail(path, 10, max_bytes=0)  # a second process run on the same file
    report = verify(path)
    assert report.ok, report.problem
    assert (report.lines, report.last_seq) == (20, 20)


def test_a_torn_last_line_from_a_crash_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_trail(path, 5, max_bytes=0)
    with path.open("ab") as f:
        f.write(b'{"ts":"2026-12-01T00:00:00Z","event":"tool_ca')  # the crash
    write_trail(path, 5, max_bytes=0)
    problem = verify(path).problem
    assert problem is not None
    assert (problem.line, problem.kind) == (6, "altered")


def test_a_keyed_chain_needs_the_key(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    key = b"k" * 32
    write_trail(path, 30, key=key)
    assert verify(path, key).ok
    report = verify(path)  # no key: the first line's hash does not match
    assert report.problem is not None and report.problem.kind == "altered"
    assert report.problem.line == 1
    config = tmp_path / "wellhead.yaml"
    config.write_text(f"audit:\n  path: {path}\n  chain:\n    secret: {key.decode()}\n")
    assert cli("--config", str(config)).returncode == 0
    assert cli(str(path)).returncode == 1
    assert cli(str(path), env={"WELLHEAD_AUDIT_CHAIN_SECRET": key.decode()}).returncode == 0
    # someone who rewrites a line and recomputes its hash, but has no key, is caught
    oldest = trail_files(path)[0]
    lines = lines_of(oldest)
    first = json.loads(lines[0])
    content = lines[0][: lines[0].index(b',"chain":')].replace(b'"i":0', b'"i":9') + b"}"
    forged = link(bytes.fromhex(first["chain_seed"]), content, None)
    lines[0] = content[:-1] + b',"chain":"' + forged.encode() + b'"}\n'
    oldest.write_bytes(b"".join(lines))
    problem = verify(path, key).problem
    assert problem is not None
    assert (problem.file, problem.line, problem.kind) == (oldest, 1, "altered")
    assert verify(path).problem is not None  # and unkeyed, line 2 no longer follows it


def test_verify_of_a_missing_file_fails(tmp_path: Path) -> None:
    result = cli(str(tmp_path / "nothing.jsonl"))
    assert result.returncode == 1
    assert "no audit file" in result.stdout
