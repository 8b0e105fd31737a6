"""logrotate's `compress` without `delaycompress`: a rotated file's unread lines from its archive.

With the real logrotate (skipped without it), a copytruncate copy that is gzipped at once, and a
file renamed and gzipped while the daemon was down, still give each request exactly once: the
archive whose decompressed first bytes are the file's is read on from where diag stopped
(`diag.ingest.compressed`). The daemon runs in-process; a restart is a new Daemon on the store, a
kill -9 one dropped without its commit. Each request carries an OOM line: the store's counters
show a line read twice, the stored ids one lost.
"""

from __future__ import annotations

import gzip
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest

from conftest import assert_each_once, counted_requests, logrotate_bin, write_requests
from diag.daemon import config
from diag.daemon.service import Daemon
from diag.ingest import compressed

ROTATE_WAIT = 0.1


def _setup(tmp: Path, options: str, olddir: bool = False) -> tuple[config.Config, Path, Callable[[], Path]]:
    """vllm.log in tmp/logs with a logrotate stanza (`options`, comma-separated; `olddir archive` if
    asked) the daemon reads as its logrotate_config; and a function running `logrotate -f` that
    returns the directory the rotated files are in."""
    bin_ = logrotate_bin()
    logs = tmp / "logs"
    old = logs / "archive" if olddir else logs
    old.mkdir(parents=True, exist_ok=True)
    log = logs / "vllm.log"
    log.touch()
    conf = tmp / "logrotate.conf"
    conf.write_text(f"{log} {{\n    rotate 4\n" + ("    olddir archive\n" if olddir else "")
                    + "".join(f"    {o}\n" for o in options.split(",")) + "}\n")
    cfg = config.Config(state_dir=tmp / "state", from_beginning=True, rescan_globs=0.0, rotate_wait=ROTATE_WAIT,
                        use_inotify=False, logrotate_config=[str(conf)], logs=[config.LogSpec(str(log))])

    def rotate() -> Path:
        r = subprocess.run([bin_, "-f", "-s", str(tmp / "lr.state"), str(conf)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert (old / "vllm.log.1.gz").exists() and not (old / "vllm.log.1").exists()  # compressed at once
        return old

    return cfg, log, rotate


def _start(cfg: config.Config) -> Daemon:
    d = Daemon(cfg)
    d.follower.discover(force=True)
    return d


def _settle(d: Daemon) -> None:
    """Turns until a rotated file has been quiet past rotate_wait, and is finished."""
    for _ in range(3):
        d.step()
    time.sleep(ROTATE_WAIT * 3)
    for _ in range(3):
        d.step()


def _run(cfg: config.Config) -> None:
    """A daemon started on the store, reading what there is, then stopped."""
    d = _start(cfg)
    try:
        _settle(d)
    finally:
        d.shutdown()


def _killed(cfg: config.Config) -> None:
    """A daemon that reads what there is and is killed (-9) before its first commit."""
    d = _start(cfg)
    d.follower.poll()
    d.follower.close()
    d.store.close()


@pytest.mark.parametrize("olddir", [False, True])
def test_copytruncate_compress_while_running_takes_the_unread_lines_from_the_gz(tmp_path, olddir, caplog):
    """Lines written just before logrotate copied, truncated and gzipped the file, not read yet by
    the daemon, are read from vllm.log.1.gz when it sees the truncation: once, and without a warning
    that they may be missing."""
    caplog.set_level(logging.INFO, logger="diag")
    cfg, log, rotate = _setup(tmp_path, "copytruncate,compress", olddir)
    d = _start(cfg)
    try:
        write_requests(log, 0, 1)
        d.step()
        write_requests(log, 2, 3)  # not read: no turn before the rotation
        rotate()
        write_requests(log, 4)
        _settle(d)
    finally:
        d.shutdown()
    assert_each_once(cfg.db_path, range(5))
    assert not [r for r in caplog.records if "may be missing" in r.getMessage()]


@pytest.mark.parametrize("options", ["copytruncate,compress", "create,compress"])
@pytest.mark.parametrize("olddir", [False, True])
def test_compressed_while_down_the_rest_of_the_file_is_read_from_its_gz(tmp_path, options, olddir):
    """Copied, truncated and gzipped, or renamed and gzipped (its inode gone with it), while the
    daemon was down: after the restart the file is read on from where the last run stopped, in
    vllm.log.1.gz, then the new vllm.log — through a start killed before it committed what it read
    there, and later ones that must read nothing again."""
    cfg, log, rotate = _setup(tmp_path, options, olddir)
    write_requests(log, 0, 1)
    _run(cfg)
    write_requests(log, 2, 3)
    rotate()
    write_requests(log, 4)
    _killed(cfg)
    _run(cfg)
    write_requests(log, 5)
    _run(cfg)
    assert_each_once(cfg.db_path, range(6))


def test_a_corrupt_gz_is_one_warning_and_nothing_is_read_twice(tmp_path, caplog):
    """A corrupt archive with a rotated name (newest, so tried first) is passed over with one
    warning; an archive that breaks part way is read up to the break, with one warning. The daemon
    keeps reading, and no request is counted twice."""
    cfg, log, rotate = _setup(tmp_path, "create,compress")
    write_requests(log, 0)
    _run(cfg)
    write_requests(log, *range(1, 400))
    old = rotate()
    write_requests(log, 400)
    whole = (old / "vllm.log.1.gz").read_bytes()
    (old / "vllm.log.1.gz").write_bytes(whole[: len(whole) * 3 // 4])  # cut: its last lines are lost
    bad = old / "vllm.log.2.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00 this is not deflate data" * 10)
    os.utime(bad, (time.time() + 60, time.time() + 60))
    with caplog.at_level(logging.INFO, logger="diag"):
        _run(cfg)
        d = _start(cfg)
        try:
            write_requests(log, 401)
            _settle(d)
        finally:
            d.shutdown()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([w for w in warnings if f"{bad}: corrupt or truncated compressed data after byte 0" in w]) == 1
    assert len([w for w in warnings if f"{old / 'vllm.log.1.gz'}: corrupt or truncated compressed data after byte" in w]) == 1
    assert len(warnings) == 2
    totals, ids = counted_requests(cfg.db_path)
    assert totals["requests"] <= len(ids) and totals["ooms"] <= len(ids)  # none twice (the request cut at the break is not whole)
    assert set(range(250)) | {400, 401} <= set(ids) and max(i for i in ids if i < 400) < 399  # read up to the break, and on after it


def test_only_names_of_the_logs_rotations_are_candidates():
    """What is decompressed at all: the log's rotated names with a suffix read here."""
    fits = compressed.fits_rotated_name
    assert fits("/v/vllm.log", "vllm.log.1.gz") and fits("/v/vllm.log", "vllm.log-20260124.gz")
    assert fits("/v/vllm.log", "vllm.1.log.gz") and fits("/v/vllm.log", "vllm.log.3.xz") and fits("/v/vllm.log", "vllm.log.2.bz2")
    assert not fits("/v/vllm.log", "vllm.log.gz") and not fits("/v/vllm.log", "other.log.1.gz")
    assert not fits("/v/vllm.log", "vllm.log.1.zst") and not fits("/v/vllm.log", "vllm.log.1")


def test_an_archive_is_read_as_a_stream_of_its_decompressed_bytes(tmp_path):
    """gzip, bzip2 and xz; a gz of several members (logrotate's `compresscmd` may append) reads whole."""
    import bz2
    import lzma

    data = b"".join(b"line %d\n" % i for i in range(100_000))
    (tmp_path / "a.log.1.gz").write_bytes(gzip.compress(data[:300_000]) + gzip.compress(data[300_000:]))
    (tmp_path / "a.log.2.bz2").write_bytes(bz2.compress(data))
    (tmp_path / "a.log.3.xz").write_bytes(lzma.compress(data))
    for name in ("a.log.1.gz", "a.log.2.bz2", "a.log.3.xz"):
        with compressed.Archive.open(str(tmp_path / name)) as a:
            got = a.read_exactly(len(data) + 1)
        assert got == data and not a.broken


def test_the_archive_found_is_the_file_with_its_first_bytes_and_at_least_its_offset(tmp_path):
    """By first bytes (decompressed) and length; read to less than the bytes fingerprinted (a last
    line without its end) the archive is positioned there all the same."""
    from diag.ingest.filereader import FP_BYTES, fingerprint_of
    from diag.ingest.rotated_dirs import RotatedDirs

    data = b"".join(b"2026-01-24 line %d\n" % i for i in range(1000))
    (tmp_path / "a.log.1.gz").write_bytes(gzip.compress(data))
    (tmp_path / "a.log.2.gz").write_bytes(gzip.compress(b"other " + data))
    fp = fingerprint_of(data[:FP_BYTES])
    dirs = RotatedDirs([], [])
    for offset in (0, 10, FP_BYTES, 5000, len(data)):
        with compressed.find_archive(dirs, str(tmp_path / "a.log"), fp, FP_BYTES, offset) as a:
            assert a.path == str(tmp_path / "a.log.1.gz") and a.read_exactly(len(data)) == data[offset:]
    assert compressed.find_archive(dirs, str(tmp_path / "a.log"), fp, FP_BYTES, len(data) + 1) is None  # too short
    assert compressed.find_archive(dirs, str(tmp_path / "a.log"), fingerprint_of(b"x" * FP_BYTES), FP_BYTES, 0) is None


def test_a_globs_sibling_logs_archives_do_not_crowd_out_its_own(tmp_path):
    """`worker10.log.1.gz` ... fit `worker1.log`'s rotated names too; ten of them rotated (so
    modified) after worker1's own archive must not push it past the candidates tried."""
    from diag.ingest.filereader import FP_BYTES, fingerprint_of
    from diag.ingest.rotated_dirs import RotatedDirs

    own = b"".join(b"2026-01-24 worker1 line %d\n" % i for i in range(100))
    (tmp_path / "worker1.log.1.gz").write_bytes(gzip.compress(own))
    os.utime(tmp_path / "worker1.log.1.gz", (time.time() - 10, time.time() - 10))
    for i in range(10, 10 + compressed.MAX_CANDIDATES + 2):
        (tmp_path / f"worker{i}.log.1.gz").write_bytes(gzip.compress(b"2026-01-24 worker%d other\n" % i * 50))
    with compressed.find_archive(RotatedDirs([], []), str(tmp_path / "worker1.log"), fingerprint_of(own[:FP_BYTES]), FP_BYTES, 500) as a:
        assert a.path == str(tmp_path / "worker1.log.1.gz") and a.read_exactly(len(own)) == own[500:]
