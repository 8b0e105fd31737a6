"""logrotate's `olddir`: rotated files go to another directory (`olddir archive`, `olddir /var/log/old`).

The follower finds a file rotated while diag was down by its identity, copytruncate's copy by its
first bytes, and retention keeps a finished file's row while the file is on disk — looking in the
log's directory and in the ones `diag.ingest.rotated_dirs` names: logrotate's olddir for the log,
read from logrotate's configuration (here a temporary one: `[daemon] logrotate_config`), or the
log's `[[log]] rotated_dirs`. The daemon runs in-process; a restart is a new Daemon on the store.

Each request comes with an OOM line: counted by the store's cumulative counters (which retention
never prunes), a line lost or read twice shows as a request or an OOM counted 0 or 2 times.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Callable

import pytest

from conftest import assert_each_once, counted_requests, logrotate_bin, write_requests as _write
from diag.daemon import config
from diag.daemon.service import Daemon
from diag.store.db import Store

DAY = 86400.0
ROTATE_WAIT = 0.1


def _cfg(tmp: Path, how: str, *, extra_logs: tuple[str, ...] = ()) -> config.Config:
    """vllm.log in tmp/logs; its rotated files go to tmp/logs/archive, as `how` tells diag:
    "logrotate" (a stanza with a relative olddir, in a file logrotate.conf includes), "global"
    (an absolute olddir at the top of logrotate.conf), "rotated_dirs" ([[log]] rotated_dirs), "none"."""
    logs = tmp / "logs"
    (logs / "archive").mkdir(parents=True, exist_ok=True)
    (logs / "vllm.log").touch()
    conf, lr_d = tmp / "logrotate.conf", tmp / "logrotate.d"
    lr_d.mkdir(exist_ok=True)
    top = f"olddir {logs}/archive\n" if how == "global" else ""
    conf.write_text(f"weekly\nrotate 4\n{top}include {lr_d}\n")
    stanza = "    olddir archive\n" if how == "logrotate" else ""
    (lr_d / "vllm").write_text(f"{logs}/vllm.log {{\n{stanza}    missingok\n}}\n")
    dirs = ("archive",) if how == "rotated_dirs" else ()
    return config.Config(state_dir=tmp / "state", from_beginning=True, rescan_globs=0.0, rotate_wait=ROTATE_WAIT,
                         use_inotify=False, logrotate_config=[str(conf)] if how in ("logrotate", "global") else [],
                         logs=[config.LogSpec(str(logs / "vllm.log"), rotated_dirs=dirs), *map(config.LogSpec, extra_logs)])


def _turns(d: Daemon, n: int = 3) -> None:
    for _ in range(n):
        d.step()


def _settle(d: Daemon) -> None:
    """Turns until a rotated file has been quiet past rotate_wait, and is finished."""
    _turns(d)
    time.sleep(ROTATE_WAIT * 3)
    _turns(d)


def _run(cfg: config.Config, then=None) -> None:
    """A daemon started on the store: what it reads at start (and after `then(d)`), then stopped."""
    d = Daemon(cfg)
    try:
        d.follower.discover(force=True)
        _turns(d)
        if then is not None:
            then(d)
    finally:
        d.shutdown()


def _counted(cfg: config.Config) -> tuple[dict[str, int], list[int]]:
    return counted_requests(cfg.db_path)


def _assert_once(cfg: config.Config, numbers, pruned: bool = False) -> None:
    assert_each_once(cfg.db_path, numbers, pruned)


@pytest.mark.parametrize("how", ["logrotate", "global", "rotated_dirs"])
def test_a_file_moved_to_olddir_while_down_is_finished_after_a_restart(tmp_path, how):
    """Down-time rotation: the old file is found in archive/ by its inode and read on from where
    the last run stopped; then the new vllm.log from its start."""
    cfg = _cfg(tmp_path, how)
    log = tmp_path / "logs" / "vllm.log"
    _write(log, 0, 1)
    _run(cfg)
    _write(log, 2, 3)  # written before the rotation, after the daemon stopped
    os.rename(log, tmp_path / "logs" / "archive" / "vllm.log.1")
    _write(log, 4, 5)
    _run(cfg)
    _assert_once(cfg, range(6))


def test_without_olddir_known_the_lines_of_a_file_rotated_elsewhere_are_reported_lost_not_read_twice(tmp_path, caplog):
    """With nothing saying where rotated files go (no logrotate configuration names the log, no
    rotated_dirs), the old file is not found: its last lines are reported lost, and nothing is read twice."""
    cfg = _cfg(tmp_path, "none")
    log = tmp_path / "logs" / "vllm.log"
    _write(log, 0)
    _run(cfg)
    read = log.stat().st_size
    _write(log, 1)
    os.rename(log, tmp_path / "logs" / "archive" / "vllm.log.1")
    _write(log, 2)
    _run(cfg)
    assert _counted(cfg) == ({"requests": 2, "ooms": 2}, [0, 2])
    assert f"is gone; bytes after offset {read} are lost (looked in {tmp_path / 'logs'};" in caplog.text


@pytest.mark.parametrize("when", ["live", "down"])
def test_copytruncate_into_olddir_takes_the_last_lines_from_the_copy(tmp_path, when):
    """copytruncate with olddir: lines the daemon had not read when the file was truncated are read
    from the copy in archive/ (found by the first bytes), once."""
    cfg = _cfg(tmp_path, "logrotate")
    log = tmp_path / "logs" / "vllm.log"
    _write(log, 0, 1)

    def rotate(d: Daemon | None) -> None:
        _write(log, 2, 3)  # not read yet
        shutil.copyfile(log, tmp_path / "logs" / "archive" / "vllm.log.1")
        with open(log, "r+") as fh:
            fh.truncate(0)
        _write(log, 4)
        if d is not None:
            _settle(d)

    if when == "live":
        _run(cfg, then=rotate)
    else:
        _run(cfg)
        rotate(None)
        _run(cfg)
    _assert_once(cfg, range(5))


def test_a_file_in_olddir_kept_past_retention_is_not_read_again_after_a_restart(tmp_path):
    """Retention keeps a finished file's row while the file is in archive/ (a daemon that also
    follows archive/vllm.log* must not read it again after a restart, nor raise its OOMs again),
    and forgets it once logrotate deleted it."""
    cfg = _cfg(tmp_path, "logrotate", extra_logs=(f"{tmp_path}/logs/archive/vllm.log*",))
    log = tmp_path / "logs" / "vllm.log"
    rotated = tmp_path / "logs" / "archive" / "vllm.log.1"

    def rotate_and_retain(d: Daemon) -> None:
        _write(log, 0, 1)
        _turns(d)
        os.rename(log, rotated)
        _write(log, 2)
        _settle(d)
        st = rotated.stat()
        d.retain(time.time() + 15 * DAY)
        with closing(Store(cfg.db_path, readonly=True)) as s:
            assert {x.key: x.path for x in s.sources() if x.state == "done"} == {f"{st.st_dev}:{st.st_ino}": str(log)}

    _run(cfg, then=rotate_and_retain)
    _write(log, 3)
    _run(cfg)
    _assert_once(cfg, range(4), pruned=True)

    def deleted(d: Daemon) -> None:
        rotated.unlink()
        d.retain(time.time() + 15 * DAY)
        with closing(Store(cfg.db_path, readonly=True)) as s:
            assert [x for x in s.sources() if x.state == "done"] == []

    _run(cfg, then=deleted)


def test_rotated_dirs_and_logrotate_config_in_diags_config(tmp_path):
    """The two settings, as a user writes them; `--check-config` says where each log's rotated files are looked for."""
    conf = tmp_path / "diag.toml"
    conf.write_text('[daemon]\nlogrotate_config = ["/srv/lr.conf"]\n\n'
                    '[[log]]\npath = "/var/log/vllm/*.log"\nrotated_dirs = ["archive", "/backup/vllm"]\n')
    cfg = config.load(str(conf))
    assert cfg.logrotate_config == ["/srv/lr.conf"]
    assert cfg.logs[0].rotated_dirs == ("archive", "/backup/vllm")
    from diag.ingest.rotated_dirs import RotatedDirs

    dirs = RotatedDirs(cfg.logs, [])
    assert dirs.for_path("/var/log/vllm/a.log") == ("/var/log/vllm/archive", "/backup/vllm")
    assert dirs.for_path("/var/log/other/a.log") == ()
    from diag.ingest.logrotate import DEFAULT_CONFIG

    assert config.load(str(config.example_path())).logrotate_config == list(DEFAULT_CONFIG)  # (the example shows the defaults)
    lr = tmp_path / "lr.conf"
    lr.write_text(f"{tmp_path}/logs/vllm.log {{\n  olddir {tmp_path}/old\n}}\n{tmp_path}/broken.log {{\n")
    conf.write_text(f'[daemon]\nlogrotate_config = ["{lr}"]\n[[log]]\npath = "{tmp_path}/logs/vllm.log"\n'
                    f'rotated_dirs = ["archive"]\n[[log]]\npath = "{tmp_path}/other.log"\n')
    r = subprocess.run([sys.executable, "-m", "diag", "daemon", "--check-config", "--config", str(conf)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == f"{tmp_path}/logs/vllm.log: rotated files also looked for in {tmp_path}/logs/archive, {tmp_path}/old"
    assert r.stderr.count("\n") == 1 and f"{lr}:4: the stanza opened here does not close" in r.stderr
    for bad in ('[[log]]\npath = "/x.log"\nrotated_dirs = "archive"\n', '[[log]]\npath = "/x.log"\nrotated_dirs = [1]\n',
                '[daemon]\nlogrotate_config = "/etc/logrotate.conf"\n', '[daemon]\nlogrotate_config = [1]\n'):
        conf.write_text(bad)
        with pytest.raises(config.ConfigError):
            config.load(str(conf))


# -- the real logrotate --------------------------------------------------------------------------
def _logrotate(tmp: Path, options: str) -> tuple[config.Config, Callable[[], None]]:
    """A logrotate configuration in tmp (logrotate.conf including logrotate.d/vllm with olddir archive
    and `options`), read by the daemon as its logrotate_config; and a function running `logrotate -f`."""
    bin_ = logrotate_bin()
    cfg = _cfg(tmp, "logrotate")
    (tmp / "logrotate.d" / "vllm").write_text(f"{tmp}/logs/vllm.log {{\n    olddir archive\n    rotate 4\n"
                                             + "".join(f"    {o}\n" for o in options.split(",")) + "}\n")

    def rotate() -> None:
        r = subprocess.run([bin_, "-f", "-s", str(tmp / "lr.state"), str(tmp / "logrotate.conf")],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr

    return cfg, rotate


@pytest.mark.parametrize("options", ["create,compress,delaycompress", "copytruncate"])
def test_real_logrotate_with_olddir_across_a_restart_and_while_running(tmp_path, options):
    """logrotate rotates vllm.log into archive/ while the daemon is down (its last lines unread),
    then again while it runs (its last lines unread at that moment too): each line is read once."""
    cfg, rotate = _logrotate(tmp_path, options)
    log = tmp_path / "logs" / "vllm.log"
    _write(log, 0, 1)
    _run(cfg)
    _write(log, 2, 3)
    rotate()
    assert (tmp_path / "logs" / "archive" / "vllm.log.1").exists()
    _write(log, 4, 5)

    def live(d: Daemon) -> None:
        _write(log, 6)
        _turns(d)
        _write(log, 7)
        rotate()
        _write(log, 8)
        _settle(d)

    _run(cfg, then=live)
    _write(log, 9)
    _run(cfg)
    _assert_once(cfg, range(10))


@pytest.mark.parametrize("options", ["create,compress", "create,compress,delaycompress"])
def test_real_logrotate_moving_the_file_to_olddir_while_running_keeps_reading_it(tmp_path, options):
    """A rename into olddir (and, without delaycompress, its compression and deletion at once):
    the daemon still holds the file open and reads what it had not yet, before the new vllm.log."""
    cfg, rotate = _logrotate(tmp_path, options)
    log = tmp_path / "logs" / "vllm.log"

    def live(d: Daemon) -> None:
        _write(log, 0)
        _turns(d)
        _write(log, 1, 2)
        rotate()
        _write(log, 3)
        _settle(d)

    _run(cfg, then=live)
    _run(cfg)
    _assert_once(cfg, range(4))


def test_a_reload_reads_logrotates_config_again(tmp_path):
    """SIGHUP (`Daemon.reload`) reads logrotate's configuration again: an olddir added since counts."""
    lr = tmp_path / "lr.conf"
    log = tmp_path / "logs" / "vllm.log"
    lr.write_text(f"{log} {{\n  rotate 2\n}}\n")
    conf = tmp_path / "diag.toml"
    conf.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\nuse_inotify = false\nlogrotate_config = ["{lr}"]\n'
                    f'[[log]]\npath = "{log}"\n')
    d = Daemon(config.load(str(conf)), str(conf))
    try:
        assert d.follower.rotated_dirs.for_path(str(log)) == ()
        lr.write_text(f"{log} {{\n  rotate 2\n  olddir archive\n}}\n")
        d.reload()
        assert d.follower.rotated_dirs.for_path(str(log)) == (str(tmp_path / "logs" / "archive"),)
    finally:
        d.shutdown()
