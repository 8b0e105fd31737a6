"""`diag doctor`'s logs check reads the kernel log: OOM-killer and Xid lines about the server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from diag.doctor import SKIP, Context
from diag.doctor.checks import kernel
from diag.doctor.checks.host import check_logs

FIELD = Path(__file__).parent / "data" / "field"


def _lines(rel: str) -> list[str]:
    return (FIELD / rel).read_text(encoding="utf-8").splitlines()


def test_oom_killer_line_about_a_dead_engine_is_reported_by_name():
    # the killed EngineCore is gone, so its pid is not among the server's live ones: its name tells
    log = kernel.KernelLog("journalctl -k", None, [
        "2026-11-28T05:00:00+0000 gpu1 kernel: Out of memory: Killed process 4242 (VLLM::EngineCor) total-vm:26184840kB, "
        "anon-rss:15370088kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:38964kB oom_score_adj:0"])
    got = kernel.findings(log, {100, 101})
    assert [r for r, _ in got] == ["kernel-oom-killer"] and "4242" in got[0][1]


def test_unrelated_processes_are_left_out_when_the_server_is_known():
    log = kernel.KernelLog("/dev/kmsg", None, _lines("oom/kernel-oom-dmesg-iso.log"))  # a perl process was killed
    assert kernel.findings(log, set()) != []  # no server known: everything the kernel killed is news
    assert kernel.findings(log, {100, 101}) == []


def test_xid_naming_a_server_pid_is_reported():
    log = kernel.KernelLog("/dev/kmsg", None, ["NVRM: Xid (PCI:0000:3b:00): 79, pid=777, name=pt_main_thread, GPU has fallen off the bus."])
    assert [r for r, _ in kernel.findings(log, {777})] == ["gpu-xid"]


def test_reading_the_kernel_log_never_raises_here():
    k = kernel.read(60)
    assert (k.source is not None) != (k.skipped is not None)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to an unprivileged user")
def test_an_unprivileged_user_gets_a_clean_skip_or_the_log():
    code = ("from diag.doctor.checks import kernel; k = kernel.read(60); "
            "print('OK' if (k.source is None) == bool(k.skipped) else 'BAD', k.source, k.skipped)")

    def drop():
        os.setgid(65534)
        os.setuid(65534)

    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=drop, timeout=60,
                           env={**os.environ, "HOME": "/tmp"})
    except PermissionError:
        pytest.skip(f"user nobody cannot run {sys.executable} (an interpreter under a private home directory)")
    assert p.returncode == 0 and p.stdout.startswith("OK"), p.stderr[-500:]


def test_logs_check_without_logs_skips_and_says_what_the_kernel_log_gave():
    r = check_logs(Context(logs=[]))
    if r.status == SKIP:
        assert r.details and r.details[0].startswith("kernel log")
    else:  # this machine's kernel really did kill or fault a server process in the last hour
        assert any(d.startswith("kernel: ") for d in r.details)
