"""While the daemon reads a backlog, the store checkpoints its WAL less often (`Store.catching_up`).

Each transaction's pages go to the WAL and are copied into the database file at the next checkpoint,
once each however many transactions rewrote them: a catch-up with request ids in no order rewrites
the same leaves of the id index commit after commit (tests/bench/bench_daemon.py --only catchup-random).
What a checkpoint has copied is in the database file itself, whose size tells it without running one.
"""

from __future__ import annotations

from pathlib import Path

from diag.analysis.trace import Trace
from diag.store.db import CATCHUP_CHECKPOINT_PAGES, CHECKPOINT_PAGES, WAL_KEPT_BYTES, Store


def _batch(first: int, n: int) -> list[Trace]:
    return [Trace(f"chatcmpl-{(i * 0x9E3779B97F4A7C15) & 0xFFFF_FFFF_FFFF_FFFF:016x}", "vllm", "/logs/vllm.log", status="ok",
                  http_status=200, received_at=1_700_000_000.0 + i, first_line=3 * i + 1, client=f"10.0.0.7:{i % 60000}",
                  endpoint="chat", max_tokens=64) for i in range(first, first + n)]


def _sizes(path: Path) -> tuple[int, int]:
    return path.stat().st_size, Path(f"{path}-wal").stat().st_size


def test_catching_up_leaves_commits_in_the_wal_and_the_next_commit_following_again_checkpoints_them(tmp_path):
    path = tmp_path / "d.sqlite3"
    s = Store(path)
    n = 12_000  # a commit of more than CHECKPOINT_PAGES pages
    s.commit(_batch(0, n), [], [])
    db_size, wal_size = _sizes(path)
    assert wal_size > CHECKPOINT_PAGES * 4096  # the premise: one commit fills more than a checkpoint's worth
    assert db_size > wal_size // 2  # following: checkpointed at that commit, its pages copied into the file

    s.catching_up(True)
    for k in range(1, 4):
        s.commit(_batch(k * n, n), [], [])
    grown_db, grown_wal = _sizes(path)
    assert grown_db == db_size  # three commits, none checkpointed
    assert grown_wal > 2.5 * wal_size  # all three in the WAL, under CATCHUP_CHECKPOINT_PAGES
    assert grown_wal < CATCHUP_CHECKPOINT_PAGES * 4136
    reader = Store(path, readonly=True)  # what is only in the WAL is committed all the same
    assert reader.counts()["traces"] == 4 * n
    assert reader.trace(_batch(4 * n - 1, 1)[0].id)["status"] == "ok"
    reader.close()

    s.catching_up(True)  # said again at every turn of the loop: no change
    s.catching_up(False)
    s.commit(_batch(4 * n, 10), [], [])
    assert _sizes(path)[0] > db_size + (grown_wal - wal_size) // 2  # the next commit checkpointed the backlog's pages
    assert s.counts()["traces"] == 4 * n + 10
    assert _sizes(path)[1] > WAL_KEPT_BYTES  # the WAL is still the catch-up's size ...
    s.commit(_batch(4 * n + 10, 10), [], [])
    assert _sizes(path)[1] <= WAL_KEPT_BYTES  # ... until it is reused from its start: cut back, not kept at 40 MB
    s.close()
