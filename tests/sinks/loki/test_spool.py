"""The on-disk spool (sinks/loki/spool.py): adoption of dead processes' files, the cap, disk errors."""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from typing import Any

import pytest

from taskiq_monitor.sinks.loki import Spool
from tests.loki_double import LokiPushDouble
from tests.sinks.loki.helpers import counted, event, wait


def test_spool_cap_drops_and_counts(loki: LokiPushDouble, make_sink: Any) -> None:
    loki.set_mode("503")
    sink, registry = make_sink(loki_spool_max_bytes=2000, loki_batch_max_records=50)
    for i in range(500):
        sink.emit(event(i, kwargs={"pad": f"{i}-" * 40}))
    wait(lambda: counted(registry, "spooled") + counted(registry, "dropped") == 500)
    assert counted(registry, "dropped") > 0
    assert sum(p.stat().st_size for p in sink.spooled_files()) <= 2000


def test_orphaned_spool_is_adopted_by_exactly_one_live_process(tmp_path: Path) -> None:
    from taskiq_monitor.sinks.loki import Batch

    dead = Spool(tmp_path, 10**9)
    dead.open()
    for i in range(20):
        dead.write(Batch((time.time_ns(), i), 1, gzip.compress(b"{}")))
    dead.forget_after_fork()  # the lock is released as when the process dies; its files and lock file remain
    alive = Spool(tmp_path, 10**9)
    alive.open(adopt=False)
    alive.write(Batch((time.time_ns(), 0), 1, gzip.compress(b"{}")))
    b, c = Spool(tmp_path, 10**9), Spool(tmp_path, 10**9)
    b.open(adopt=False)
    c.open(adopt=False)
    taken_b, taken_c = b.adopt_orphans(), c.adopt_orphans()
    assert len(taken_b) + len(taken_c) == 20 and not (set(taken_b) & set(taken_c))
    assert len(alive.files) == 1 and all(p.exists() for _, p, _, _ in alive.files)  # a live owner keeps its files
    assert not (tmp_path / f"{dead.owner}.lock").exists()
    keys = [k for k, *_ in (b.files or c.files)]
    assert keys == sorted(keys)


def test_spool_write_errors_count_the_batch_as_dropped_and_threads_keep_running(
    loki: LokiPushDouble, make_sink: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    loki.set_mode("503")
    sink, registry = make_sink(loki_retries=0)
    real_write = Spool.write

    def disk_full(self: Spool, batch: Any) -> bool:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Spool, "write", disk_full)
    for i in range(10):
        sink.emit(event(i))
    wait(lambda: counted(registry, "dropped") == 10)
    time.sleep(0.3)
    assert all(t.is_alive() for t in sink._live_threads()), "a spool error killed a shipper thread"
    monkeypatch.setattr(Spool, "write", real_write)
    for i in range(10, 30):
        sink.emit(event(i))
    wait(lambda: counted(registry, "spooled") == 20)
    loki.set_mode("ok")
    loki.wait_for(lambda d: len(d.entries) == 20, 10)
    assert counted(registry, "dropped") == 10 and loki.duplicates == 0


def test_spool_dir_removed_while_running_is_recreated(loki: LokiPushDouble, make_sink: Any, tmp_path: Path) -> None:
    import shutil

    loki.set_mode("503")
    sink, registry = make_sink(loki_retries=0)
    sink.emit(event(0))
    wait(lambda: counted(registry, "spooled") == 1)
    shutil.rmtree(tmp_path / "spool")
    for i in range(1, 11):
        sink.emit(event(i))
    wait(lambda: counted(registry, "spooled") == 11)
    assert (tmp_path / "spool" / f"{sink._spool.owner}.lock").exists()  # type: ignore[union-attr]
    loki.set_mode("ok")
    loki.wait_for(lambda d: len(d.entries) == 10, 10)
    wait(lambda: counted(registry, "dropped") == 1)  # the first record went with the removed directory: counted
