"""Private directories and files (issue 14 #4): directories we create are 0700, files we write 0600, and a
directory another user owns or can write to is refused — for the metrics directory (see test_metricsdir.py) and
the Loki spool (below)."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from taskiq_monitor.errors import ConfigError
from taskiq_monitor.events import TaskEvent
from taskiq_monitor.securedir import ensure_private_dir, private_opener
from taskiq_monitor.settings import Settings
from taskiq_monitor.sinks.loki import Batch, LokiSink, Spool, encode_push, gzip_body
from tests.loki_double import LokiPushDouble
from tests.other_user import other_uid


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """The most permissive umask: what we create must be private by its own mode, not thanks to the umask."""
    old = os.umask(0)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_new_directory_and_its_missing_parents_are_created_private(tmp_path: Path, umask_zero: None) -> None:
    target = tmp_path / "a" / "b"
    assert ensure_private_dir(target) == target
    assert mode(target) == 0o700


def test_an_existing_private_directory_is_accepted_unchanged(tmp_path: Path) -> None:
    target = tmp_path / "mine"
    target.mkdir(mode=0o750)
    target.chmod(0o750)  # group may read, nobody else may write: fine
    (target / "data").write_text("kept")
    ensure_private_dir(target)
    assert mode(target) == 0o750 and (target / "data").read_text() == "kept"


def test_a_directory_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    uid = other_uid()
    target = tmp_path / "planted"
    target.mkdir(mode=0o700)
    os.chown(target, uid, -1)
    with pytest.raises(ConfigError) as raised:
        ensure_private_dir(target, what="Loki spool directory")
    message = str(raised.value)
    assert message.startswith(f"Loki spool directory {target} is owned by uid {uid}, not by this user")
    assert "use a directory of your own" in message and "\n" not in message


@pytest.mark.parametrize("bits", [0o777, 0o775, 0o757, 0o1777])
def test_a_directory_others_can_write_is_refused(tmp_path: Path, bits: int) -> None:
    target = tmp_path / "shared"
    target.mkdir()
    target.chmod(bits)
    with pytest.raises(ConfigError, match=rf"is writable by other users \(mode {bits:04o}\); run `chmod go-w"):
        ensure_private_dir(target)


def test_a_symlink_planted_by_another_user_is_refused_even_when_it_points_to_our_directory(tmp_path: Path) -> None:
    uid = other_uid()
    ours = tmp_path / "ours"
    ours.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(ours)
    os.lchown(link, uid, -1)
    with pytest.raises(ConfigError, match=rf"{link} is a symbolic link owned by uid {uid}"):
        ensure_private_dir(link)


def test_a_file_is_not_a_directory(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ConfigError, match="is not a directory"):
        ensure_private_dir(target)


def test_private_opener_creates_files_0600(tmp_path: Path, umask_zero: None) -> None:
    with open(tmp_path / "f", "wb", opener=private_opener) as out:
        out.write(b"x")
    assert mode(tmp_path / "f") == 0o600


# -- the Loki spool ---------------------------------------------------------------------------------------------------
def planted_batch(directory: Path, line: str) -> Path:
    """A valid spool file of a process that looks dead (no lock file): it would be adopted and shipped."""
    entry = ((("service_name", "taskiq"),), str(time.time_ns()), line, {})
    path = directory / f"{time.time_ns():020d}-{0:08d}-1.deadbeef1x00000000.gz"
    path.write_bytes(gzip_body(encode_push([entry])))
    return path


def test_spool_directory_is_created_private_and_spool_files_are_0600(tmp_path: Path, umask_zero: None) -> None:
    spool = Spool(tmp_path / "spool", 10**9)
    spool.open()
    try:
        assert mode(spool.directory) == 0o700
        assert spool.write(Batch((time.time_ns(), 1), 1, gzip_body(b'{"streams":[]}')))
        files = [p for p in spool.directory.iterdir() if p.suffix == ".gz"]
        assert len(files) == 1 and mode(files[0]) == 0o600
        assert all(mode(p) == 0o600 for p in spool.directory.iterdir())  # the lock file too
    finally:
        spool.close()


def test_spool_refuses_a_directory_of_another_user_and_adopts_nothing(tmp_path: Path) -> None:
    uid = other_uid()
    directory = tmp_path / "spool"
    directory.mkdir(mode=0o700)
    planted = planted_batch(directory, json.dumps({"task_id": "planted"}))
    os.chown(directory, uid, -1)
    spool = Spool(directory, 10**9)
    with pytest.raises(ConfigError, match=rf"Loki spool directory {directory} is owned by uid {uid}"):
        spool.open()
    assert planted.exists() and len(spool) == 0


def test_sink_never_ships_a_batch_planted_in_a_world_writable_spool(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    directory.mkdir()
    directory.chmod(0o777)  # what a default /tmp path looks like when another user created it first
    planted_batch(directory, json.dumps({"task_id": "planted", "status": "success"}))
    with LokiPushDouble() as loki:
        registry = CollectorRegistry()
        settings = Settings(loki_url=loki.url, loki_spool_dir=directory, loki_batch_wait_seconds=0.05)
        sink = LokiSink(settings, registry=registry)
        try:
            sink.emit(TaskEvent(status="success", task_id="ours", task_name="t", timestamp=time.time()))
            loki.wait_for(lambda d: any(e.record.get("task_id") == "ours" for e in d.entries), timeout=30)
            # The sender adopts orphaned batches right after set-up, before it sends ours: had it used the
            # directory, the planted record would have arrived first.
            assert [e.record.get("task_id") for e in loki.entries] == ["ours"]
        finally:
            sink.flush_sync(timeout=2)
