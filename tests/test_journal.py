"""The daemon following a systemd unit's journal (`diag.ingest.journal`): real journal files written
by systemd-journal-remote, read by the real journalctl, a real daemon process and the real store,
and `diag scan` of `journalctl -o short-iso-precise --all` of the same journal as the reference.

The entries are what journald stores for a service's stdout (MESSAGE, _SYSTEMD_UNIT, _PID,
SYSLOG_IDENTIFIER, _HOSTNAME, the times), one per line of real vLLM 0.32 logs
(tests/data/corpus/vllm/real-0.32.0-cpu), written in journald's export format and appended to the
journal file by `systemd-journal-remote --output=DIR/remote.journal -` while the daemon follows it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import CORPUS, wait_for
from test_daemon_containerlog import assert_as_scanned, no_tracebacks, scan, status, stop

from diag.daemon import config
from diag.ingest.journal import OUTPUT_FIELDS
from diag.ingest.journalline import ShortLines, message_bytes

REAL = CORPUS / "vllm" / "real-0.32.0-cpu"
REMOTE = next((p for p in ("/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote") if os.access(p, os.X_OK)), None)
pytestmark = pytest.mark.skipif(REMOTE is None or shutil.which("journalctl") is None,
                                reason="needs journalctl and systemd-journal-remote (apt install systemd-journal-remote) "
                                       "to write and read real journal files")
T0 = 1763832420_000000  # µs: the first entry's time (2025-11-22 17:27 UTC)
UNIT = "vllm.service"


def corpus_lines(*names: str) -> list[bytes]:
    return [ln for n in names for ln in (REAL / n).read_bytes().split(b"\n")[:-1]]


def entry(msg: bytes | None, i: int, **fields: str) -> bytes:
    """One entry in journald's export format, as journald stores a service's stdout line."""
    f = {"__REALTIME_TIMESTAMP": str(T0 + i * 1000), "__MONOTONIC_TIMESTAMP": str(1_000_000 + i), "_BOOT_ID": "0123456789abcdef" * 2,
         "_SYSTEMD_UNIT": UNIT, "_PID": "4242", "SYSLOG_IDENTIFIER": "vllm", "_HOSTNAME": "gpu1", "_TRANSPORT": "stdout"}
    f.update(fields)
    out = b"".join(f"{k}={v}\n".encode() for k, v in f.items() if v is not None)
    if msg is not None:
        out += b"MESSAGE\n" + struct.pack("<Q", len(msg)) + msg + b"\n"  # (binary-safe: any bytes, newlines too)
    return out + b"\n"


def append(jdir: Path, entries: list[bytes]) -> None:
    """Append to the journal file, as systemd-journal-remote writes one."""
    r = subprocess.run([REMOTE, f"--output={jdir / 'remote.journal'}", "-"], input=b"".join(entries), capture_output=True)
    assert r.returncode == 0, r.stderr


def entries_of(lines: list[bytes], start: int) -> list[bytes]:
    return [entry(ln, i) for i, ln in enumerate(lines, start)]


def exported(jdir: Path, out: Path) -> Path:
    """The journal as a user exports it for `diag scan`."""
    with open(out, "wb") as f:
        subprocess.run(["journalctl", f"--directory={jdir}", "-u", UNIT, "-o", "short-iso-precise", "--all", "--no-pager"], stdout=f,
                       check=True)
    return out


def start(state: Path, jdir: Path | None, *extra: str, env: dict | None = None, quiet: float = 0.25,
          from_beginning: bool = True) -> tuple[subprocess.Popen, Path]:
    """The daemon; `quiet`: its record_quiet (how long a record that may go on is held)."""
    err = state.parent / f"daemon-{time.time_ns()}.err"
    cfg = state.parent / "diag.toml"
    # (the entries are days old: nothing is stuck, as scan knows no such finding)
    text = f"[daemon]\nstuck_after = 100000000\nrecord_quiet = {quiet}\n"
    if jdir is not None:
        text += f'[[journal]]\nunit = "{UNIT}"\ndirectory = "{jdir}"\n'
    cfg.write_text(text)
    p = subprocess.Popen([sys.executable, "-m", "diag", "daemon", "--config", str(cfg), "--state-dir", str(state), "--no-web",
                          *(["--from-beginning"] if from_beginning else []), *extra], stderr=open(err, "w"), stdout=subprocess.DEVNULL, env=env)
    return p, err


def children(p: subprocess.Popen) -> list[int]:
    """The daemon's child processes (its journalctl)."""
    try:
        return [int(x) for x in Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()]
    except OSError:
        return []


def kill9(p: subprocess.Popen) -> None:
    """kill -9 the daemon, and then the journalctl it leaves (it would end at its next write)."""
    kids = children(p)
    stop(p, signal.SIGKILL)
    for pid in kids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def lines_in(jdir: Path, tmp: Path) -> int:
    """How many lines the exported journal has (an empty MESSAGE is no field, and prints no line)."""
    return exported(jdir, tmp / "now.log").read_bytes().count(b"\n")  # (not splitlines: vLLM ends a record's lines in \r)


@pytest.fixture
def daemons():
    """The daemons a test starts: stopped (with their journalctl) however the test ends."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            kill9(p)


def journal_status(state: Path) -> dict:
    return next((s for s in status(state)["sources"] if s["path"] == f"journal:{UNIT}"), {})


def caught_up(state: Path, lines: int) -> bool:
    return journal_status(state).get("lines_read") == lines


def test_lines_are_the_ones_journalctl_prints(tmp_path, monkeypatch):
    """Each entry rebuilt from `journalctl -o json` is byte for byte the line `-o short-iso-precise
    --all` prints for it, in a zone that is not UTC: real lines, a multi-line message, bytes that are
    not UTF-8, control characters, no host, `_COMM` for the identifier, `SYSLOG_PID` for the pid, a
    message ending in a newline, and an entry without MESSAGE (no line)."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    jdir = tmp_path / "j"
    jdir.mkdir()
    odd = [entry(b"multi\nline two\n  three", 1), entry(b"bin \xff\xfe x \x1b[31mred\x1b[0m\ttab", 2), entry(b"no host", 3, _HOSTNAME=None),
           entry(b"comm", 4, SYSLOG_IDENTIFIER=None, _COMM="python3"), entry(b"syslog pid", 5, _PID=None, SYSLOG_PID="77"),
           entry(b"trailing newline\n", 6), entry(None, 7), entry("ünïcödé ✓".encode(), 8)]
    append(jdir, entries_of(corpus_lines("text.log")[:40], 10) + odd)
    try:
        js = subprocess.run(["journalctl", f"--directory={jdir}", "-u", UNIT, "-o", "json", "--all", "--no-pager",
                             f"--output-fields={OUTPUT_FIELDS}"], capture_output=True, check=True).stdout
        want = exported(jdir, tmp_path / "want.log").read_bytes()
        build = ShortLines()
        got = b""
        for raw in js.splitlines():
            e = json.loads(raw)
            msg = message_bytes(e.get("MESSAGE"))
            if msg is not None:
                got += build.build(int(e["__REALTIME_TIMESTAMP"]), e, msg)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert b"+0530 gpu1 vllm[4242]: multi\n" in want and b"\xff\xfe" in want  # (what is compared is there)
    assert got == want


def test_a_journal_appended_to_through_sigterm_and_kill9_is_stored_as_scan_reads_it(tmp_path, daemons):
    """Appended in batches while the daemon follows it, killed (kill -9) once it committed the lines
    before an ERROR line the parser still holds (its entry must be read again), stopped (SIGTERM)
    mid-stream: every entry is stored once, as `diag scan` of the exported journal finds it (traces,
    times, line numbers, findings, counters). Among the entries: bytes that are not UTF-8, one
    without MESSAGE, and one over the 1 MiB line cap."""
    state, jdir = tmp_path / "state", tmp_path / "j"
    state.mkdir()
    jdir.mkdir()
    lines = corpus_lines("text.log", "oom-kv-no-blocks.log", "vl.log")
    odd = [entry(b"garbage \xff\xfe not UTF-8", 100), entry(None, 101),
           entry(b"(APIServer pid=1) INFO 11-22 18:27:00 [x.py:1] " + b"y" * (1100 * 1024), 102)]
    held = next(i for i, ln in enumerate(lines) if b" ERROR " in ln)  # a traceback may follow: held until the next line
    batches = [entries_of(lines[:100], 0) + odd, entries_of(lines[100:held + 1], 103), entries_of(lines[held + 1:400], held + 4),
               entries_of(lines[400:], 403)]
    d, err = start(state, jdir, quiet=1.5)
    daemons.append(d)
    errs, n = [err], 0
    for k, batch in enumerate(batches):
        append(jdir, batch)
        n = lines_in(jdir, tmp_path)
        if k == 1:  # the last entry is an ERROR line, held by the parser: committed are the lines before it
            wait_for(lambda: journal_status(state).get("lines_read", 0) == n - 1, 20, "the batch before the kill -9")
            kill9(d)
            d, err = start(state, jdir, quiet=1.5)
            daemons.append(d)
            errs.append(err)
        elif k == 2:  # stopped while it reads (or just after): what it read is flushed and committed
            time.sleep(0.1)
            stop(d, signal.SIGTERM)
            d, err = start(state, jdir, quiet=1.5)
            daemons.append(d)
            errs.append(err)
        else:
            time.sleep(0.2)
    wait_for(lambda: caught_up(state, n), 30, "the daemon to read the whole journal")
    stop(d)
    no_tracebacks(*errs)
    assert_as_scanned(state, scan(exported(jdir, tmp_path / "journal.log")))
    assert "journalctl ended" not in "".join(e.read_text() for e in errs)  # (a SIGTERM's end of the child is no news)


def test_journalctl_killed_under_the_daemon_is_started_again_from_the_last_entry(tmp_path, daemons):
    state, jdir = tmp_path / "state", tmp_path / "j"
    state.mkdir()
    jdir.mkdir()
    lines = corpus_lines("text.log", "oom-kv-no-blocks.log", "vl.log")
    append(jdir, entries_of(lines[:120], 0))
    d, err = start(state, jdir)
    daemons.append(d)
    n = lines_in(jdir, tmp_path)
    wait_for(lambda: caught_up(state, n), 20, "the first entries")
    (child,) = children(d)
    os.kill(child, signal.SIGKILL)
    append(jdir, entries_of(lines[120:], 120))  # written while no journalctl reads
    n = lines_in(jdir, tmp_path)
    wait_for(lambda: caught_up(state, n), 20, "the entries written after journalctl was killed")
    assert children(d) and children(d) != [child]  # a new child follows the journal
    stop(d)
    text = err.read_text()
    assert text.count("journalctl ended (killed by signal 9)") == 1, text
    no_tracebacks(err)
    assert_as_scanned(state, scan(exported(jdir, tmp_path / "journal.log")))


def test_a_unit_seen_for_the_first_time_is_read_from_now_on_also_through_a_kill9_before_its_first_entry(tmp_path, daemons):
    """Without --from-beginning the unit's entries so far are not read: its newest entry's cursor is
    committed at once (as a new file's size is), so entries written while the daemon is killed
    before any new one came are still read, once. What is stored is what scan finds in the export
    of the new entries alone, with the same line numbers."""
    state, jdir = tmp_path / "state", tmp_path / "j"
    state.mkdir()
    jdir.mkdir()
    old, new = corpus_lines("oom-kv-no-blocks.log"), corpus_lines("text.log", "vl.log")
    append(jdir, entries_of(old, 0))
    d, err = start(state, jdir, from_beginning=False)
    daemons.append(d)
    wait_for(lambda: journal_status(state), 20, "the unit's place to be committed")
    kill9(d)
    append(jdir, entries_of(new[:100], 10_000))
    d, err2 = start(state, jdir, from_beginning=False)
    daemons.append(d)
    append(jdir, entries_of(new[100:], 10_100))
    since = str((T0 + 10_000 * 1000) // 1_000_000)
    want = tmp_path / "new.log"
    with open(want, "wb") as f:
        subprocess.run(["journalctl", f"--directory={jdir}", "-u", UNIT, "-o", "short-iso-precise", "--all", "--no-pager",
                        f"--since=@{since}"], stdout=f, check=True)
    n = want.read_bytes().count(b"\n")
    wait_for(lambda: caught_up(state, n), 20, "the new entries")
    stop(d)
    no_tracebacks(err, err2)
    assert_as_scanned(state, scan(want))


def test_a_unit_without_entries_yet_is_read_from_its_first_entry_after_a_restart(tmp_path, daemons):
    """A unit with no entries when the daemon first sees it (diag installed before the server ever
    ran): the daemon is stopped before any entry comes, the server then logs while it is down. The
    unit was seen, so the next start reads those entries, as a file seen empty is read from its
    start, instead of skipping everything up to the unit's newest entry."""
    state, jdir = tmp_path / "state", tmp_path / "j"
    state.mkdir()
    jdir.mkdir()
    append(jdir, [entry(b"another unit's line", 0, _SYSTEMD_UNIT="other.service")])  # (a journal file, nothing of the unit)
    d, err = start(state, jdir, from_beginning=False)
    daemons.append(d)
    wait_for(lambda: journal_status(state), 20, "the unit's place to be committed")
    time.sleep(0.5)
    stop(d)
    append(jdir, entries_of(corpus_lines("text.log", "vl.log"), 100))  # written while the daemon is stopped
    d, err2 = start(state, jdir, from_beginning=False)
    daemons.append(d)
    n = lines_in(jdir, tmp_path)
    wait_for(lambda: caught_up(state, n), 20, "the entries written while the daemon was stopped")
    stop(d)
    no_tracebacks(err, err2)
    assert_as_scanned(state, scan(exported(jdir, tmp_path / "journal.log")))


def test_a_journal_whose_last_entry_read_is_gone_says_so_and_reads_what_is_there(tmp_path, daemons):
    """The journal files were replaced while the daemon was stopped (vacuumed, another machine's): the
    committed cursor names no entry any more. The daemon says lines may be missing, reads the new
    entries, and goes on."""
    state, jdir = tmp_path / "state", tmp_path / "j"
    state.mkdir()
    jdir.mkdir()
    lines = corpus_lines("text.log", "vl.log")
    append(jdir, entries_of(lines[:50], 0))
    d, err = start(state, jdir)
    daemons.append(d)
    n = lines_in(jdir, tmp_path)
    wait_for(lambda: caught_up(state, n), 20, "the first entries")
    stop(d)
    (jdir / "remote.journal").unlink()
    append(jdir, entries_of(lines[50:], 50))  # a new file (another sequence number id)
    d, err2 = start(state, jdir)
    daemons.append(d)
    n += lines_in(jdir, tmp_path)
    wait_for(lambda: caught_up(state, n), 20, "the new file's entries")
    stop(d)
    text = err2.read_text()
    assert text.count("no longer has the last entry read") == 1, text
    no_tracebacks(err, err2)


def test_a_reload_starts_and_stops_following_a_unit(tmp_path, daemons):
    """SIGHUP with a [[journal]] added starts its journalctl (its entries are read); with it removed
    again, the child is stopped."""
    state, jdir, logs = tmp_path / "state", tmp_path / "j", tmp_path / "logs"
    for p in (state, jdir, logs):
        p.mkdir()
    log = logs / "vllm.log"
    log.write_bytes(b"")
    d, err = start(state, None, "--log", str(log))
    daemons.append(d)
    wait_for(lambda: status(state)["sources"], 20, "the daemon's first commit")
    assert children(d) == []
    cfg = tmp_path / "diag.toml"
    cfg.write_text(cfg.read_text() + f'[[journal]]\nunit = "{UNIT}"\ndirectory = "{jdir}"\n')
    append(jdir, entries_of(corpus_lines("text.log"), 0))
    d.send_signal(signal.SIGHUP)
    n = lines_in(jdir, tmp_path)
    wait_for(lambda: caught_up(state, n), 20, "the unit's entries after the reload")
    assert len(children(d)) == 1
    cfg.write_text(cfg.read_text().split("[[journal]]")[0])
    d.send_signal(signal.SIGHUP)
    wait_for(lambda: children(d) == [], 10, "journalctl to be stopped")
    stop(d)
    no_tracebacks(err)
    assert status(state)["traces"] == 12


def test_without_journalctl_the_daemon_says_so_once_and_follows_its_files(tmp_path, daemons):
    state, logs = tmp_path / "state", tmp_path / "logs"
    state.mkdir()
    logs.mkdir()
    log = logs / "vllm.log"
    log.write_bytes(b"\n".join(corpus_lines("text.log")) + b"\n")
    bare = tmp_path / "bin"  # a PATH without journalctl
    bare.mkdir()
    d, err = start(state, None, "--journal", UNIT, "--log", str(log), env={**os.environ, "PATH": str(bare)})
    daemons.append(d)
    wait_for(lambda: status(state).get("traces", 0) >= 12, 20, "the file's traces")
    time.sleep(1.5)  # (a retry after the first backoff has come and gone)
    assert d.poll() is None
    j = journal_status(state)
    assert "journalctl" in (j.get("last_error") or ""), status(state)
    stop(d)
    text = err.read_text()
    assert sum("journal:vllm.service" in ln and "journalctl" in ln for ln in text.splitlines()) == 1, text
    no_tracebacks(err)


@pytest.mark.parametrize("doc, error", [
    ({"journal": [{"unit": "vllm.service", "directory": "/var/log/journal/remote", "format": "vllm"}]}, None),
    ({"journal": [{"path": "x"}]}, "needs a `unit` string"),
    ({"journal": [{"unit": "a.service", "dir": "/x"}]}, "unknown setting"),
    ({"journal": [{"unit": "a.service", "format": "nope"}]}, "unknown format"),
    ({"journal": [{"unit": "a.service"}, {"unit": "a.service"}]}, "names a unit twice"),
    ({"journal": {"unit": "a.service"}}, "[[journal]] tables"),
])
def test_journal_config(doc, error):
    cfg = config.Config()
    if error is None:
        config.apply(cfg, doc)
        assert cfg.journals == [config.JournalSpec("vllm.service", "/var/log/journal/remote", "vllm")]
        assert cfg.journals[0].name == "journal:vllm.service"
    else:
        with pytest.raises(config.ConfigError, match=error.replace("[", r"\[").replace("]", r"\]")):
            config.apply(cfg, doc)


def test_journal_argument():
    assert config.JournalSpec.parse("vllm.service") == config.JournalSpec("vllm.service")
    assert config.JournalSpec.parse("vllm.service:vllm") == config.JournalSpec("vllm.service", None, "vllm")
    assert config.JournalSpec.parse("a:b.service") == config.JournalSpec("a:b.service")
