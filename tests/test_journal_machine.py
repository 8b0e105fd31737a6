"""Which machine's entries a unit's journal is read from. Without a `directory`, journalctl reads the
system's journal with `--merge` (to follow across boots), and that also opens the journals of other
machines this host keeps (/var/log/journal/remote/, written by systemd-journal-remote on a
log-collecting host): a unit of the same name there is not ours. So this machine's entries are
asked for (`_MACHINE_ID=`, from /etc/machine-id), ANDed with `-u`'s matches; with a `directory`
the user chose the files (often another machine's) and all their entries of the unit are read.

Real journal files written by systemd-journal-remote, read by the real journalctl, as in
tests/test_journal.py. The system's journal directories are not written to: a `journalctl` on the
PATH that reads the test's directory stands in for them (the daemon and the doctor run it as they
run journalctl), and where a private mount namespace can be had, the journal directory journalctl
reads by default is replaced by the test's within it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import wait_for
from test_daemon_containerlog import assert_as_scanned, no_tracebacks, scan, stop
from test_doctor_journal import recent_entries
from test_journal import UNIT, append, corpus_lines, daemons, entry, journal_status, pytestmark  # noqa: F401

from diag.daemon.config import JournalSpec
from diag.ingest import journal
from diag.ingest.journal import JournalSource
from diag.ingest.journalexport import read_recent

HERE = Path("/etc/machine-id").read_text().strip() if os.access("/etc/machine-id", os.R_OK) else ""  # this machine's id
needs_id = pytest.mark.skipif(len(HERE) != 32, reason="needs this machine's id in /etc/machine-id")
OTHER = "b" * 32  # another machine's id
REAL_JOURNALCTL = shutil.which("journalctl") or "journalctl"


def machine_entries(lines: list[bytes], start: int, machine: str, **fields: str) -> list[bytes]:
    """Entries as journald stamps them on `machine` (every entry has its _MACHINE_ID; the other machine
    has another boot and host name)."""
    if machine != HERE:
        fields = {"_BOOT_ID": "f" * 32, "_HOSTNAME": "gpu2", **fields}
    return [entry(ln, i, _MACHINE_ID=machine, **fields) for i, ln in enumerate(lines, start)]


def two_machines(jdir: Path) -> None:
    """This machine's and another's journal of the same unit, each in its own file, as a log-collecting
    host keeps them: this machine's vLLM serving requests, the other's failing (an error a wrong read
    would find); on each, also PID 1's word on the unit (read by `-u` too) and another unit's line."""
    jdir.mkdir(exist_ok=True)
    pid1 = {"_PID": "1", "UNIT": UNIT, "SYSLOG_IDENTIFIER": "systemd", "_SYSTEMD_UNIT": "init.scope"}
    append(jdir, machine_entries(corpus_lines("text.log", "vl.log"), 0, HERE)
           + machine_entries([b"Started vllm.service."], 5000, HERE, **pid1)
           + machine_entries([b"another unit's line"], 5001, HERE, _SYSTEMD_UNIT="other.service"))
    (jdir / "remote.journal").rename(jdir / "here.journal")
    append(jdir, machine_entries(corpus_lines("oom-kv-no-blocks.log"), 2000, OTHER)
           + machine_entries([b"Started vllm.service."], 5002, OTHER, **pid1)
           + machine_entries([b"another unit's line"], 5003, OTHER, _SYSTEMD_UNIT="other.service"))
    (jdir / "remote.journal").rename(jdir / "remote-gpu2.journal")


def entries(argv: list[str]) -> list[tuple[str, str, str]]:
    """(machine, unit or PID 1's UNIT, message) of each entry journalctl -o json prints."""
    out = subprocess.run(argv, capture_output=True, check=True).stdout
    return [(e.get("_MACHINE_ID"), e.get("UNIT") or e.get("_SYSTEMD_UNIT"), e.get("MESSAGE")) for e in map(json.loads, out.splitlines())]


def messages(argv: list[str]) -> list[str]:
    return [m for _, _, m in entries(argv)]

def without_follow(argv: list[str]) -> list[str]:
    return [a for a in argv if a != "--follow"]


def stand_in(tmp_path: Path, jdir: Path) -> dict:
    """An environment whose `journalctl` is the real one reading `jdir`, as if it were the system's journal."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "journalctl"
    fake.write_text(f'#!/bin/sh\nexec {REAL_JOURNALCTL} --directory={jdir} "$@"\n')
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def unit_lines(jdir: Path, out: Path, *match: str) -> Path:
    """The unit's journal as `journalctl -o short-iso-precise` prints it (`match`: this machine's only)."""
    with open(out, "wb") as f:
        subprocess.run([REAL_JOURNALCTL, f"--directory={jdir}", "-u", UNIT, *match, "-o", "short-iso-precise", "--all", "--no-pager"],
                       stdout=f, check=True)
    return out


@needs_id
def test_the_machine_match_is_anded_with_the_units_matches(tmp_path):
    """What journalctl makes of `-u UNIT` and a `_MACHINE_ID=` match, on real files: the unit's entries
    (its own and PID 1's about it: `-u` is itself an OR of several matches) of that machine only,
    never another unit's entries of that machine (an OR would add those), whichever comes first."""
    jdir = tmp_path / "j"
    two_machines(jdir)
    d = [REAL_JOURNALCTL, f"--directory={jdir}", "-o", "json", "--all", "--no-pager"]
    every = entries(d)
    unit = entries(d + ["-u", UNIT])
    assert {m for m, _, _ in unit} == {HERE, OTHER} and {u for _, u, _ in unit} == {UNIT}  # (both machines' entries of the unit)
    assert [(m, "Started vllm.service.") in [(x, z) for x, _, z in unit] for m in (HERE, OTHER)] == [True, True]  # (PID 1's too)
    for machine in (HERE, OTHER):
        want = [e for e in unit if e[0] == machine]
        assert len(want) >= 30
        assert entries(d + ["-u", UNIT, f"_MACHINE_ID={machine}"]) == want
        assert entries(d + [f"_MACHINE_ID={machine}", "-u", UNIT]) == want
        # (AND, not OR: the machine's other unit is left out, which the machine match alone reads)
        assert (machine, "other.service", "another unit's line") in entries(d + [f"_MACHINE_ID={machine}"])
    assert len(every) == len(unit) + 2


@needs_id
def test_without_a_directory_only_this_machines_entries_are_asked_for(tmp_path):
    """Every journalctl command line that reads a unit's journal: the daemon's follow, its first
    start's newest-entry query and the doctor's recent entries ask for this machine's entries
    without a `directory`, and for all entries of the directory's files with one. Run on real files
    (the first two with --directory added, as the system's journal cannot be written to), they
    read this machine's entries of the unit, or all of them."""
    jdir = tmp_path / "j"
    two_machines(jdir)
    match = f"_MACHINE_ID={HERE}"
    local, remote = JournalSpec(UNIT), JournalSpec(UNIT, str(jdir))
    src, far = JournalSource(local, None, 1 << 20, True), JournalSource(remote, None, 1 << 20, True)
    for argv in (src.argv(None), src.argv("s=x;i=1"), src.argv(None, newest=True)):
        assert argv.count(match) == 1 and not any(a.startswith("--directory") for a in argv), argv
    for argv in (far.argv(None), far.argv("s=x;i=1"), far.argv(None, newest=True)):
        assert not any(a.startswith("_MACHINE_ID=") for a in argv), argv
    rec = tmp_path / "record"
    rec.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "argv"}\n')
    rec.chmod(0o755)
    for spec in (local, remote):
        assert read_recent(spec, 0, 10, lambda f: None, journalctl=str(rec)) is None
    seen = [ln.split() for ln in (tmp_path / "argv").read_text().splitlines()]
    assert match in seen[0] and not any(a.startswith("--directory") for a in seen[0]), seen[0]
    assert not any(a.startswith("_MACHINE_ID=") for a in seen[1]) and f"--directory={jdir}" in seen[1], seen[1]

    here = messages([REAL_JOURNALCTL, f"--directory={jdir}", "-u", UNIT, match, "-o", "json", "--all", "--no-pager"])
    everything = messages([REAL_JOURNALCTL, f"--directory={jdir}", "-u", UNIT, "-o", "json", "--all", "--no-pager"])
    assert messages(without_follow(src.argv(None)) + [f"--directory={jdir}"]) == here
    assert messages(without_follow(far.argv(None))) == everything
    assert messages(src.argv(None, newest=True) + [f"--directory={jdir}"]) == here[-1:]
    assert messages(far.argv(None, newest=True)) == everything[-1:]


def test_an_unreadable_machine_id_reads_as_before(tmp_path, monkeypatch, caplog):
    """No /etc/machine-id to read (a container without it), or none in it: no machine match, the
    journals as journalctl --merge reads them; said once, at debug level only."""
    monkeypatch.setattr(journal, "_no_machine_said", False)
    (tmp_path / "empty").write_text("\n")  # (what an image ships for systemd to fill at first boot)
    with caplog.at_level(logging.DEBUG, logger="diag"):
        for path in (tmp_path / "none", tmp_path / "empty"):
            monkeypatch.setattr(journal, "MACHINE_ID", str(path))
            argv = JournalSource(JournalSpec(UNIT), None, 1 << 20, True).argv(None)
            assert not any(a.startswith("_MACHINE_ID=") for a in argv) and "--merge" in argv and argv[argv.index("-u") + 1] == UNIT
    said = [r for r in caplog.records if r.name == "diag"]
    assert [r.levelno for r in said] == [logging.DEBUG], said


def _private_journal_dir() -> bool:
    """Whether a private mount namespace can have its own /var/log/journal (root with CAP_SYS_ADMIN)."""
    if not (shutil.which("unshare") and os.path.isdir("/var/log/journal")):
        return False
    return subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs none /var/log/journal"], capture_output=True).returncode == 0


@needs_id
@pytest.mark.skipif(not _private_journal_dir(), reason="needs a private mount namespace (root) to lay out a system journal")
def test_the_system_journal_with_another_machines_files_kept_by_journal_remote(tmp_path):
    """The case itself, without --directory: a private /var/log/journal laid out as a log-collecting
    host's (this machine's files in /var/log/journal/<machine id>/, journal-remote's in
    /var/log/journal/remote/). journalctl --merge reads both; the daemon's command line, this
    machine's entries of the unit only."""
    root = tmp_path / "journal"
    two_machines(tmp_path / "j")
    (root / HERE).mkdir(parents=True)
    (root / "remote").mkdir()
    shutil.copy(tmp_path / "j" / "here.journal", root / HERE / "system.journal")
    shutil.copy(tmp_path / "j" / "remote-gpu2.journal", root / "remote" / "remote-gpu2.journal")

    def in_private(argv: list[str]) -> list[tuple[str, str, str]]:
        return entries(["unshare", "-m", "sh", "-c", f'mount --bind {root} /var/log/journal && exec "$@"', "sh", *argv])

    plain = [REAL_JOURNALCTL, "-o", "json", "--all", "--no-pager", "-u", UNIT]
    assert {m for m, _, _ in in_private(plain)} == {HERE}  # (without --merge: this machine's files only)
    assert {m for m, _, _ in in_private(plain + ["--merge"])} == {HERE, OTHER}  # (with it: journal-remote's too)
    here = messages([REAL_JOURNALCTL, f"--directory={tmp_path / 'j'}", "-u", UNIT, f"_MACHINE_ID={HERE}", "-o", "json", "--all",
                     "--no-pager"])
    src = JournalSource(JournalSpec(UNIT), None, 1 << 20, True)
    assert [m for _, _, m in in_private(without_follow(src.argv(None)))] == here
    assert [m for _, _, m in in_private(src.argv(None, newest=True))] == here[-1:]


@needs_id
def test_the_daemon_without_a_directory_follows_this_machines_entries_only(tmp_path, daemons):
    """`diag daemon --journal UNIT` where the journal read by default holds the other machine's vLLM
    too (its journalctl reading the test's files): what is stored is what scan finds in this
    machine's entries of the unit, and nothing of the other's (its KV-cache failure)."""
    state, jdir = tmp_path / "state", tmp_path / "j"
    state.mkdir()
    two_machines(jdir)
    cfg = tmp_path / "diag.toml"
    cfg.write_text("[daemon]\nstuck_after = 100000000\nrecord_quiet = 0.25\n")
    err = tmp_path / "daemon.err"
    d = subprocess.Popen([sys.executable, "-m", "diag", "daemon", "--config", str(cfg), "--state-dir", str(state), "--no-web",
                          "--from-beginning", "--journal", UNIT], stderr=open(err, "w"), stdout=subprocess.DEVNULL,
                         env=stand_in(tmp_path, jdir))
    daemons.append(d)
    want = unit_lines(jdir, tmp_path / "here.log", f"_MACHINE_ID={HERE}")
    n = want.read_bytes().count(b"\n")
    wait_for(lambda: journal_status(state).get("lines_read") == n, 30, "this machine's entries")
    time.sleep(1.0)  # (the other machine's entries, if they were read, come after this machine's)
    assert journal_status(state).get("lines_read") == n
    stop(d)
    no_tracebacks(err)
    assert_as_scanned(state, scan(want))


@needs_id
def test_the_doctor_without_a_directory_reads_this_machines_entries_only(tmp_path):
    """`diag doctor --journal UNIT`: the other machine's recent KV-cache failure is not this server's."""
    jdir = tmp_path / "j"
    jdir.mkdir()
    now = time.time()
    append(jdir, machine_recent(corpus_lines("text.log")[:40], now, HERE))
    (jdir / "remote.journal").rename(jdir / "here.journal")
    append(jdir, machine_recent(corpus_lines("oom-kv-no-blocks.log"), now, OTHER))
    cfg = tmp_path / "diag.toml"
    cfg.write_text("")
    r = subprocess.run([sys.executable, "-m", "diag", "doctor", "--json", "--config", str(cfg), "--check", "logs",
                        "--journal", UNIT], capture_output=True, text=True, timeout=120, env=stand_in(tmp_path, jdir), check=False)
    logs = {c["id"]: c for c in json.loads(r.stdout)["checks"]}["logs"]
    assert not any("kv-cache-no-blocks" in d for d in logs["details"]), logs
    n = sum(1 for ln in corpus_lines("text.log")[:40] if ln)
    assert f"journal:{UNIT}: {n} line(s) in the last 30 minutes" in logs["details"], logs


def machine_recent(lines: list[bytes], now: float, machine: str) -> list[bytes]:
    """`recent_entries` stamped as journald on `machine` stamps them."""
    extra = f"_MACHINE_ID={machine}\n" + ("" if machine == HERE else f"_BOOT_ID={'f' * 32}\n_HOSTNAME=gpu2\n")
    return [e[:-1] + extra.encode() + b"\n" for e in recent_entries(lines, now)]
