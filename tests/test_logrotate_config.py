"""Reading logrotate's configuration for the `olddir` of a log (diag.ingest.logrotate).

The reference is logrotate itself: one configuration with what real ones contain (globals set
before and after stanzas and includes, an included directory with files logrotate skips, quoted
and multi-line file names, globs, relative and absolute olddirs, noolddir, scripts with braces in
them) is run with `logrotate -f`, and where each log's `.1` landed must be where diag says its
rotated files go. Then: every kind of broken configuration is one warning line, never an exception.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import logrotate_bin
from diag.ingest import logrotate
from diag.ingest.logrotate import LogrotateConfig

LOGS = ("a.log", "b.log", "sp ace.log", "c.log", "d.log", "g1.log", "g2.log", "h.log", "z.log", "y.log")


def _config(tmp: Path) -> Path:
    logs = tmp / "logs"
    for d in (logs / "old", logs / "glob_old", tmp / "abs", tmp / "global1", tmp / "global2"):
        d.mkdir(parents=True)
    for name in LOGS:
        (logs / name).write_text(f"{name} line\n")
    (tmp / "lr.d").mkdir()
    (tmp / "lr.conf").write_text(f"""# like /etc/logrotate.conf
weekly
rotate 2
olddir {tmp}/global1
include {tmp}/lr.d

{logs}/a.log {{
    olddir old
}}
noolddir
{logs}/h.log {{
    missingok
}}
""")
    (tmp / "lr.d" / "10-main").write_text(f"""{logs}/b.log
"{logs}/sp ace.log" {{
    olddir {tmp}/abs
    postrotate
        echo "}}" ; echo olddir nowhere
    endscript
}}

{logs}/c.log {{
    missingok
}}
{logs}/d.log {{
    olddir {tmp}/global2
    noolddir
}}
{logs}/g*.log {{
    olddir glob_old
}}
""")
    (tmp / "lr.d" / "20-z.dpkg-old").write_text(f"{logs}/z.log {{\n    olddir old\n}}\n")  # skipped by logrotate
    (tmp / "lr.d" / "30-y").write_text(f"olddir {tmp}/global2\n{logs}/y.log {{\n    rotate 1\n}}\n")
    return tmp / "lr.conf"


def _landed(logs: Path, name: str) -> str | None:
    """The directory logrotate moved `name` to (its `.1`), or None where it did not rotate it."""
    hits = [p.parent for p in logs.rglob(f"{name}.1")] + [p.parent for p in (logs.parent / "abs").glob(f"{name}.1")] \
        + [p.parent for p in logs.parent.glob(f"global*/{name}.1")]
    assert len(hits) <= 1, hits
    return str(hits[0]) if hits else None


def test_the_olddir_diag_reads_is_where_real_logrotate_moves_each_file(tmp_path):
    bin_ = logrotate_bin()
    conf = _config(tmp_path)
    ours = LogrotateConfig.read([str(conf)])
    assert ours.warnings == []
    logs = tmp_path / "logs"
    expected = {}
    for name in LOGS:
        d = ours.olddir_for(str(logs / name))
        expected[name] = d if d is not None else str(logs)
    r = subprocess.run([bin_, "-f", "-s", str(tmp_path / "state"), str(conf)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    landed = {name: _landed(logs, name) for name in LOGS}
    assert landed.pop("z.log") is None  # (only in a file logrotate skips: not rotated at all, and no olddir for diag)
    assert expected.pop("z.log") == str(logs)
    assert landed == expected
    # the cases each line of the configuration is there for, spelled out
    assert expected == {"a.log": str(logs / "old"), "b.log": str(tmp_path / "abs"), "sp ace.log": str(tmp_path / "abs"),
                        "c.log": str(tmp_path / "global1"), "d.log": str(logs), "g1.log": str(logs / "glob_old"),
                        "g2.log": str(logs / "glob_old"), "h.log": str(logs), "y.log": str(tmp_path / "global2")}


def test_a_symlinked_log_is_matched_by_its_real_name(tmp_path):
    real = tmp_path / "data" / "vllm"
    real.mkdir(parents=True)
    (tmp_path / "var").mkdir()
    os.symlink(real, tmp_path / "var" / "vllm")
    conf = tmp_path / "lr.conf"
    conf.write_text(f"{real}/*.log {{\n  olddir archive\n}}\n")
    c = LogrotateConfig.read([str(conf)])
    assert c.olddir_for(str(tmp_path / "var" / "vllm" / "vllm.log")) == str(real / "archive")
    assert c.olddir_for(str(tmp_path / "var" / "other.log")) is None


def test_a_broken_configuration_is_one_warning_each_and_the_rest_still_counts(tmp_path, caplog):
    good = tmp_path / "good"
    good.write_text(f"{tmp_path}/ok.log {{\n  olddir old\n}}\n")
    (tmp_path / "loop").write_text(f"include {tmp_path}/loop\n")  # includes itself: read once
    (tmp_path / "binary").write_bytes(b"\x00\xff\xfe olddir x {")
    (tmp_path / "huge").write_text("#" * (logrotate.MAX_BYTES + 10))
    (tmp_path / "open").write_text(f"{tmp_path}/open.log {{\n  olddir never\n")  # no closing brace
    (tmp_path / "nonames").write_text("{\n  olddir x\n}\n")
    (tmp_path / "badargs").write_text(f"{tmp_path}/b.log {{\n  olddir\n}}\ninclude\n")
    (tmp_path / "latin1").write_bytes(f"{tmp_path}/l.log {{\n  olddir caf\xe9\n}}\n".encode("latin-1"))
    roots = [str(tmp_path / n) for n in ("loop", "binary", "huge", "open", "nonames", "badargs", "missing", "latin1", "good")]
    c = LogrotateConfig.read(roots)
    assert len(c.warnings) == 7, c.warnings  # binary, huge, open, nonames, badargs' olddir, badargs' include, missing
    assert all("\n" not in w for w in c.warnings)
    assert [w for w in c.warnings if "missing" in w and "cannot read" in w]
    assert [w for w in c.warnings if "does not close" in w]
    assert c.olddir_for(str(tmp_path / "ok.log")) == str(tmp_path / "old")
    assert c.olddir_for(str(tmp_path / "open.log")) is None
    assert c.olddir_for(str(tmp_path / "l.log")) == str(tmp_path / "caf\ufffd")
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == len(c.warnings)


def test_the_default_roots_missing_is_no_warning_a_configured_one_is(tmp_path):
    missing = str(tmp_path / "nothing.conf")
    assert LogrotateConfig.read([missing], quiet_missing=[missing]).warnings == []
    assert len(LogrotateConfig.read([missing], quiet_missing=[]).warnings) == 1


def test_more_files_than_the_bound_are_not_read(tmp_path, monkeypatch):
    monkeypatch.setattr(logrotate, "MAX_FILES", 3)
    d = tmp_path / "lr.d"
    d.mkdir()
    for i in range(6):
        (d / f"{i:02}").write_text(f"{tmp_path}/{i}.log {{\n  olddir old{i}\n}}\n")
    c = LogrotateConfig.read([str(d)])
    assert [c.olddir_for(str(tmp_path / f"{i}.log")) for i in range(6)] == [str(tmp_path / f"old{i}") for i in range(3)] + [None] * 3
    assert len(c.warnings) == 1 and "more than 3 files" in c.warnings[0]


def test_a_long_chain_of_includes_is_one_warning_not_a_recursion_error(tmp_path):
    """Each file includes the next, 400 deep: what is within MAX_DEPTH counts, the rest is one
    warning (before the bound, the recursion raised RecursionError out of the follower)."""
    for i in range(400):
        (tmp_path / f"c{i:04}").write_text(f"{tmp_path}/l{i}.log {{\n  olddir old{i}\n}}\ninclude {tmp_path}/c{i + 1:04}\n")
    (tmp_path / "c0400").write_text(f"{tmp_path}/last.log {{\n  olddir last\n}}\n")
    c = LogrotateConfig.read([str(tmp_path / "c0000")])
    assert len(c.warnings) == 1 and "nested more than" in c.warnings[0], c.warnings
    assert c.olddir_for(str(tmp_path / "l0.log")) == str(tmp_path / "old0")
    assert c.olddir_for(str(tmp_path / f"l{logrotate.MAX_DEPTH - 1}.log")) == str(tmp_path / f"old{logrotate.MAX_DEPTH - 1}")
    assert c.olddir_for(str(tmp_path / "last.log")) is None


def test_an_included_fifo_or_device_is_one_warning_and_does_not_block(tmp_path):
    """logrotate reads only regular files; a FIFO named by `include` (or as a root) would block the
    daemon's read forever waiting for a writer."""
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "lr.conf").write_text(f"include {tmp_path}/fifo\ninclude /dev/zero\n{tmp_path}/a.log {{\n  olddir old\n}}\n")
    c = LogrotateConfig.read([str(tmp_path / "lr.conf"), str(tmp_path / "fifo")])
    assert len(c.warnings) == 2 and all("not a regular file" in w for w in c.warnings), c.warnings
    assert c.olddir_for(str(tmp_path / "a.log")) == str(tmp_path / "old")


def test_a_directory_included_many_times_is_listed_once(tmp_path, monkeypatch):
    """A 440 kB configuration including a directory of 1000 files 20000 times took minutes (each
    include listed and stat'ed every entry again, the files themselves skipped as read): it is
    listed once, as its files are read once."""
    d = tmp_path / "d"
    d.mkdir()
    for i in range(5):
        (d / f"f{i}").write_text(f"{tmp_path}/{i}.log {{\n  olddir old{i}\n}}\n")
    (tmp_path / "main.conf").write_text(f"include {d}\n" * 50 + f"include {tmp_path}/./d/\n")
    listed = []
    real_listdir = os.listdir
    monkeypatch.setattr(logrotate.os, "listdir", lambda p: listed.append(p) or real_listdir(p))
    c = LogrotateConfig.read([str(tmp_path / "main.conf"), str(d)])
    assert len(listed) == 1 and c.warnings == []
    assert [c.olddir_for(str(tmp_path / f"{i}.log")) for i in range(5)] == [str(tmp_path / f"old{i}") for i in range(5)]
