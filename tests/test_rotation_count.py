"""The rotation count across kill -9 and downtime, deterministically, with the daemon in-process.

A daemon that is killed is simulated by dropping it without a commit (what SIGKILL leaves behind is
exactly the last committed transaction); a "restart" is a new Daemon over the same store. The
process-level version with real SIGKILLs under a running writer is
test_daemon.py::test_exactly_once_through_rotations_and_two_kill9, where this was timing-dependent.
"""

from __future__ import annotations

import shutil
from contextlib import closing
from pathlib import Path

from diag.daemon import config
from diag.daemon.service import Daemon
from diag.store.views import status_doc
from diag.store.db import Store


def _lines(f: Path, start: int, n: int) -> None:
    with open(f, "a", encoding="utf-8") as out:
        for i in range(start, start + n):
            rid = f"chatcmpl-{i:016x}"
            out.write(f"(APIServer pid=4242) INFO 01-24 10:00:00 [request_logger.py:65] Received request {rid}: params: "
                      f"SamplingParams(n=1, temperature=0.7, max_tokens=16), lora_request: None.\n"
                      f'INFO:     127.0.0.1:{20000 + i} - "POST /v1/chat/completions HTTP/1.1" 200 OK\n')


class Run:
    """One daemon process's life: steps, maybe commits, and then either stops or is 'killed'."""

    def __init__(self, cfg: config.Config):
        self.d = Daemon(cfg)
        self.d.follower.discover(force=True)

    def steps(self, n: int = 4) -> "Run":
        """Whole steps: each reads, feeds the pipeline and commits."""
        for _ in range(n):
            self.d.step()
        return self

    def commit(self) -> "Run":  # what a stop (SIGTERM) commits last
        assert self.d.commit(block=True)
        return self

    def end(self) -> None:  # SIGKILL keeps only what was committed: close without committing
        self.d.follower.close()
        self.d.store.close()


def _committed(cfg: config.Config, log: Path) -> tuple[int, int]:
    """(rotations, traces) as `diag status` reports them from what was committed; lines read must be 2 a request."""
    with closing(Store(cfg.db_path, readonly=True)) as s:
        doc = status_doc(s)
    src = next(x for x in doc["sources"] if x["path"] == str(log))
    assert src["lines_read"] == 2 * doc["traces"]  # exactly once: no line counted twice or skipped
    return src["rotations"], doc["traces"]


def test_rotations_while_down_and_before_a_kill_are_counted_once(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "vllm.log"
    log.write_text("")
    cfg = config.Config(state_dir=tmp_path / "state", from_beginning=True, rotate_wait=0.0, use_inotify=False,
                        logs=[config.LogSpec(str(log))])
    _lines(log, 0, 10)
    r = Run(cfg).steps().commit()
    r.end()
    assert _committed(cfg, log) == (0, 10)

    # rename while the daemon is down, then two starts killed before their first commit: counted once
    log.rename(logs / "vllm.log.1")
    _lines(logs / "vllm.log.1", 10, 5)  # the writer's last lines into the renamed file
    _lines(log, 15, 5)
    for _ in range(2):
        Run(cfg).steps().end()
    Run(cfg).steps().commit().end()
    assert _committed(cfg, log) == (1, 20)

    # copytruncate while down, the same
    _lines(log, 20, 5)
    shutil.copyfile(log, logs / "vllm.log.2")
    log.write_text("")
    _lines(log, 25, 5)
    for _ in range(2):
        Run(cfg).steps().end()
    Run(cfg).steps().commit().end()
    assert _committed(cfg, log) == (2, 30)

    # each kind seen live by a daemon killed before it committed, then found again by the next start
    r = Run(cfg).steps().commit()
    _lines(log, 30, 5)
    log.rename(logs / "vllm.log.3")
    _lines(log, 35, 5)
    r.d.follower.poll()  # the rotation is seen; SIGKILL comes before the step's commit
    assert r.d.follower.rotations[str(log)] == 3  # counted in memory only
    r.end()
    assert _committed(cfg, log) == (2, 30)
    r = Run(cfg).steps().commit()
    assert _committed(cfg, log) == (3, 40)
    _lines(log, 40, 5)
    shutil.copyfile(log, logs / "vllm.log.4")
    log.write_text("")
    _lines(log, 45, 5)
    r.d.follower.poll()
    assert r.d.follower.rotations[str(log)] == 4
    r.end()
    Run(cfg).steps().commit().end()
    assert _committed(cfg, log) == (4, 50)

    # seen live and committed: a restart finds nothing new to count
    r = Run(cfg).steps().commit()
    log.rename(logs / "vllm.log.5")
    _lines(log, 50, 5)
    r.steps().commit().end()
    assert _committed(cfg, log) == (5, 55)
    Run(cfg).steps().commit().end()
    assert _committed(cfg, log) == (5, 55)
