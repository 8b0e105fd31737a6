"""diag.ingest.watch: the daemon's inotify wait, on real files in a real directory."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from diag.ingest.watch import DirWatch


def test_wakes_for_followed_files_only_and_says_when_one_appears(tmp_path):
    log = tmp_path / "vllm.log"
    log.write_text("")
    w = DirWatch([str(log), str(tmp_path / "api-*.log")], [str(tmp_path)])
    try:
        assert w.wait(0.05) == (False, False)  # nothing happened
        # the store sharing the directory (its WAL written at every commit) never wakes the daemon
        (tmp_path / "diag.sqlite3-wal").write_bytes(b"x" * 4096)
        assert w.wait(0.2) == (False, False)
        with open(log, "a") as f:
            for _ in range(1000):  # a thousand writes: read at once, one wake
                f.write("line\n")
                f.flush()
        assert w.wait(1.0) == (True, False)
        assert w.wait(0.05) == (False, False)  # all of them were taken by the first wait
        (tmp_path / "api-1.log").write_text("new file\n")  # a glob's new file: expand globs now
        assert w.wait(1.0) == (True, True)
        os.rename(log, tmp_path / "vllm.log.1")  # rotation by rename
        assert w.wait(1.0) == (True, True)
    finally:
        w.close()


def test_poke_from_a_signal_handler_ends_the_wait_at_once(tmp_path):
    w = DirWatch([str(tmp_path / "x.log")], [str(tmp_path)])
    old = signal.signal(signal.SIGUSR1, lambda s, f: w.poke())
    try:
        timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1))
        timer.start()
        t0 = time.monotonic()
        assert w.wait(10.0) == (True, False)
        assert time.monotonic() - t0 < 5.0  # not the 10 s timeout
        timer.join()
    finally:
        signal.signal(signal.SIGUSR1, old)
        w.close()


def test_an_overflowing_event_queue_is_taken_as_look_everywhere(tmp_path):
    """While the daemon catches up it reads no events; if the kernel's queue overflows meanwhile,
    the overflow is a wake with globs expanded again, not an error."""
    limit = int(open("/proc/sys/fs/inotify/max_queued_events").read())
    log = tmp_path / "vllm.log"
    w = DirWatch([str(log)], [str(tmp_path)])
    try:
        for i in range(limit + 10):  # distinct names: the kernel cannot merge them into one event
            (tmp_path / f"other-{i}").touch()
        assert w.wait(1.0) == (True, True)
    finally:
        w.close()


def test_descriptors_past_fd_setsize_still_wake(tmp_path):
    """A daemon following many files holds many descriptors: its inotify descriptor may be past
    select()'s limit of 1024, and waiting must still work (not fail at once and spin)."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        pytest.skip(f"RLIMIT_NOFILE is {soft}: cannot hold 1100 descriptors")
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    log = tmp_path / "vllm.log"
    log.write_text("")
    w = DirWatch([str(log)], [str(tmp_path)])
    try:
        t0 = time.monotonic()
        assert w.wait(0.3) == (False, False)
        assert time.monotonic() - t0 >= 0.25  # it waited
        log.write_text("line\n")
        assert w.wait(1.0) == (True, False)
    finally:
        w.close()
        for fd in held:
            os.close(fd)
