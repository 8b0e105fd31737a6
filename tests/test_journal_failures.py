"""The journal source when things go wrong (`diag.ingest.journal`): malformed journalctl output, a
journal the daemon's user may not read, a stop signal to the whole process group, a full disk, the
journal's boots, a journalctl that refuses an option. Real journal files, the real journalctl and
a real daemon, as in tests/test_journal.py, whose helpers these tests use.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import wait_for
from test_daemon_containerlog import assert_as_scanned, no_tracebacks, scan, status, stop
from test_journal import (REAL, T0, UNIT, append, caught_up, children, corpus_lines, daemons, entries_of, entry,  # noqa: F401
                          exported, journal_status, lines_in, pytestmark, start)

from diag.daemon import config
from diag.ingest.journal import JournalSource

def test_malformed_output_never_stops_a_source(tmp_path):
    """What no journalctl writes, read as if it did (a program in its place that prints these lines):
    JSON that is broken, not an object, without a cursor or time, a MESSAGE of the wrong type, and
    a line longer than the JSON cap; the good entries around them are rebuilt, the others counted."""
    good = {"__CURSOR": "s=1;i=1", "__REALTIME_TIMESTAMP": str(T0), "_PID": "1", "SYSLOG_IDENTIFIER": "vllm", "_HOSTNAME": "h", "MESSAGE": "ok"}
    out = [json.dumps(good), '{"MESSAGE": "broken', "[1, 2]", json.dumps({"MESSAGE": "x"}), json.dumps({**good, "MESSAGE": None}),
           json.dumps({**good, "MESSAGE": [1, "a", 300]}), json.dumps({**good, "__REALTIME_TIMESTAMP": "9" * 40}),
           json.dumps({**good, "MESSAGE": "z" * 200_000}), json.dumps({**good, "__REALTIME_TIMESTAMP": "\u00b2"}),
           json.dumps({**good, "__CURSOR": "s=1;i=2", "MESSAGE": [104, 105, 255]})]
    data = tmp_path / "out.json"
    data.write_text("\n".join(out) + "\n")
    fake = tmp_path / "journalctl"
    fake.write_text(f"#!/bin/sh\ncat {data}\n")
    fake.chmod(0o755)
    src = JournalSource(config.JournalSpec(UNIT), None, 8192, from_beginning=True, journalctl=str(fake))
    got = b""
    for _ in range(100):
        got += src.read()
        if src.error is not None:  # (its end, once everything was read)
            break
        time.sleep(0.02)
    src.stop()
    assert got.count(b"\n") == 2 and got.endswith(b"h vllm[1]: hi\xff\n") and b": ok\n" in got
    assert src.skipped == 8 and src.state()["cursor"] is None  # (nothing fed to a parser here: nothing is committed)
    assert "journalctl ended (exit status 0" in src.error


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="runs journalctl as another user: needs root and setpriv")
def test_a_journal_the_user_may_not_read_is_said_once_with_what_to_do(tmp_path):
    """journalctl run as a user who may not read the journal files (nobody, no groups): one line that
    says so and names the systemd-journal group, however often the source retries."""
    jdir = tmp_path / "j"
    jdir.mkdir(mode=0o700)
    append(jdir, entries_of(corpus_lines("text.log")[:5], 0))
    as_nobody = tmp_path / "journalctl"
    as_nobody.write_text(f'#!/bin/sh\nexec setpriv --reuid=65534 --regid=65534 --clear-groups {shutil.which("journalctl")} "$@"\n')
    as_nobody.chmod(0o755)
    for from_beginning in (True, False):  # (following at once, or asking for the newest entry first)
        src = JournalSource(config.JournalSpec(UNIT, str(jdir)), None, 1 << 20, from_beginning, journalctl=str(as_nobody))
        said = []
        handler = logging.Handler()
        handler.emit = lambda rec: said.append(rec.getMessage()) if rec.levelno >= logging.WARNING else None  # type: ignore[method-assign]
        logging.getLogger("diag").addHandler(handler)
        try:
            deadline = time.monotonic() + 1.5  # (retried after 1 s)
            while time.monotonic() < deadline:
                assert src.read() == b""
                time.sleep(0.05)
        finally:
            logging.getLogger("diag").removeHandler(handler)
            src.stop()
        assert len(said) == 1 and "systemd-journal group" in said[0] and "Permission denied" in said[0], said
        assert src.error == said[0].split(": ", 1)[1]
        # (seeing no entry of the unit is not its having none: once readable, it is not read from its oldest entry)
        assert src.state()["from_oldest"] is from_beginning


def test_a_sigterm_to_the_daemons_process_group_while_it_is_busy_is_no_journalctl_failure(tmp_path, daemons):
    """systemd stops a service by sending SIGTERM to every process of its cgroup, and a terminal's ^C
    goes to the whole process group: the journalctl child ends with the daemon. When the signal
    comes while the daemon is busy (catching up a large file), that end is no news either: not
    logged as journalctl ending, not left as the unit's error in `diag status`."""
    state, jdir, logs = tmp_path / "state", tmp_path / "j", tmp_path / "logs"
    for p in (state, jdir, logs):
        p.mkdir()
    append(jdir, entries_of(corpus_lines("text.log")[:20], 0))
    big = logs / "vllm.log"
    text = (REAL / "text.log").read_bytes()
    with open(big, "wb") as f:
        for _ in range(60_000_000 // len(text)):
            f.write(text)
    cfg = tmp_path / "diag.toml"
    cfg.write_text(f'[daemon]\nstuck_after = 100000000\n[[journal]]\nunit = "{UNIT}"\ndirectory = "{jdir}"\n')
    err = tmp_path / "daemon.err"
    d = subprocess.Popen([sys.executable, "-m", "diag", "daemon", "--config", str(cfg), "--state-dir", str(state), "--no-web",
                          "--from-beginning", "--log", str(big)], stderr=open(err, "w"), stdout=subprocess.DEVNULL,
                         start_new_session=True)
    daemons.append(d)
    wait_for(lambda: any(s["path"] == str(big) and 0 < s["lines_read"] for s in status(state)["sources"]) and children(d), 60,
             "the daemon to be catching up the file")
    assert any(s["lag_bytes"] for s in status(state)["sources"] if s["path"] == str(big))  # (still busy)
    os.killpg(d.pid, signal.SIGTERM)
    d.wait(timeout=60)
    no_tracebacks(err)
    assert "journalctl ended" not in err.read_text(), err.read_text()[-2000:]
    assert not journal_status(state).get("last_error"), journal_status(state)


def test_garbage_for_the_units_newest_entry_never_stops_a_source(tmp_path):
    """What no journalctl writes, read as if it did: its answer for the unit's newest entry (a first
    start, without --from-beginning) nested deeper than Python's JSON decoder recurses. The source
    counts it as no answer and follows on."""
    fake = tmp_path / "journalctl"
    fake.write_text("#!/bin/sh\nprintf '%100000s' '' | tr ' ' '['\necho\n")
    fake.chmod(0o755)
    src = JournalSource(config.JournalSpec(UNIT), None, 8192, from_beginning=False, journalctl=str(fake))
    try:
        for _ in range(20):
            src.read()
            time.sleep(0.02)
    finally:
        src.stop()
    assert src.skipped >= 1 and src.state()["cursor"] is None


def test_a_full_disk_with_journal_entries_waiting_in_the_pipe_is_no_busy_loop(tmp_path):
    """The store refuses writes (the disk is full) while the server goes on logging: reading pauses
    (nothing is lost), and the journalctl child's output waiting unread must not end every wait of the
    main loop at once: the loop turns at its poll interval, not as fast as the CPU allows. Once there
    is space again, every entry is stored."""
    from diag.daemon.service import Daemon

    jdir = tmp_path / "j"
    jdir.mkdir()
    lines = corpus_lines("text.log", "vl.log")
    append(jdir, entries_of(lines[:50], 0))
    cfg = config.Config(journals=[config.JournalSpec(UNIT, str(jdir))], state_dir=tmp_path / "state", use_inotify=False,
                        web_listen=None, from_beginning=True)
    d = Daemon(cfg)
    src = d.journals.sources[f"journal:{UNIT}"]
    try:
        wait_for(lambda: d.step() or src.entries == 50, 20, "the first entries")
        pages = d.store.db.execute("PRAGMA page_count").fetchone()[0]
        d.store.db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full now
        append(jdir, entries_of(lines[50:200], 50))
        wait_for(lambda: d.step() and d.committer.pending is not None, 20, "a commit the store refuses")
        append(jdir, entries_of(lines[200:], 200))  # logged while the store refuses writes: waiting in the pipe
        time.sleep(0.5)
        turns, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < 2:  # the daemon's loop (Daemon.run)
            busy = d.step()
            d.periodic()
            if not busy or not (d.follower.behind or d.journals.behind):
                d._wait(busy)
            turns += 1
        assert d.committer.pending is not None  # (still refused: reading paused)
        assert turns <= 2 / min(cfg.poll_interval, cfg.record_quiet) + 3, f"{turns} turns in 2 s"  # (a record held: the shorter wait)
        d.store.db.execute("PRAGMA max_page_count = 1073741823")  # space again
        n = lines_in(jdir, tmp_path)
        wait_for(lambda: d.step() or d.journals.state()[f"journal:{UNIT}"]["lines_read"] == n, 20, "every entry")
    finally:
        d.journals.close()
        d.store.close()


def entries_read(state: Path) -> int:
    """How many of the unit's entries the daemon has committed reading (its lines may still be held)."""
    from contextlib import closing

    from diag.store.db import Store

    try:
        with closing(Store(state / "diag.sqlite3", readonly=True)) as s:
            return (s.meta().get("journal") or {}).get(f"journal:{UNIT}", {}).get("entries", 0)
    except Exception:  # noqa: BLE001 - (not created yet)
        return 0


def journal_entries(jdir: Path) -> list[bytes]:
    return subprocess.run(["journalctl", f"--directory={jdir}", "-u", UNIT, "-o", "json", "--merge", "--no-pager"], capture_output=True,
                          check=True).stdout.splitlines()


def test_entries_of_an_earlier_boot_and_of_a_later_one_are_all_read(tmp_path, daemons):
    """journalctl --follow shows only the journal's latest boot unless told otherwise (systemd 250 on):
    the daemon stopped before the server's last lines of a boot (a shutdown, a crash) goes on after
    its cursor in that boot at the next start, not from the new boot's first entry; --from-beginning
    reads every boot; and a journal whose machine reboots while the daemon follows it (a `directory`
    of remote journals) is followed into the new boot."""
    state, jdir = tmp_path / "state", tmp_path / "j"
    state.mkdir()
    jdir.mkdir()
    lines = corpus_lines("text.log", "vl.log")
    boot = lambda b, part, start: [entry(ln, i, _BOOT_ID=b * 32) for i, ln in enumerate(part, start)]  # noqa: E731
    read = lambda: entries_read(state) == len(journal_entries(jdir))  # noqa: E731
    append(jdir, boot("a", lines[:40], 0))
    d, err = start(state, jdir)
    daemons.append(d)
    wait_for(read, 20, "the first boot's first entries")
    stop(d)
    append(jdir, boot("a", lines[40:80], 40) + boot("b", lines[80:120], 80))  # the first boot's last lines, then the next boot
    d, err2 = start(state, jdir)
    daemons.append(d)
    wait_for(read, 20, "the first boot's last entries and the next boot's")
    append(jdir, boot("c", lines[120:], 120))  # the machine reboots while the daemon follows
    wait_for(read, 20, "the entries of the boot after")
    stop(d)
    no_tracebacks(err, err2)
    assert "no longer has the last entry" not in err2.read_text()
    # (journalctl's text export puts a `-- Boot ID --` line between boots, which no entry is: left out
    # here, the daemon's lines are the entries')
    ref = exported(jdir, tmp_path / "journal.log")
    text = ref.read_bytes().split(b"\n")
    ref.write_bytes(b"\n".join(ln for ln in text if not ln.startswith(b"-- Boot ")))
    assert caught_up(state, ref.read_bytes().count(b"\n"))
    assert_as_scanned(state, scan(ref))


def test_a_journalctl_that_refuses_merge_with_follow_is_followed_without_it(tmp_path):
    """systemd 250-253 as released refuse --merge with --follow ("Using --boot or --list-boots with
    --merge is not supported"): the real journalctl behind a wrapper that refuses as they do. The
    source follows without --merge (the latest boot only), says so once, and reads the entries."""
    jdir = tmp_path / "j"
    jdir.mkdir()
    append(jdir, entries_of(corpus_lines("text.log")[:20], 0))
    old = tmp_path / "journalctl"
    old.write_text('#!/bin/sh\nm=; f=\nfor a in "$@"; do case "$a" in --merge) m=1;; --follow) f=1;; esac; done\n'
                   'if [ -n "$m" ] && [ -n "$f" ]; then echo "Using --boot or --list-boots with --merge is not supported." >&2; exit 1; fi\n'
                   f'exec {shutil.which("journalctl")} "$@"\n')
    old.chmod(0o755)
    src = JournalSource(config.JournalSpec(UNIT, str(jdir)), None, 1 << 20, from_beginning=True, journalctl=str(old))
    got = b""
    try:
        deadline = time.monotonic() + 10
        while got.count(b"\n") < 20 and time.monotonic() < deadline:
            got += src.read()
            time.sleep(0.05)
    finally:
        src.stop()
    assert got.count(b"\n") == 20 and src.merge is False and src.error is None
